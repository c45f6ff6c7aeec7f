"""The users adapter spreads a connection's users over partitions; the directory writes them a partition at a time."""

from __future__ import annotations

from shared.adapters.users import PARTITIONS, RANGE_PAGE, TableUsers
from shared.domain.directory import UserRow
from shared.services.directory import Directory
from shared.services.ports import TRANSACTION_ROWS, Entity
from shared.topology import Table
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
    await store.upsert(Table.USERS, Entity(users.partition_of("demo", "bad"), "bad", {"upn": 7, "state": "???"}))
    assert [r.id async for r in users.scan("demo")] == [_row(1).id]
