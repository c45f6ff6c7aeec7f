"""Sync is a use case on ports only: the same runs on the in-memory repositories as on the Table adapters."""

from __future__ import annotations

from typing import Any

import pytest

from shared.domain.directory import UserState
from shared.errors import Conflict
from shared.services.directory import Directory
from shared.services.sync import SyncService
from tests.fake_repositories import FakeLeases, FakeSyncState, FakeUsers
from tests.fakes import FakeAuditSink, FakeClock, FakeSecretStore, FakeWorkQueue
from tests.unit.test_sync_service import conn, rows, tenant, user


@pytest.fixture
def fakes() -> tuple[SyncService, Directory, FakeSyncState, FakeLeases, FakeClock]:
    clock = FakeClock()
    directory, state, leases = Directory(FakeUsers(groups=4)), FakeSyncState(), FakeLeases(clock)
    service = SyncService(directory=directory, state=state, leases=leases, audit=FakeAuditSink(),
                          queue=FakeWorkQueue(), clock=clock, secrets=FakeSecretStore(clock))
    return service, directory, state, leases, clock


async def test_a_full_run_then_incremental_runs_on_the_fakes(fakes: Any) -> None:
    service, directory, state, leases, _ = fakes
    entra = tenant(250)
    report = await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    assert (report.outcome, report.mode, report.added) == ("completed", "full", 250)
    assert (await state.delta("demo")).rows == 250
    entra.remove_member("gA", "u0000")
    entra.add_user(user(900), "gB")
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert (report.mode, report.added, report.removed) == ("incremental", 1, 1)
    stored = await rows(directory)
    assert stored["u0000"].state is UserState.DEACTIVATED
    assert "u0900" in stored
    assert (await service.last_run("demo"))["runId"] == "r2"
    assert await leases.holder("sync", "demo") is None  # given back
    # The engine audits each removal through the run's bound context.
    removed = [r for r in service._audit.records if r.action == "user.removed"]
    assert [(r.target, r.outcome, r.correlation_id, r.detail["runId"]) for r in removed] == [
        ("u0000", "deactivated", "c2", "r2")]


async def test_a_held_lease_refuses_a_second_run(fakes: Any) -> None:
    service, _, _, leases, clock = fakes
    await leases.take("sync", "demo", "other-run", 120)
    with pytest.raises(Conflict, match="other-run"):
        await service.run(conn(), tenant(1), run_id="r1", correlation_id="c")
    status = await service.status("demo")
    assert status.running is not None
    assert status.running["runId"] == "other-run"
    clock.advance(minutes=3)
    assert (await service.run(conn(), tenant(1), run_id="r1", correlation_id="c")).outcome == "completed"
