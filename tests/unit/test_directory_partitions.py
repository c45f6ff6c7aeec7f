"""The users adapter spreads a connection's users over partitions; the directory writes them a partition at a time."""

from __future__ import annotations

import re

import pytest

from shared.adapters.users import (
    LAYOUT,
    MAX_PARTITIONS,
    PARTITION_ROWS,
    PARTITIONS,
    RANGE_PAGE,
    TABLES,
    TableUsers,
    partitions_for,
)
from shared.domain.directory import UserRow
from shared.errors import Stop
from shared.services.directory import Directory
from shared.services.ports import TRANSACTION_ROWS, Entity
from shared.topology import USERS_TABLES, Table
from tests.fakes import FakeEntityStore


def _row(n: int) -> UserRow:
    return UserRow(id=f"{n:08x}-0000-0000-0000-000000000000", upn=f"user{n}@contoso.example")


def test_a_user_always_lands_in_the_same_partition_of_its_connection_only() -> None:
    users = TableUsers(FakeEntityStore())
    ids = [_row(n).id for n in range(5000)]
    partitions = {users.partition_of("demo", i) for i in ids}
    assert len(partitions) == PARTITIONS
    assert all(p.startswith("demo.") for p in partitions)
    assert users.partition_of("demo", ids[0]) == users.partition_of("demo", ids[0])
    assert not partitions & {users.partition_of("demo2", i) for i in ids}


def test_the_partition_count_is_the_adapters_to_choose() -> None:
    users = TableUsers(FakeEntityStore(), partitions=16)
    assert len({users.partition_of("demo", _row(n).id) for n in range(2000)}) == 16


def test_batches_hold_rows_of_one_partition_and_at_most_a_transaction_each() -> None:
    users = TableUsers(FakeEntityStore())
    rows = [_row(n) for n in range(3000)]
    batches = Directory(users).batches("demo", rows)
    assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in rows)
    for batch in batches:
        assert 0 < len(batch) <= TRANSACTION_ROWS
        assert len({users.partition_of("demo", r.id) for r in batch}) == 1


async def test_a_connection_bigger_than_a_page_is_read_partition_by_partition_once_each() -> None:
    store = FakeEntityStore()
    directory = Directory(TableUsers(store))
    current = [_row(n) for n in range(RANGE_PAGE + 200)]
    for batch in directory.batches("demo", current):
        await directory.put_many("demo", batch)
    await directory.put("other", _row(7000))
    found = [r async for r in directory.all("demo")]
    assert len(found) == len({r.id for r in found}) == len(current)
    assert await directory.count("demo") == len(current)
    assert not await directory.is_empty("demo")
    assert await directory.is_empty("nobody")


async def test_a_malformed_row_is_skipped() -> None:
    store = FakeEntityStore()
    users = TableUsers(store)
    await users.put("demo", _row(1))
    await store.upsert(users.table_of("demo", "bad"),
                       Entity(users.partition_of("demo", "bad"), "bad", {"upn": 7, "state": "???"}))
    assert [r.id async for r in users.scan("demo")] == [_row(1).id]


def test_the_tables_have_valid_names_and_each_partition_lives_in_one_of_them() -> None:
    # Alphanumeric, 3-63 characters, starting with a letter
    # (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#table-names).
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", t.value) for t in USERS_TABLES)
    users = TableUsers(FakeEntityStore())
    assert len(users.tables) == TABLES == 16
    tables: dict[str, set[Table]] = {}
    for n in range(5000):
        for connection in ("demo", "other"):
            user_id = _row(n).id
            tables.setdefault(users.partition_of(connection, user_id), set()).add(users.table_of(connection, user_id))
    assert all(len(found) == 1 for found in tables.values())
    assert {t for found in tables.values() for t in found} == set(USERS_TABLES)


def test_the_table_count_is_a_constructor_parameter_beside_the_partitions() -> None:
    assert TableUsers(FakeEntityStore(), partitions=8, tables=4).tables == USERS_TABLES[:4]
    assert TableUsers(FakeEntityStore(), partitions=2, tables=16).tables == USERS_TABLES[:2]
    with pytest.raises(ValueError, match="tables"):
        TableUsers(FakeEntityStore(), tables=len(USERS_TABLES) + 1)
    with pytest.raises(ValueError, match="tables"):
        TableUsers(FakeEntityStore(), tables=0)


