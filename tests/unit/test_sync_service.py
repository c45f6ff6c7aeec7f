"""Sync planning and runs against fakes: complete reads only, thresholds, removal behaviours, leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.config import Connection
from shared.domain.directory import UserState
from shared.errors import Conflict, Stop
from shared.services.directory import Directory
from shared.services.ports import JsonObject
from shared.services.sync import SyncService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeSecretStore, FakeWorkQueue

SYNC_GROUP = "11111111-0000-4000-8000-000000000001"
ROTATION_GROUP = "11111111-0000-4000-8000-000000000002"


def conn(**sync: Any) -> Connection:
    return Connection.model_validate({
        "name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"], **sync},
                     "rotation": {"enabled": True, "group": "Bridge Rotation"}},
    })


def user(n: int, **extra: Any) -> JsonObject:
    return {"id": f"u{n:04d}", "userPrincipalName": f"user{n}@contoso.example", "displayName": f"User {n}",
            "accountEnabled": True, **extra}


class Reader:
    def __init__(self, users: list[JsonObject], rotation: set[str] | None = None, fail_after: int | None = None):
        self.users = users
        self.rotation = rotation or set()
        self.fail_after = fail_after
        self.resource_units = 0

    async def group_id(self, name_or_id: str) -> str:
        return {"Bridge Sync": SYNC_GROUP, "Bridge Rotation": ROTATION_GROUP}[name_or_id]

    async def transitive_users(self, group_id: str) -> AsyncIterator[JsonObject]:
        for i, item in enumerate(self.users):
            if self.fail_after is not None and i == self.fail_after:
                raise Stop("a page of /groups/x/transitiveMembers has no 'value'")
            self.resource_units += 1
            yield item

    async def transitive_user_ids(self, group_id: str) -> set[str]:
        return set(self.rotation)


@pytest.fixture
def world() -> tuple[SyncService, Directory, FakeAuditSink, FakeSecretStore, FakeClock]:
    clock = FakeClock()
    entities = FakeEntityStore()
    directory = Directory(entities)
    audit = FakeAuditSink()
    secrets = FakeSecretStore(clock)
    return SyncService(directory=directory, entities=entities, audit=audit, queue=FakeWorkQueue(), clock=clock,
                       secrets=secrets), directory, audit, secrets, clock


async def rows(directory: Directory) -> dict[str, Any]:
    return {r.id: r async for r in directory.all("demo")}


async def test_first_run_imports_users_with_rotation_membership(world: Any) -> None:
    service, directory, _, _, _ = world
    report = await service.run(conn(), Reader([user(n) for n in range(30)], rotation={"u0001"}), run_id="r1",
                               correlation_id="c1")
    assert (report.outcome, report.added, report.removed) == ("completed", 30, 0)
    stored = await rows(directory)
    assert stored["u0001"].in_rotation_group
    assert not stored["u0002"].in_rotation_group
    assert stored["u0002"].domain == "contoso.example"
    assert (await service.last_run("demo"))["added"] == 30


async def test_second_run_updates_and_deactivates_departed_users(world: Any) -> None:
    service, directory, audit, _, clock = world
    await service.run(conn(), Reader([user(n) for n in range(30)]), run_id="r1", correlation_id="c1")
    clock.advance(minutes=15)
    users = [user(n) for n in range(1, 30)]
    users[0] = user(1, displayName="Renamed")
    report = await service.run(conn(), Reader(users), run_id="r2", correlation_id="c2")
    assert (report.updated, report.removed, report.unchanged) == (1, 1, 28)
    stored = await rows(directory)
    assert stored["u0000"].state is UserState.DEACTIVATED
    assert stored["u0001"].display_name == "Renamed"
    assert "user.removed" in audit.actions()


async def test_an_incomplete_read_removes_nothing(world: Any) -> None:
    service, directory, audit, _, _ = world
    await service.run(conn(), Reader([user(n) for n in range(30)]), run_id="r1", correlation_id="c1")
    with pytest.raises(Stop, match="incomplete read"):
        await service.run(conn(), Reader([user(n) for n in range(30)], fail_after=5), run_id="r2",
                          correlation_id="c2")
    assert all(r.state is UserState.ACTIVE for r in (await rows(directory)).values())
    assert "sync.aborted" in audit.actions()
    assert (await service.last_run("demo"))["outcome"] == "aborted"


async def test_removals_above_the_threshold_stop_the_run(world: Any) -> None:
    service, directory, audit, _, _ = world
    await service.run(conn(), Reader([user(n) for n in range(100)]), run_id="r1", correlation_id="c1")
    report = await service.run(conn(), Reader([user(n) for n in range(50)]), run_id="r2", correlation_id="c2")
    assert report.outcome == "blocked"
    assert "removalThreshold" in (report.alert or "")
    assert all(r.state is UserState.ACTIVE for r in (await rows(directory)).values())
    assert "sync.blocked" in audit.actions()


async def test_delete_behaviour_soft_deletes_the_managed_password(world: Any) -> None:
    service, directory, audit, secrets, _ = world
    await service.run(conn(removal="delete"), Reader([user(n) for n in range(30)]), run_id="r1", correlation_id="c")
    await secrets.put("pwd-demo-u0000", "x", tags={"state": "current"})
    await service.run(conn(removal="delete"), Reader([user(n) for n in range(1, 30)]), run_id="r2",
                      correlation_id="c")
    assert (await rows(directory))["u0000"].state is UserState.REMOVED
    assert "pwd-demo-u0000" in secrets.deleted
    removed = [r for r in audit.records if r.action == "user.removed"]
    assert removed[0].detail["secretSoftDeleted"] is True


async def test_dry_run_writes_nothing(world: Any) -> None:
    service, directory, _, _, _ = world
    report = await service.run(conn(), Reader([user(n) for n in range(10)]), run_id="r1", correlation_id="c",
                               dry_run=True)
    assert (report.outcome, report.added) == ("dry-run", 10)
    assert await rows(directory) == {}


async def test_one_run_at_a_time(world: Any) -> None:
    service, _, _, _, clock = world
    await service._take_lease("demo", "other-run")
    with pytest.raises(Conflict, match="is running"):
        await service.run(conn(), Reader([user(1)]), run_id="r1", correlation_id="c")
    clock.advance(minutes=11)
    assert (await service.run(conn(), Reader([user(1)]), run_id="r1", correlation_id="c")).outcome == "completed"
