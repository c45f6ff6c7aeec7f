"""The audit log on Azurite: concurrent appends keep every chain intact; tampering is found."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.adapters.audit import AuditReader, TableAuditSink
from shared.adapters.tables import TableEntityStore
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeClock


@pytest.fixture
async def store(azurite_connection_string: str) -> AsyncIterator[TableEntityStore]:
    s = TableEntityStore.from_connection_string(azurite_connection_string)
    yield s
    await s.close()


async def test_concurrent_writers_keep_chains_intact(store: TableEntityStore) -> None:
    clock = FakeClock()
    connection = f"a{uuid.uuid4().hex[:8]}"
    # Two sinks stand for two instances writing the same chains at once.
    sinks = [TableAuditSink(store, clock), TableAuditSink(store, clock)]

    async def write(n: int) -> None:
        await sinks[n % 2].record(connection=connection, actor="test", action="thing.done", target=f"user-{n % 3}",
                                  outcome="ok", correlation_id=f"c{n}", detail={"n": n})

    await asyncio.gather(*(write(n) for n in range(60)))
    reader = AuditReader(store)
    day = clock.now().date()
    checked, broken = await reader.verify(connection, day, day)
    assert broken is None
    assert checked == 60
    assert sorted([r.detail["n"] async for r in reader.records(connection, day, day)]) == list(range(60))


async def test_editing_or_removing_a_record_is_found(store: TableEntityStore) -> None:
    clock = FakeClock()
    connection = f"t{uuid.uuid4().hex[:8]}"
    sink = TableAuditSink(store, clock)
    for n in range(5):
        await sink.record(connection=connection, actor="test", action="thing.done", target="same-user",
                          outcome="ok", correlation_id=f"c{n}")
    reader = AuditReader(store)
    day = clock.now().date()
    records = [r async for r in reader.records(connection, day, day)]
    victim = records[2]
    row = await store.get(Table.AUDIT, victim.chain, f"{victim.seq:012d}")
    assert row is not None
    await store.update(Table.AUDIT, Entity(row.partition_key, row.row_key, {**row.data, "outcome": "forged"},
                                           row.etag))
    _, broken = await reader.verify(connection, day, day)
    assert broken is not None
    assert (broken.seq, "edited" in broken.reason) == (3, True)

    await store.delete(Table.AUDIT, victim.chain, f"{victim.seq:012d}")
    _, broken = await reader.verify(connection, day, day)
    assert broken is not None
    assert broken.seq == 3
    assert "missing" in broken.reason


async def test_a_secret_named_member_is_refused(store: TableEntityStore) -> None:
    sink = TableAuditSink(store, FakeClock())
    with pytest.raises(ValueError, match="password"):
        await sink.record(connection="x", actor="t", action="a", target="t", outcome="o", correlation_id="c",
                          detail={"password": "hunter2"})


def test_day_range_is_inclusive() -> None:
    reader = AuditReader.__new__(AuditReader)
    assert len(reader.chains("c", dt.date(2026, 1, 1))) == 8