async def test_rows_are_written_read_and_deleted_in_their_partitions_table() -> None:
    store = FakeEntityStore()
    users = TableUsers(store, partitions=32, tables=4)
    directory = Directory(users)
    rows = [_row(n) for n in range(400)]
    for batch in directory.batches("demo", rows):
        await directory.put_many("demo", batch)
    for table in USERS_TABLES[:4]:
        stored = store.tables[table]
        assert stored
        assert all(users.table_of("demo", row_key) == table for _, row_key in stored)
    assert set(store.tables) == set(USERS_TABLES[:4])
    assert await users.get_many("demo", [rows[3].id, rows[7].id]) == {rows[3].id: rows[3], rows[7].id: rows[7]}
    await users.delete("demo", rows[3].id)
    assert await users.get("demo", rows[3].id) is None
    assert await users.count("demo") == 399


# ------------------------------------------------------------------ layout: the partition count of a directory


async def _partitions(store: FakeEntityStore, connection: str) -> set[str]:
    """The partitions holding the connection's users, in every table."""
    return {e.partition_key for t in USERS_TABLES
            async for e in store.query_partitions(t, f"{connection}.", f"{connection}/")}


def test_the_partition_count_doubles_with_the_expected_size_up_to_its_most() -> None:
    assert partitions_for(0) == partitions_for(PARTITIONS * PARTITION_ROWS) == PARTITIONS
    assert partitions_for(PARTITIONS * PARTITION_ROWS + 1) == 2 * PARTITIONS
    assert partitions_for(1_000_000) == 1024
    assert partitions_for(50_000_000) == MAX_PARTITIONS
    assert partitions_for(100, least=4) == 4


async def test_a_first_import_lays_a_big_directory_out_in_more_partitions_and_every_reader_follows() -> None:
    store = FakeEntityStore()
    users = TableUsers(store)
    assert await users.lay_out("demo", 1_000_000) == 1024
    rows = [_row(n) for n in range(3000)]
    await users.put_many("demo", rows, new={r.id for r in rows})
    partitions = await _partitions(store, "demo")
    assert len(partitions) > PARTITIONS
    stored = await store.get(Table.USERS, "demo", LAYOUT)
    assert stored is not None
    assert stored.data == {"partitions": 1024}
    # Another process: reads the layout before it looks a user up; a later estimate changes nothing.
    other = TableUsers(store)
    assert (await other.get("demo", rows[7].id)) == rows[7]
    assert len(await other.get_many("demo", [r.id for r in rows])) == 3000
    assert await other.lay_out("demo", 10) == 1024
    assert await other.count("demo") == 3000  # the layout row is not a user


async def test_a_directory_laid_out_before_the_layout_row_keeps_its_partitions() -> None:
    store = FakeEntityStore()
    before = TableUsers(store)
    rows = [_row(n) for n in range(500)]
    await before.put_many("demo", rows)  # rows but no layout row: as a directory written before layouts
    assert await store.get(Table.USERS, "demo", LAYOUT) is None
    later = TableUsers(store)
    assert await later.lay_out("demo", 5_000_000) == PARTITIONS  # it has rows: the estimate does not move them
    assert (await store.get(Table.USERS, "demo", LAYOUT)) is not None
    assert len(await TableUsers(store).get_many("demo", [r.id for r in rows])) == 500


@pytest.mark.parametrize("value", ["1024", 0, -4, MAX_PARTITIONS * 2, True, None, "x" * 30_000])
async def test_a_layout_row_changed_outside_the_bridge_stops_every_read_and_write_naming_it(value: object) -> None:
    store = FakeEntityStore()
    await store.upsert(Table.USERS, Entity("demo", LAYOUT, {"partitions": value}))
    users = TableUsers(store)
    with pytest.raises(Stop, match=r"users/demo/layout says partitions=.*changed outside the bridge") as refused:
        await users.get("demo", _row(1).id)
    assert len(str(refused.value)) < 400  # what a storage writer put there is quoted, not copied whole
    with pytest.raises(Stop):
        await users.put_many("demo", [_row(1)], new={_row(1).id})
    assert not await _partitions(store, "demo")


class _LayoutReads(FakeEntityStore):
    """Counts the reads of layout rows."""

    def __init__(self) -> None:
        super().__init__()
        self.layout_reads = 0

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        self.layout_reads += row_key == LAYOUT
        return await super().get(table, partition_key, row_key)


async def test_many_users_are_read_in_one_layout_even_before_a_layout_row_is_stored() -> None:
    store = _LayoutReads()
    rows = [_row(n) for n in range(200)]
    await TableUsers(store).put_many("demo", rows)  # no layout row stored
    store.layout_reads = 0
    assert len(await TableUsers(store).get_many("demo", [r.id for r in rows])) == 200
    assert store.layout_reads == 1  # not one per user
