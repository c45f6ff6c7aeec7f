"""The EntityStore and BatchEntityStore contract, on the in-memory store and on the Table adapter with Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import TRANSACTION_ROWS, Entity
from shared.topology import Table
from tests.fixtures.contracts import ContractEntityStore


def partition() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


async def test_a_row_round_trips_its_json_values_and_drops_nulls(entity_store: ContractEntityStore) -> None:
    pk = partition()
    data = {"s": "text", "n": 3, "big": 2**40, "ratio": 0.5, "ok": False, "list": ["a", 1],
            "obj": {"k": [1, {"x": None}]}, "gone": None}
    stored = await entity_store.insert(Table.USERS, Entity(pk, "r", data))
    assert stored.etag
    got = await entity_store.get(Table.USERS, pk, "r")
    assert got is not None
    assert got.data == {k: v for k, v in data.items() if v is not None}
    assert got.etag == stored.etag
    got.data["list"].append("mutated")
    again = await entity_store.get(Table.USERS, pk, "r")
    assert again is not None
    assert again.data["list"] == ["a", 1]


async def test_a_missing_row_is_none_and_its_delete_is_done(entity_store: ContractEntityStore) -> None:
    pk = partition()
    assert await entity_store.get(Table.USERS, pk, "nobody") is None
    await entity_store.delete(Table.USERS, pk, "nobody")
    await entity_store.delete(Table.USERS, pk, "nobody", etag='W/"1"')


async def test_insert_conflicts_on_an_existing_row(entity_store: ContractEntityStore) -> None:
    pk = partition()
    await entity_store.insert(Table.USERS, Entity(pk, "r", {"v": 1}))
    with pytest.raises(Conflict):
        await entity_store.insert(Table.USERS, Entity(pk, "r", {"v": 2}))
    got = await entity_store.get(Table.USERS, pk, "r")
    assert got is not None
    assert got.data == {"v": 1}


async def test_update_and_delete_follow_the_etag(entity_store: ContractEntityStore) -> None:
    pk = partition()
    first = await entity_store.insert(Table.USERS, Entity(pk, "r", {"v": 1}))
    second = await entity_store.update(Table.USERS, Entity(pk, "r", {"v": 2}, first.etag))
    assert second.etag
    assert second.etag != first.etag
    with pytest.raises(Conflict):
        await entity_store.update(Table.USERS, Entity(pk, "r", {"v": 3}, first.etag))
    with pytest.raises(Conflict):
        await entity_store.delete(Table.USERS, pk, "r", etag=first.etag)
    # No ETag: any version.
    third = await entity_store.update(Table.USERS, Entity(pk, "r", {"v": 4}))
    await entity_store.delete(Table.USERS, pk, "r", etag=third.etag)
    assert await entity_store.get(Table.USERS, pk, "r") is None


async def test_update_of_a_missing_row_is_not_found(entity_store: ContractEntityStore) -> None:
    with pytest.raises(NotFound):
        await entity_store.update(Table.USERS, Entity(partition(), "r", {"v": 1}))


async def test_upsert_replaces_the_whole_row(entity_store: ContractEntityStore) -> None:
    pk = partition()
    first = await entity_store.upsert(Table.USERS, Entity(pk, "r", {"a": 1, "b": 2}))
    second = await entity_store.upsert(Table.USERS, Entity(pk, "r", {"a": 3}))
    assert first.etag != second.etag
    got = await entity_store.get(Table.USERS, pk, "r")
    assert got is not None
    assert got.data == {"a": 3}


async def test_query_orders_bounds_and_limits_one_partition(entity_store: ContractEntityStore) -> None:
    pk = partition()
    for rk in ["c", "a", "d", "b"]:
        await entity_store.upsert(Table.AUDIT, Entity(pk, rk, {"rk": rk}))
    await entity_store.upsert(Table.AUDIT, Entity(pk + "x", "a", {"rk": "next partition"}))
    assert [e.row_key async for e in entity_store.query(Table.AUDIT, pk)] == ["a", "b", "c", "d"]
    assert [e.row_key async for e in entity_store.query(Table.AUDIT, pk, row_key_from="b", row_key_to="d")] == [
        "b", "c"]
    assert [e.row_key async for e in entity_store.query(Table.AUDIT, pk, limit=3)] == ["a", "b", "c"]
    assert [e.data async for e in entity_store.query(Table.AUDIT, pk, row_key_from="d")] == [{"rk": "d"}]
    assert all([e.etag async for e in entity_store.query(Table.AUDIT, pk)])
    assert [e async for e in entity_store.query(Table.AUDIT, partition())] == []


async def test_query_follows_pages_past_a_thousand_rows(entity_store: ContractEntityStore) -> None:
    pk = partition()
    await entity_store.upsert_many(Table.USERS, [Entity(pk, f"u{n:05d}", {"n": n}) for n in range(1_205)])
    rows = [e.data["n"] async for e in entity_store.query(Table.USERS, pk)]
    assert rows == list(range(1_205))
    assert len([e async for e in entity_store.query(Table.USERS, pk, limit=1_100)]) == 1_100


async def test_query_partitions_orders_by_partition_then_row(entity_store: ContractEntityStore) -> None:
    base = partition()
    for pk, rk in [(f"{base}.b", "2"), (f"{base}.a", "9"), (f"{base}.b", "1"), (f"{base}.d", "x"), (f"{base}.c", "0")]:
        await entity_store.upsert(Table.DEVICES, Entity(pk, rk, {}))
    found = [(e.partition_key, e.row_key) async for e in entity_store.query_partitions(
        Table.DEVICES, f"{base}.a", f"{base}.c")]
    assert found == [(f"{base}.a", "9"), (f"{base}.b", "1"), (f"{base}.b", "2")]
    limited = [e.row_key async for e in entity_store.query_partitions(Table.DEVICES, f"{base}.", f"{base}/", limit=2)]
    assert limited == ["9", "1"]


@pytest.mark.parametrize("key", ["a/b", "a\\b", "a#b", "a?b", "tab\there", ""])
async def test_keys_the_service_forbids_are_invalid_input(entity_store: ContractEntityStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        await entity_store.upsert(Table.USERS, Entity(partition(), key, {"v": 1}))
    with pytest.raises(InvalidInput):
        await entity_store.insert(Table.USERS, Entity(key, "r", {"v": 1}))


@pytest.mark.parametrize("value", [2**63, float("nan"), "x" * (32 * 1024 + 1), b"bytes"])
async def test_values_no_row_can_hold_are_invalid_input(entity_store: ContractEntityStore, value: object) -> None:
    pk = partition()
    with pytest.raises(InvalidInput):
        await entity_store.upsert(Table.USERS, Entity(pk, "r", {"v": value}))
    assert await entity_store.get(Table.USERS, pk, "r") is None


async def test_reserved_property_names_are_invalid_input(entity_store: ContractEntityStore) -> None:
    with pytest.raises(InvalidInput):
        await entity_store.upsert(Table.USERS, Entity(partition(), "r", {"RowKey": "x"}))


async def test_upsert_many_writes_every_row_and_keeps_the_last_of_a_key(entity_store: ContractEntityStore) -> None:
    pk, other = partition(), partition()
    rows = [Entity(pk, f"r{n:03d}", {"n": n}) for n in range(TRANSACTION_ROWS + 30)]
    rows += [Entity(other, "x", {"n": 1}), Entity(pk, "r000", {"n": "last"})]
    await entity_store.upsert_many(Table.USERS, rows)
    found = {e.row_key: e.data["n"] async for e in entity_store.query(Table.USERS, pk)}
    assert len(found) == TRANSACTION_ROWS + 30
    assert found["r000"] == "last"
    assert [e.data async for e in entity_store.query(Table.USERS, other)] == [{"n": 1}]


async def test_upsert_many_refuses_a_bad_row_before_writing_any(entity_store: ContractEntityStore) -> None:
    pk = partition()
    with pytest.raises(InvalidInput):
        await entity_store.upsert_many(Table.USERS, [Entity(pk, "ok", {"a": 1}), Entity(pk, "bad/key", {"a": 2})])
    assert [e async for e in entity_store.query(Table.USERS, pk)] == []


async def test_upsert_many_inserts_known_new_rows_and_updates_known_stored_ones(
        entity_store: ContractEntityStore) -> None:
    pk = partition()
    await entity_store.upsert_many(Table.USERS, [Entity(pk, "a", {"n": 1})], exists={"a": False})
    await entity_store.upsert_many(Table.USERS, [Entity(pk, "a", {"n": 2}), Entity(pk, "b", {"n": 1})],
                                   exists={"a": True, "b": False})
    # A row found otherwise than the writer knew fails its transaction whole.
    with pytest.raises(Conflict):
        await entity_store.upsert_many(Table.USERS, [Entity(pk, "c", {"n": 1}), Entity(pk, "b", {"n": 9})],
                                       exists={"c": False, "b": False})
    with pytest.raises(NotFound):
        await entity_store.upsert_many(Table.USERS, [Entity(pk, "d", {"n": 1})], exists={"d": True})
    assert {e.row_key: e.data["n"] async for e in entity_store.query(Table.USERS, pk)} == {"a": 2, "b": 1}
