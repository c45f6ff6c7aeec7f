"""Batched writes of the Table adapter against Azurite: entity-group transactions of up to 100 rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from shared.adapters.tables import TableEntityStore
from shared.errors import InvalidInput
from shared.services.ports import BatchEntityStore, Entity
from shared.topology import Table


@pytest.fixture
async def store(azurite_connection_string: str) -> AsyncIterator[TableEntityStore]:
    s = TableEntityStore.from_connection_string(azurite_connection_string)
    yield s
    await s.close()


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


async def test_upsert_many_refuses_a_bad_row_before_sending(store: TableEntityStore) -> None:
    pk = f"conn-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidInput):
        await store.upsert_many(Table.USERS, [Entity(pk, "ok", {"a": 1}), Entity(pk, "bad/key", {"a": 2})])
    assert [e async for e in store.query(Table.USERS, pk)] == []
