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
