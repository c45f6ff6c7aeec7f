"""The storage adapters with the real SDKs against Azurite."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from azure.storage.queue.aio import QueueClient

from shared.adapters.queues import StorageWorkQueue
from shared.adapters.tables import TableEntityStore
from shared.errors import Conflict, InvalidInput
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


async def test_bad_keys_and_values_are_refused_by_name(store: TableEntityStore) -> None:
    with pytest.raises(InvalidInput, match="RowKey"):
        await store.insert(Table.USERS, Entity("p", "a/b", {}))
    with pytest.raises(InvalidInput, match="'when'"):
        await store.insert(Table.USERS, Entity("p", "ok", {"when": object()}))
    with pytest.raises(InvalidInput, match="Table storage holds"):
        await store.insert(Table.USERS, Entity("p", "ok", {"blob": "x" * 40000}))


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
