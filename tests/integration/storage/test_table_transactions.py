"""Batched writes of the Table adapter against Azurite: entity-group transactions of up to 100 rows."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.tables import TableEntityStore
from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import BatchEntityStore, Entity
from shared.topology import Table


async def test_upsert_many_writes_every_row_of_every_partition(store: TableEntityStore) -> None:
    assert isinstance(store, BatchEntityStore)
    a, b = f"conn-{uuid.uuid4().hex[:8]}", f"conn-{uuid.uuid4().hex[:8]}"
    rows = [Entity(a, f"u{n:04d}", {"upn": f"u{n}@contoso.example", "groups": ["g1"]}) for n in range(230)]
    rows += [Entity(b, f"u{n:04d}", {"upn": f"b{n}@contoso.example"}) for n in range(7)]
    # The same row twice keeps the last version; an existing row is replaced, not merged.
    rows.append(Entity(a, "u0001", {"upn": "again@contoso.example"}))
    await store.upsert(Table.USERS, Entity(a, "u0002", {"upn": "old@contoso.example", "extra": 1}))
    await store.upsert_many(Table.USERS, rows)
    found_a = {e.row_key: e.data async for e in store.query(Table.USERS, a)}
    found_b = [e async for e in store.query(Table.USERS, b)]
    assert len(found_a) == 230
    assert len(found_b) == 7
    assert found_a["u0001"] == {"upn": "again@contoso.example"}
    assert found_a["u0002"] == {"upn": "u2@contoso.example", "groups": ["g1"]}


async def test_rows_known_new_are_inserted_and_rows_known_stored_replaced(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}.001"
    await store.upsert(Table.USERS, Entity(pk, "stored", {"upn": "old@contoso.example", "extra": 1}))
    rows = [Entity(pk, "stored", {"upn": "new@contoso.example"}), Entity(pk, "fresh", {"upn": "f@contoso.example"}),
            Entity(pk, "either", {"upn": "e@contoso.example"})]
    await store.upsert_many(Table.USERS, rows, exists={"stored": True, "fresh": False})
    found = {e.row_key: e.data async for e in store.query(Table.USERS, pk)}
    assert found == {"stored": {"upn": "new@contoso.example"}, "fresh": {"upn": "f@contoso.example"},
                     "either": {"upn": "e@contoso.example"}}
    # What the caller knew turned out wrong: the whole transaction is refused, nothing of it written.
    with pytest.raises(Conflict):
        await store.upsert_many(Table.USERS, [Entity(pk, "other", {"a": 1}), Entity(pk, "fresh", {"a": 2})],
                                exists={"other": False, "fresh": False})
    with pytest.raises(NotFound):
        await store.upsert_many(Table.USERS, [Entity(pk, "other", {"a": 1}), Entity(pk, "gone", {"a": 2})],
                                exists={"gone": True})
    assert {e.row_key async for e in store.query(Table.USERS, pk)} == {"stored", "fresh", "either"}


async def test_upsert_many_refuses_a_bad_row_before_sending(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidInput):
        await store.upsert_many(Table.USERS, [Entity(pk, "ok", {"a": 1}), Entity(pk, "bad/key", {"a": 2})])
    assert [e async for e in store.query(Table.USERS, pk)] == []


async def test_upsert_many_round_trips_every_value_type_and_awkward_keys(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}.007"
    keys = ["it's", "a b", "100%", "zoë@contoso.example", "plus+sign", "semi;colon", "(paren)", "a=b&c"]
    data = {"text": "Zoë ✓", "on": False, "small": -7, "wide": 2**40, "ratio": 1.0, "half": 0.5,
            "groups": ["g1", "g2"], "extra": {"k": [1, 2]}}
    await store.upsert_many(Table.USERS, [Entity(pk, key, data) for key in keys])
    found = {e.row_key: e for e in [e async for e in store.query(Table.USERS, pk)]}
    assert sorted(found) == sorted(keys)
    for key in keys:
        assert found[key].data == data
        assert type(found[key].data["ratio"]) is float
        # Each row reads back by its key, and is addressable for ETag-checked updates.
        single = await store.get(Table.USERS, pk, key)
        assert single is not None
        assert single.data == data
        assert single.etag


async def test_upsert_many_splits_a_partition_at_four_mebibytes(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    rows = [Entity(pk, f"r{n:03d}", {"a": "x" * 30_000, "b": "y" * 30_000}) for n in range(80)]
    await store.upsert_many(Table.USERS, rows)
    assert len([e async for e in store.query(Table.USERS, pk)]) == 80


async def test_a_failed_transaction_writes_none_of_its_rows_and_names_the_row(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    rows = [Entity(pk, f"r{n}", {"a": "x"}) for n in range(5)]
    # Table storage refuses an entity above 1 MiB (EntityTooLarge) and fails the whole transaction.
    rows[3] = Entity(pk, "r3", {f"c{k}": "y" * 32_000 for k in range(40)})
    with pytest.raises(InvalidInput) as failed:
        await store.upsert_many(Table.USERS, rows)
    assert f"users/{pk}/r3" in failed.value.detail
    assert "EntityTooLarge" in failed.value.detail
    assert [e async for e in store.query(Table.USERS, pk)] == []


async def test_a_partition_range_query_returns_every_row_of_the_range_in_order(store: TableEntityStore) -> None:
    conn = f"conn{uuid.uuid4().hex[:8]}"
    rows = [Entity(f"{conn}.{n % 7:03d}", f"u{n:04d}", {"n": n}) for n in range(1500)]
    rows += [Entity(f"{conn}-other.000", "x", {"n": -1}), Entity(conn, "legacy", {"n": -2})]
    await store.upsert_many(Table.USERS, rows)
    found = [(e.partition_key, e.row_key) async for e in store.query_partitions(Table.USERS, f"{conn}.", f"{conn}/")]
    # More than a page of 1,000, none of the neighbouring partitions, in partition then row order.
    assert found == sorted((e.partition_key, e.row_key) for e in rows[:1500])
