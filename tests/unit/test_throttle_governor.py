"""The throttle governor reads the shared pause row first, then refreshes it beside writes, not in front of them."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from shared.adapters.graph import ThrottleGovernor
from shared.errors import Transient
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeEntityStore

TENANT = "00000000-0000-0000-0000-000000000001"


class CountingStore(FakeEntityStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        self.reads += 1
        await asyncio.sleep(0)
        return await super().get(table, partition_key, row_key)


async def test_the_first_call_reads_the_row_and_later_ones_refresh_it_in_the_background(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = CountingStore()
    until = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    await store.upsert(Table.THROTTLE, Entity(TENANT, "writes", {"pauseUntil": until.isoformat()}))
    governor = ThrottleGovernor(store)
    assert await governor.pause_until(TENANT) == until
    assert store.reads == 1
    assert await governor.pause_until(TENANT) == until  # fresh: no read
    assert store.reads == 1

    later = until + dt.timedelta(hours=1)
    await store.upsert(Table.THROTTLE, Entity(TENANT, "writes", {"pauseUntil": later.isoformat()}))
    monkeypatch.setattr(ThrottleGovernor, "REFRESH_SECONDS", -1.0)
    # Stale: the answer is what is known, and one refresh starts (not one per call).
    assert await governor.pause_until(TENANT) == until
    assert await governor.pause_until(TENANT) == until
    await asyncio.sleep(0.01)
    assert store.reads == 2
    assert await governor.pause_until(TENANT) == later


async def test_a_storage_failure_leaves_writes_unpaused() -> None:
    class Broken(FakeEntityStore):
        async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
            raise Transient("storage is down")

    assert await ThrottleGovernor(Broken()).pause_until(TENANT) is None


async def test_instances_sharing_the_budget_send_no_more_writes_than_the_tenants_bound() -> None:
    # Two instances (two governors) on one throttle table: a bucket of 30 writes refilled at 3 a second.
    store = FakeEntityStore()
    clock = {"t": 1000.0}

    async def sleep(seconds: float) -> None:
        clock["t"] += seconds

    def governor() -> ThrottleGovernor:
        return ThrottleGovernor(store, write_burst=30, write_window=10, now=lambda: clock["t"])

    first, second = governor(), governor()
    sent: list[float] = []
    for n in range(120):
        await (first if n % 2 else second).wait(TENANT, sleep)
        sent.append(clock["t"])
    elapsed = sent[-1] - sent[0]
    # Never more than the bucket plus its refill (chunks claimed ahead are counted as sent).
    for k, at in enumerate(sent):
        assert k + 1 <= 30 + 3 * (at - sent[0]) + ThrottleGovernor.CHUNK
    # And the bound is used, not wasted: the 90 writes past the bucket took about 90 / 3 seconds.
    assert 25 <= elapsed <= 35
    row = await store.get(Table.THROTTLE, TENANT, "writeBudget")
    assert row is not None


async def test_without_storage_or_with_the_budget_off_writes_are_not_paced() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    off = ThrottleGovernor(FakeEntityStore(), write_burst=None)
    for _ in range(50):
        await off.wait(TENANT, sleep)
    assert slept == []
