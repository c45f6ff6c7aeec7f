"""The audit log on Azurite: concurrent appends keep every chain intact; tampering is found."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from shared.adapters.audit import AuditReader, TableAuditSink
from shared.adapters.tables import TableEntityStore
from shared.domain.audit import chain_id as audit_chain_id
from shared.errors import InvalidInput
from shared.services.audit import AuditFilter, AuditQuery
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeClock


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


async def _spread(store: TableEntityStore, connection: str, count: int) -> FakeClock:
    """`count` records over two UTC days, a second apart, on several targets and outcomes."""
    clock = FakeClock(dt.datetime(2026, 3, 1, 23, 59, 30, tzinfo=dt.UTC))
    sink = TableAuditSink(store, clock)
    for n in range(count):
        await sink.record(connection=connection, actor="test", action="rotation.done" if n % 2 else "sync.run",
                          target=f"user-{n % 5}", outcome="failed" if n % 7 == 0 else "ok", correlation_id=f"c{n}",
                          detail={"n": n})
        clock.advance(seconds=1)
    return clock


async def test_pages_return_every_record_once_in_time_order(store: TableEntityStore) -> None:
    connection = f"p{uuid.uuid4().hex[:8]}"
    await _spread(store, connection, 60)
    query = AuditQuery(AuditReader(store))
    flt = AuditFilter(connection, dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    seen: list[int] = []
    token: str | None = None
    pages = 0
    while True:
        page = await query.page(flt, top=7, token=token)
        pages += 1
        assert len(page.records) <= 7
        seen += [r.detail["n"] for r in page.records]
        token = page.next_token
        if token is None:
            break
    assert seen == list(range(60))
    assert pages == 9

    failed = await query.page(AuditFilter(connection, dt.date(2026, 3, 1), dt.date(2026, 3, 2),
                                          action="rotation.", target="user-1", outcome="failed"), top=100)
    assert [r.detail["n"] for r in failed.records] == [n for n in range(60)
                                                      if n % 2 and n % 5 == 1 and n % 7 == 0]


async def test_bad_queries_and_tokens_are_named(store: TableEntityStore) -> None:
    query = AuditQuery(AuditReader(store))
    with pytest.raises(InvalidInput, match="runs backwards"):
        AuditFilter("c", dt.date(2026, 3, 2), dt.date(2026, 3, 1))
    with pytest.raises(InvalidInput, match="more than 31 days"):
        AuditFilter("c", dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    flt = AuditFilter("c", dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    with pytest.raises(InvalidInput, match="not one this API issued"):
        await query.page(flt, token="%%%")
    connection = f"q{uuid.uuid4().hex[:8]}"
    await _spread(store, connection, 4)
    first = await query.page(AuditFilter(connection, dt.date(2026, 3, 1), dt.date(2026, 3, 2)), top=1)
    assert first.next_token
    with pytest.raises(InvalidInput, match="another query"):
        await query.page(flt, token=first.next_token)
    with pytest.raises(InvalidInput, match="top"):
        await query.page(flt, top=5000)


async def test_a_chain_cut_short_is_found_by_its_head_hint(store: TableEntityStore) -> None:
    clock = FakeClock()
    connection = f"h{uuid.uuid4().hex[:8]}"
    sink = TableAuditSink(store, clock)
    for n in range(40):  # past the head hint's interval, so the hint names a record that will be gone
        await sink.record(connection=connection, actor="test", action="thing.done", target="one", outcome="ok",
                          correlation_id=f"c{n}")
    reader = AuditReader(store)
    day = clock.now().date()
    chain_id = audit_chain_id(connection, clock.now(), "one")
    for seq in range(30, 41):  # the hint says 32 were written; the end now claims 29
        await store.delete(Table.AUDIT, chain_id, f"{seq:012d}")
    report = await AuditQuery(reader).verify(connection, day, day)
    assert report.broken is not None
    assert report.broken.seq == 30
    assert "missing" in report.broken.reason
    assert report.as_json()["intact"] is False
