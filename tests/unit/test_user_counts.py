"""The users per state that status shows are kept by the directory's writes (shared/services/directory.py):
status reads them without reading a user row, sync's runs keep them exact without reading rows for them,
and a complete scan (a full sync's sweep, rotation's) counts them again when they fell behind."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from shared.config import Connection
from shared.domain.directory import UserRow, UserState
from shared.services.directory import Directory
from shared.services.ports import Versioned
from shared.services.status import StatusService
from shared.services.sync import SyncReport, SyncService
from tests.fake_repositories import FakeLeases, FakeSyncState, FakeUsers
from tests.fakes import FakeAuditSink, FakeClock, FakeSecretStore, FakeWorkQueue
from tests.unit.test_sync_service import tenant, user


class WatchedUsers(FakeUsers):
    """The in-memory users, counting the user rows read by id; reading any row fails while `forbidden`."""

    def __init__(self) -> None:
        super().__init__(groups=4)
        self.forbidden = False
        self.point_reads = 0

    def _read(self, count: int = 1) -> None:
        assert not self.forbidden, "a user row was read"
        self.point_reads += count

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        self._read()
        return await super().get(connection, user_id)

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        wanted = list(user_ids)
        self._read(len(wanted))
        return await super().get_many(connection, wanted)

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        assert not self.forbidden, "user rows were scanned"
        async for row in super().scan(connection):
            yield row

    async def is_empty(self, connection: str) -> bool:
        assert not self.forbidden, "a user row was looked for"
        return await super().is_empty(connection)


def conn(**sync: Any) -> Connection:
    return Connection.model_validate({
        "name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"], "removal": "delete",
                              "removalThreshold": {"percent": 100, "absolute": 1000}, **sync}}})


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.users = WatchedUsers()
        self.directory = Directory(self.users)
        self.sync = SyncService(directory=self.directory, state=FakeSyncState(), leases=FakeLeases(self.clock),
                                audit=FakeAuditSink(), queue=FakeWorkQueue(), clock=self.clock,
                                secrets=FakeSecretStore(self.clock))

    async def run(self, entra: Any, *, full: bool = False) -> SyncReport:
        report = await self.sync.run(conn(), entra, run_id="r", correlation_id="c", full=full)
        assert report.outcome == "completed", report
        return report

    def truth(self) -> dict[str, int]:
        """The counts of the stored rows, as status shows none of them zero but `total`."""
        stored = self.users.rows.get("demo", {}).values()
        return {"total": len(stored), **Counter(r.state.value for r in stored)}

    async def status(self) -> dict[str, Any]:
        async def nothing(_: object) -> Any:
            return None

        async def no_problems(_: str) -> list[Any]:
            return []

        service = StatusService(sync=self.sync, rotation=lambda: pytest.fail("rotation is off"),
                                directory=self.directory, federation_watch=no_problems,
                                writes_paused_until=nothing, passkey_enrollment=nothing, job_problems=no_problems)
        return await service.status(conn())


async def test_status_shows_the_kept_counts_without_reading_a_user_row() -> None:
    world = World()
    entra = tenant(30)
    await world.run(entra)
    entra.update_user("u0001", accountEnabled=False)
    entra.remove_member("gB", "u0004")
    entra.delete_user("u0005")
    await world.run(entra)
    world.users.forbidden = True
    users = (await world.status())["users"]
    assert users == {"total": 30, "active": 27, "deactivated": 1, "removed": 1, "missingInEntra": 1}
    assert await world.directory.counts("demo") == world.truth()


async def test_sync_keeps_the_counts_exact_without_reading_rows_for_them() -> None:
    world = World()
    entra = tenant(120)
    await world.run(entra)  # a first import: the directory was found empty, no row is read for the counts
    assert world.users.point_reads == 0
    assert await world.directory.counts("demo") == world.truth()
    for n in range(6):
        entra.update_user(f"u{n:04d}", accountEnabled=n % 2 == 0)
    entra.add_user(user(500), "gA")
    entra.remove_member("gA", "u0009")
    entra.delete_user("u0010")
    world.users.point_reads = 0
    report = await world.run(entra)
    # An incremental run reads the rows of the users its changes concern, once: the counts need no more.
    assert (report.mode, report.rows_read) == ("incremental", 9)
    assert world.users.point_reads == 9
    assert await world.directory.counts("demo") == world.truth()
    entra.update_user("u0001", accountEnabled=True)  # enabled again
    await world.run(entra, full=True)
    assert await world.directory.counts("demo") == world.truth()


async def test_a_full_resync_counts_again_counts_left_behind() -> None:
    world = World()
    entra = tenant(40)
    await world.run(entra)
    kept = await world.users.state_counts("demo")
    assert kept is not None
    # A process stopped between its rows and their counts: the counts fell behind.
    await world.users.put_state_counts("demo", Versioned({"total": 3, "active": 3}, kept.version))
    other = Directory(world.users)  # a fresh process
    assert await other.counts("demo") == {"total": 3, "active": 3}
    await world.run(entra, full=True)
    assert await world.directory.counts("demo") == world.truth() == {"total": 40, "active": 40}


async def test_a_complete_scan_counts_again_and_a_partial_one_does_not() -> None:
    world = World()
    for n in range(5):
        await world.directory.put("demo", UserRow(id=f"u{n}", upn=f"u{n}@contoso.example"))
    assert await world.directory.counts("demo") == {"total": 5, "active": 5}
    await world.users.put("demo", UserRow(id="u9", upn="u9@contoso.example", state=UserState.REMOVED))  # behind
    assert await world.directory.find("demo", "u0@contoso.example") is not None  # stops early: counts nothing
    assert await world.directory.counts("demo") == {"total": 5, "active": 5}
    assert len([row async for row in world.directory.all("demo")]) == 6  # rotation's scan, say
    assert await world.directory.counts("demo") == {"total": 6, "active": 5, "removed": 1}
    await world.directory.delete("demo", "u9")
    await world.directory.put("demo", UserRow(id="u1", upn="u1@contoso.example", state=UserState.DEACTIVATED))
    assert await world.directory.counts("demo") == {"total": 5, "active": 4, "deactivated": 1}


async def test_users_written_before_counts_were_kept_are_counted_once() -> None:
    world = World()
    for n in range(4):  # stored by a version that kept no counts
        await world.users.put("demo", UserRow(id=f"u{n}", upn=f"u{n}@contoso.example"))
    assert await world.directory.counts("demo") is None
    status = await world.status()
    assert status["users"] == {"total": 0}
    await world.directory.put("demo", UserRow(id="u1", upn="u1@contoso.example", state=UserState.DEACTIVATED))
    assert await world.directory.counts("demo") == {"total": 4, "active": 3, "deactivated": 1}
