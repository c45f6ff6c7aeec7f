"""A user deleted in Entra stays `missing_in_entra` on later runs (their delta no longer reports the deletion),
and comes back active when restored into a sync group."""

from __future__ import annotations

from shared.adapters.leases import TableLeases
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import TableUsers
from shared.domain.directory import UserState
from shared.services.directory import Directory
from shared.services.sync import SyncService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.unit.test_sync_service import SYNC, FakeEntra, conn, user


async def test_a_deleted_user_stays_missing_then_returns_when_restored() -> None:
    store = FakeEntityStore()
    directory = Directory(TableUsers(store))
    clock = FakeClock()
    service = SyncService(directory=directory, state=TableSyncState(store), leases=TableLeases(store, clock),
                          audit=FakeAuditSink(), queue=FakeWorkQueue(), clock=clock)
    entra = FakeEntra()
    for n in range(20):
        entra.add_user(user(n), SYNC)
    settings = conn(removal="deactivate", removalThreshold={"percent": 50, "absolute": 10})
    await service.run(settings, entra, run_id="r1", correlation_id="c")
    gone = entra.accounts["u0003"]
    entra.delete_user("u0003")
    second = await service.run(settings, entra, run_id="r2", correlation_id="c")
    assert (second.mode, second.removed, second.missing_in_entra) == ("incremental", 1, 1)
    entra.update_user("u0004", displayName="Someone else")
    third = await service.run(settings, entra, run_id="r3", correlation_id="c")
    assert (third.removed, third.updated) == (0, 1)
    row = await directory.get("demo", "u0003")
    assert row is not None
    assert row.state is UserState.MISSING_IN_ENTRA
    entra.add_user(gone, SYNC)
    fourth = await service.run(settings, entra, run_id="r4", correlation_id="c")
    assert fourth.updated == 1
    back = await directory.get("demo", "u0003")
    assert back is not None
    assert back.state is UserState.ACTIVE
