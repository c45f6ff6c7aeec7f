"""The storage adapters with the real SDKs against Azurite."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from azure.data.tables import EdmType, EntityProperty
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from shared.adapters.queues import StorageWorkQueue
from shared.adapters.tables import TableEntityStore
from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import Entity
from shared.topology import Queue, Table


async def test_round_trip_keeps_json_types(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    data = {"upn": "a@contoso.example", "n": 3, "big": 2**40, "ratio": 0.5, "ok": True,
            "groups": ["g1", "g2"], "meta": {"k": [1, 2]}, "gone": None}
    stored = await store.insert(Table.USERS, Entity(pk, "user-1", data))
    assert stored.etag
    got = await store.get(Table.USERS, pk, "user-1")
    assert got is not None
    assert got.data == {k: v for k, v in data.items() if v is not None}
    assert got.etag == stored.etag


async def test_insert_twice_conflicts_and_stale_etag_conflicts(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    first = await store.insert(Table.USERS, Entity(pk, "u", {"v": 1}))
    with pytest.raises(Conflict):
        await store.insert(Table.USERS, Entity(pk, "u", {"v": 2}))
    second = await store.update(Table.USERS, Entity(pk, "u", {"v": 2}, first.etag))
    with pytest.raises(Conflict):
        await store.update(Table.USERS, Entity(pk, "u", {"v": 3}, first.etag))
    with pytest.raises(Conflict):
        await store.delete(Table.USERS, pk, "u", etag=first.etag)
    await store.delete(Table.USERS, pk, "u", etag=second.etag)
    assert await store.get(Table.USERS, pk, "u") is None
    await store.delete(Table.USERS, pk, "u")  # absent counts as deleted


async def test_query_orders_and_bounds_by_row_key(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    for rk in ["c", "a", "b", "d"]:
        await store.upsert(Table.AUDIT, Entity(pk, rk, {"rk": rk}))
    await store.upsert(Table.AUDIT, Entity(pk + "x", "a", {"rk": "other partition"}))
    rows = [e.row_key async for e in store.query(Table.AUDIT, pk)]
    assert rows == ["a", "b", "c", "d"]
    rows = [e.row_key async for e in store.query(Table.AUDIT, pk, row_key_from="b", row_key_to="d")]
    assert rows == ["b", "c"]
    rows = [e.row_key async for e in store.query(Table.AUDIT, pk, limit=2)]
    assert rows == ["a", "b"]


AWKWARD_KEYS = ["it's", "a b", "100%", "%27", "zoë@contoso.example", "plus+sign", "semi;colon", "(paren)",
                "a=b&c", "a:b", "comma,s", "no\u00a0break", "''"]


async def test_reads_count_the_rows_they_return(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    for rk in ["a", "b", "c"]:
        await store.upsert(Table.AUDIT, Entity(pk, rk, {"rk": rk}))
    before, by_table = store.rows_read, store.rows_read_by_table.get(Table.AUDIT.value, 0)
    assert await store.get(Table.AUDIT, pk, "a") is not None
    assert await store.get(Table.AUDIT, pk, "missing") is None
    assert [e.row_key async for e in store.query(Table.AUDIT, pk)] == ["a", "b", "c"]
    assert [e.row_key async for e in store.query(Table.AUDIT, pk, limit=2)] == ["a", "b"]
    # Writes read nothing; a missing row returns none.
    await store.upsert(Table.AUDIT, Entity(pk, "d", {"rk": "d"}))
    assert store.rows_read - before == 1 + 3 + 2
    assert store.rows_read_by_table[Table.AUDIT.value] - by_table == 6


async def test_every_point_operation_addresses_awkward_keys(store: TableEntityStore) -> None:
    # Keys are quoted into the entity's address and into $filter literals; both must survive any
    # character Table storage allows.
    for key in AWKWARD_KEYS:
        pk = f"conn-{uuid.uuid4().hex[:8]}{key}"
        first = await store.insert(Table.USERS, Entity(pk, key, {"v": 1}))
        got = await store.get(Table.USERS, pk, key)
        assert got is not None, key
        assert (got.data, got.etag) == ({"v": 1}, first.etag), key
        second = await store.update(Table.USERS, Entity(pk, key, {"v": 2}, first.etag))
        with pytest.raises(Conflict):
            await store.update(Table.USERS, Entity(pk, key, {"v": 3}, first.etag))
        await store.upsert(Table.USERS, Entity(pk, key + "2", {"v": 4}))
        found = [(e.row_key, e.data["v"]) async for e in store.query(Table.USERS, pk, row_key_from=key)]
        assert found == [(key, 2), (key + "2", 4)], key
        await store.delete(Table.USERS, pk, key, etag=second.etag)
        assert await store.get(Table.USERS, pk, key) is None, key


async def test_update_of_a_missing_row_is_not_found(store: TableEntityStore) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await store.update(Table.USERS, Entity(f"conn-{uuid.uuid4().hex[:8]}", "gone", {"v": 1}))


async def test_a_query_follows_continuation_past_a_page(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    await store.upsert_many(Table.USERS, [Entity(pk, f"u{n:05d}", {"n": n}) for n in range(2_150)])
    rows = [e async for e in store.query(Table.USERS, pk)]
    assert [e.data["n"] for e in rows] == list(range(2_150))
    assert all(e.etag for e in rows)
    assert len([e async for e in store.query(Table.USERS, pk, limit=1_500)]) == 1_500
    ranged = [e async for e in store.query_partitions(Table.USERS, pk, pk + "~")]
    assert len(ranged) == 2_150


async def test_rows_written_by_the_sdk_read_back_with_their_types(store: TableEntityStore,
                                                                  azurite_connection_string: str) -> None:
    # Rows stored before entities went through shared.adapters.table_rest were written by the SDK.
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    await store.upsert(Table.USERS, Entity(pk, "seed", {}))
    async with TableClient.from_connection_string(azurite_connection_string, Table.USERS.value) as client:
        await client.upsert_entity({"PartitionKey": pk, "RowKey": "old", "name": "Zoë", "n": 7,
                                    "wide": EntityProperty(2**40, EdmType.INT64), "ratio": 1.0, "half": 0.5,
                                    "on": False, "groups": '["g1"]', "_json": "groups"})
    got = await store.get(Table.USERS, pk, "old")
    assert got is not None
    assert got.data == {"name": "Zoë", "n": 7, "wide": 2**40, "ratio": 1.0, "half": 0.5, "on": False,
                        "groups": ["g1"]}
    assert type(got.data["ratio"]) is float
    assert type(got.data["wide"]) is int


async def test_bad_keys_and_values_are_refused_by_name(store: TableEntityStore) -> None:
    with pytest.raises(InvalidInput, match="RowKey"):
        await store.insert(Table.USERS, Entity("p", "a/b", {}))
    with pytest.raises(InvalidInput, match="'when'"):
        await store.insert(Table.USERS, Entity("p", "ok", {"when": object()}))
    with pytest.raises(InvalidInput, match="Table storage holds"):
        await store.insert(Table.USERS, Entity("p", "ok", {"blob": "x" * 40000}))
    with pytest.raises(InvalidInput, match=r"'huge'.*64 bits"):
        await store.insert(Table.USERS, Entity("p", "ok", {"huge": 2**64}))
    with pytest.raises(InvalidInput, match=r"'nan'.*finite"):
        await store.insert(Table.USERS, Entity("p", "ok", {"nan": float("nan")}))


async def test_queue_messages_are_base64_json_with_delay(azurite_connection_string: str) -> None:
    queue = StorageWorkQueue.from_connection_string(azurite_connection_string)
    try:
        await queue.send(Queue.SYNC, {"connection": "demo", "kind": "sync", "n": 1})
        await queue.send(Queue.SYNC, {"connection": "demo", "kind": "later"}, delay_seconds=60)
        with pytest.raises(InvalidInput, match="bytes"):
            await queue.send(Queue.SYNC, {"blob": "x" * 60000})
    finally:
        await queue.close()
    async with QueueClient.from_connection_string(azurite_connection_string, Queue.SYNC.value) as raw:
        messages = [m async for m in raw.receive_messages(max_messages=32)]
    bodies = [json.loads(base64.b64decode(m.content)) for m in messages]
    assert {"connection": "demo", "kind": "sync", "n": 1} in bodies
    assert all(b.get("kind") != "later" for b in bodies)  # still invisible
