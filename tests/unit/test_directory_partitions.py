"""The directory spreads a connection's users over partitions, and moves rows of earlier layouts."""

from __future__ import annotations

import zlib

from shared.domain.directory import UserRow
from shared.services.directory import RANGE_PAGE, SHARDS, Directory, partition_of
from shared.services.ports import TRANSACTION_ROWS, Entity
from shared.topology import Table
from tests.fakes import FakeEntityStore


def _row(n: int) -> UserRow:
    return UserRow(id=f"{n:08x}-0000-0000-0000-000000000000", upn=f"user{n}@contoso.example")


def test_a_user_always_lands_in_the_same_partition_of_its_connection_only() -> None:
    ids = [_row(n).id for n in range(5000)]
    partitions = {partition_of("demo", i) for i in ids}
    assert len(partitions) == SHARDS
    assert all(p.startswith("demo.") for p in partitions)
    assert partition_of("demo", ids[0]) == partition_of("demo", ids[0])
    assert not partitions & {partition_of("demo2", i) for i in ids}


def test_batches_hold_rows_of_one_partition_and_at_most_a_transaction_each() -> None:
    rows = [_row(n) for n in range(3000)]
    batches = Directory.batches("demo", rows)
    assert sorted(r.id for b in batches for r in b) == sorted(r.id for r in rows)
    for batch in batches:
        assert 0 < len(batch) <= TRANSACTION_ROWS
        assert len({partition_of("demo", r.id) for r in batch}) == 1


async def test_rows_of_earlier_layouts_are_read_and_then_moved() -> None:
    store = FakeEntityStore()
    directory = Directory(store)
    unsharded = [_row(n) for n in range(30)]
    for row in unsharded:
        await store.upsert(Table.USERS, Entity("demo", row.id, row.to_row()))
    sixteen = [_row(n) for n in range(30, 50)]
    for row in sixteen:
        await store.upsert(Table.USERS, Entity(f"demo.{zlib.crc32(row.id.encode()) % 16:02d}", row.id, row.to_row()))
    await directory.put("demo", _row(100))
    # Before the move every reader sees them, and `all` does not repeat a row found in both places.
    assert (await directory.get("demo", unsharded[3].id)) == unsharded[3]
    assert (await directory.get("demo", sixteen[3].id)) == sixteen[3]
    assert len([r async for r in directory.all("demo")]) == 51
    assert await directory.move_earlier_rows("demo") == 50
    assert [e async for e in store.query(Table.USERS, "demo")] == []
    expected = sorted(r.id for r in [*unsharded, *sixteen, _row(100)])
    assert sorted([r.id async for r in directory.all("demo")]) == expected
    assert {partition_of("demo", r.id) for r in [*unsharded, *sixteen]} <= {pk for pk, _ in store.tables[Table.USERS]}
    assert await directory.move_earlier_rows("demo") == 0


async def test_a_row_already_in_its_partition_keeps_that_version_when_the_old_copy_is_moved() -> None:
    store = FakeEntityStore()
    directory = Directory(store)
    stale, fresh = _row(7), _row(7).model_copy(update={"upn": "renamed@contoso.example"})
    await store.upsert(Table.USERS, Entity("demo", stale.id, stale.to_row()))
    await directory.put("demo", fresh)
    assert [r.upn async for r in directory.all("demo")] == ["renamed@contoso.example"]
    assert await directory.move_earlier_rows("demo") == 1
    assert (await directory.get("demo", stale.id)) == fresh


async def test_a_connection_bigger_than_a_page_is_read_partition_by_partition_with_its_earlier_rows() -> None:
    store = FakeEntityStore()
    directory = Directory(store)
    current = [_row(n) for n in range(RANGE_PAGE + 200)]
    for batch in directory.batches("demo", current):
        await directory.put_many("demo", batch)
    sixteen = [_row(n) for n in range(5000, 5020)] + [current[0].model_copy(update={"upn": "stale@contoso.example"})]
    for row in sixteen:
        await store.upsert(Table.USERS, Entity(f"demo.{zlib.crc32(row.id.encode()) % 16:02d}", row.id, row.to_row()))
    await store.upsert(Table.USERS, Entity("demo", _row(6000).id, _row(6000).to_row()))
    await directory.put("other", _row(7000))
    found = [r async for r in directory.all("demo")]
    assert len(found) == len({r.id for r in found}) == len(current) + 21
    assert next(r for r in found if r.id == current[0].id).upn == current[0].upn
