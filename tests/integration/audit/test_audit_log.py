"""The audit log on Azurite and the vault emulator: concurrent appends keep every chain intact; reads page
through every matching record."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from shared.adapters.audit import AuditReader
from shared.adapters.tables import TableEntityStore
from shared.domain.audit import shard_of
from shared.errors import InvalidInput
from shared.services import audit as audit_service
from shared.services.audit import AuditFilter
from tests.fakes import FakeClock
from tests.integration.audit.conftest import AuditVault


async def test_concurrent_writers_keep_chains_intact(store: TableEntityStore, audit_vault: AuditVault) -> None:
    clock = FakeClock()
    connection = f"a{uuid.uuid4().hex[:8]}"
    # Two sinks stand for two instances writing the same chains at once.
    sinks = [audit_vault.sink(clock), audit_vault.sink(clock)]

    async def write(n: int) -> None:
        await sinks[n % 2].record(connection=connection, actor="test", action="thing.done", target=f"user-{n % 3}",
                                  outcome="ok", correlation_id=f"c{n}", detail={"n": n})

    await asyncio.gather(*(write(n) for n in range(60)))
    for sink in sinks:
        await sink.aclose()
    reader = AuditReader(store)
    day = clock.now().date()
    report = await audit_vault.query(clock).verify(connection, day, day)
    assert report.findings == []
    assert report.checked == 60
    assert sorted([r.detail["n"] async for r in reader.records(connection, day, day)]) == list(range(60))


async def test_a_secret_named_member_is_refused(audit_vault: AuditVault) -> None:
    sink = audit_vault.sink(FakeClock())
    with pytest.raises(ValueError, match="password"):
        await sink.record(connection="x", actor="t", action="a", target="t", outcome="o", correlation_id="c",
                          detail={"password": "hunter2"})


def test_day_range_is_inclusive() -> None:
    reader = AuditReader.__new__(AuditReader)
    assert len(reader.chains("c", dt.date(2026, 1, 1))) == 8


async def _spread(audit_vault: AuditVault, connection: str, count: int) -> FakeClock:
    """`count` records over two UTC days, a second apart, on several targets and outcomes."""
    clock = FakeClock(dt.datetime(2026, 3, 1, 23, 59, 30, tzinfo=dt.UTC))
    sink = audit_vault.sink(clock)
    for n in range(count):
        await sink.record(connection=connection, actor="test", action="rotation.done" if n % 2 else "sync.run",
                          target=f"user-{n % 5}", outcome="failed" if n % 7 == 0 else "ok", correlation_id=f"c{n}",
                          detail={"n": n})
        clock.advance(seconds=1)
    await sink.aclose()
    return clock


async def test_pages_return_every_record_once_in_time_order(audit_vault: AuditVault) -> None:
    connection = f"p{uuid.uuid4().hex[:8]}"
    clock = await _spread(audit_vault, connection, 60)
    query = audit_vault.query(clock)
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


async def test_bad_queries_and_tokens_are_named(audit_vault: AuditVault) -> None:
    query = audit_vault.query(FakeClock())
    with pytest.raises(InvalidInput, match="runs backwards"):
        AuditFilter("c", dt.date(2026, 3, 2), dt.date(2026, 3, 1))
    with pytest.raises(InvalidInput, match="more than 31 days"):
        AuditFilter("c", dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    flt = AuditFilter("c", dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    with pytest.raises(InvalidInput, match="not one this API issued"):
        await query.page(flt, token="%%%")
    connection = f"q{uuid.uuid4().hex[:8]}"
    await _spread(audit_vault, connection, 4)
    first = await query.page(AuditFilter(connection, dt.date(2026, 3, 1), dt.date(2026, 3, 2)), top=1)
    assert first.next_token
    with pytest.raises(InvalidInput, match="another query"):
        await query.page(flt, token=first.next_token)
    with pytest.raises(InvalidInput, match="top"):
        await query.page(flt, top=5000)


async def test_a_target_filtered_page_holds_every_match(audit_vault: AuditVault,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A target shares its chain with other targets of the same shard; here 60 of theirs come first.
    connection = f"f{uuid.uuid4().hex[:8]}"
    wanted = "user-wanted"
    neighbours = [t for t in (f"user-{n}" for n in range(200)) if shard_of(t) == shard_of(wanted)][:3]
    clock = FakeClock(dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC))
    sink = audit_vault.sink(clock)
    for n in range(64):
        target = neighbours[n % 3] if n < 60 else wanted
        await sink.record(connection=connection, actor="test", action="thing.done", target=target, outcome="ok",
                          correlation_id=f"c{n}", detail={"n": n})
        clock.advance(seconds=1)
    await sink.aclose()
    query = audit_vault.query(clock)
    day = dt.date(2026, 3, 1)
    for top in (50, 99, 4, 1000):  # 50 answered 0 records and no token before
        flt = AuditFilter(connection, day, day, target=wanted)
        seen, token = [], None
        while True:
            page = await query.page(flt, top=top, token=token)
            seen += [r.detail["n"] for r in page.records]
            token = page.next_token
            if token is None:
                break
        assert seen == [60, 61, 62, 63], top
    assert [r.detail["n"] for r in (await query.page(AuditFilter(connection, day, day, target=wanted),
                                                     top=50)).records] == [60, 61, 62, 63]

    # A page that stops scanning before it is full says so with a token, and nothing is lost on the way.
    monkeypatch.setattr(audit_service, "SCAN_MAX", 25)
    flt = AuditFilter(connection, day, dt.date(2026, 3, 2), target=wanted)
    first = await query.page(flt, top=50)
    assert first.records == []
    assert first.next_token is not None
    seen, token, pages = [], first.next_token, 1
    while token is not None:
        page = await query.page(flt, top=50, token=token)
        pages += 1
        seen += [r.detail["n"] for r in page.records]
        token = page.next_token
    assert seen == [60, 61, 62, 63]
    assert pages == 3
