"""Sync runs against a fake of the DirectoryReader port: full and incremental reads, nesting, safety, leases."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from shared.adapters.leases import TableLeases
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import UserState
from shared.errors import BridgeError, Configuration, Conflict, Stop, Transient, root_cause
from shared.services import sync as sync_service
from shared.services.directory import Directory
from shared.services.ports import DeltaRead, GroupChange, JsonObject, SyncUser, UserChange
from shared.services.sync import LEASE, SyncService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeSecretStore, FakeWorkQueue
from tests.fakes_graph import MemoryTenant

SYNC = "11111111-0000-4000-8000-000000000001"
ROTATION = "11111111-0000-4000-8000-000000000002"
NAMES = {"Bridge Sync": SYNC, "Bridge Rotation": ROTATION}


def conn(**sync: Any) -> Connection:
    return Connection.model_validate({
        "name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"], **sync},
                     "rotation": {"enabled": True, "group": "Bridge Rotation"}},
    })


def user(n: int, **extra: Any) -> JsonObject:
    return {"id": f"u{n:04d}", "userPrincipalName": f"user{n}@contoso.example", "displayName": f"User {n}",
            "accountEnabled": True, **extra}


class FakeEntra:
    """The shared memory tenant (tests/fakes_graph.py) behind the DirectoryReader port, by the names these tests
    use: `accounts` (users by id, Graph's properties), `groups` (direct members by group id), `fail` (a call whose
    page stops the read), `expired` (every delta link answers Gone) and `calls` (the port calls made)."""

    def __init__(self) -> None:
        self.tenant = MemoryTenant()
        self.reader = self.tenant.directory()
        self.fail: str | None = None
        #: The port calls made, by name.
        self.calls: list[str] = []

    @property
    def accounts(self) -> dict[str, JsonObject]:
        return self.tenant.users

    @accounts.setter
    def accounts(self, value: dict[str, JsonObject]) -> None:
        self.tenant.users = value

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.tenant.members

    @groups.setter
    def groups(self, value: dict[str, list[str]]) -> None:
        self.tenant.members = value

    @property
    def expired(self) -> bool:
        return self.tenant.delta_gone

    @expired.setter
    def expired(self, value: bool) -> None:
        self.tenant.delta_gone = value

    @property
    def resource_units(self) -> int:
        return self.reader.resource_units

    @resource_units.setter
    def resource_units(self, value: int) -> None:
        self.reader.resource_units = value

    # -- changes, as an admin would make them
    def add_user(self, item: JsonObject, *groups: str) -> None:
        self.tenant.add_user(item, *groups)

    def add_member(self, group: str, member: str) -> None:
        self.tenant.add_member(group, member)

    def remove_member(self, group: str, member: str) -> None:
        self.tenant.remove_member(group, member)

    def update_user(self, user_id: str, **changes: Any) -> None:
        self.tenant.update_user(user_id, **changes)

    def delete_user(self, user_id: str) -> None:
        self.tenant.delete_user(user_id)

    # -- the port
    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.fail == name:
            raise Stop(f"a page of {name} has no 'value'")

    async def group_id(self, name_or_id: str) -> str:
        return NAMES.get(name_or_id, name_or_id)

    async def transitive_users(self, group_id: str) -> AsyncIterator[SyncUser]:
        self._check("transitive_users")
        async for found in self.reader.transitive_users(group_id):
            yield found

    async def count_users(self, group_id: str) -> int | None:
        self._check("count_users")
        return await self.reader.count_users(group_id)

    async def groups_delta(self, ids: Sequence[str] | None = None,
                           link: str | None = None) -> DeltaRead[GroupChange]:
        self._check("groups_delta")
        return await self.reader.groups_delta(ids, link)

    async def users_delta_latest(self) -> str:
        self._check("users_delta_latest")
        return await self.reader.users_delta_latest()

    async def users_delta(self, link: str) -> DeltaRead[UserChange]:
        self._check("users_delta")
        return await self.reader.users_delta(link)

    async def users(self, ids: Sequence[str]) -> list[SyncUser]:
        self._check("users")
        return await self.reader.users(ids)


def tenant(n: int = 30) -> FakeEntra:
    """SYNC holds A and B; A holds C (depth 2). Users spread over A, B and C; ROTATION holds u0001."""
    entra = FakeEntra()
    entra.groups = {SYNC: ["gA", "gB"], "gA": ["gC"], "gB": [], "gC": [], ROTATION: []}
    for i in range(n):
        entra.accounts[f"u{i:04d}"] = user(i)
        entra.groups[("gA", "gB", "gC")[i % 3]].append(f"u{i:04d}")
    entra.groups[ROTATION].append("u0001")
    return entra


@dataclass
class Stored:
    """The repositories a sync service of `world` keeps its state and lease in, for tests to read through."""

    clock: FakeClock
    state: TableSyncState
    leases: TableLeases
    users: TableUsers


@pytest.fixture
def stored() -> Stored:
    clock = FakeClock()
    entities = FakeEntityStore()
    return Stored(clock, TableSyncState(entities), TableLeases(entities, clock), TableUsers(entities))


@pytest.fixture
def world(stored: Stored) -> tuple[SyncService, Directory, FakeAuditSink, FakeSecretStore, FakeClock]:
    clock = stored.clock
    directory = Directory(stored.users)
    audit = FakeAuditSink()
    secrets = FakeSecretStore(clock)
    return SyncService(directory=directory, state=stored.state, leases=stored.leases,
                       audit=audit, queue=FakeWorkQueue(), clock=clock,
                       secrets=secrets), directory, audit, secrets, clock


async def rows(directory: Directory) -> dict[str, Any]:
    return {r.id: r async for r in directory.all("demo")}


async def test_first_run_imports_nested_users_with_rotation_membership(world: Any) -> None:
    service, directory, _, _, _ = world
    report = await service.run(conn(), tenant(), run_id="r1", correlation_id="c1")
    assert (report.outcome, report.mode, report.added, report.removed) == ("completed", "full", 30, 0)
    stored = await rows(directory)
    assert stored["u0001"].in_rotation_group
    assert not stored["u0002"].in_rotation_group
    assert stored["u0002"].domain == "contoso.example"
    assert stored["u0002"].groups == [SYNC]
    assert (await service.last_run("demo"))["added"] == 30


async def test_a_run_without_changes_reads_only_the_delta_links(world: Any) -> None:
    service, _, _, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.calls.clear()
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert (report.mode, report.added, report.updated, report.removed, report.unchanged) == \
        ("incremental", 0, 0, 0, 30)
    assert sorted(set(entra.calls)) == ["groups_delta", "users_delta"]
    # One filtered query per level of nesting found by the first run (each level's first round gave a link).
    assert entra.calls.count("groups_delta") == 3


async def test_a_user_moved_between_nested_groups_is_seen_by_the_next_run(world: Any) -> None:
    service, directory, _, _, _ = world
    entra = tenant()
    entra.groups["outside"] = []
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.remove_member("gC", "u0002")  # out of the deepest group...
    entra.add_member("gB", "u0002")  # ...into another nested group: still in scope
    entra.remove_member("gA", "u0000")
    entra.add_member("outside", "u0000")  # out of scope
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    stored = await rows(directory)
    assert stored["u0002"].state is UserState.ACTIVE
    assert stored["u0000"].state is UserState.DEACTIVATED
    assert (report.mode, report.removed) == ("incremental", 1)


async def test_a_new_nested_group_and_its_users_are_imported(world: Any) -> None:
    service, directory, _, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.groups["gD"] = []
    entra.add_user(user(500), "gD")
    entra.add_member("gC", "gD")  # gD nested at depth 3
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert report.added == 1
    assert (await rows(directory))["u0500"].groups == [SYNC]
    entra.add_user(user(501), "gD")  # gD is now tracked by its own delta link
    report = await service.run(conn(), entra, run_id="r3", correlation_id="c3")
    assert report.added == 1


async def test_attribute_changes_disabled_and_deleted_users(world: Any) -> None:
    service, directory, audit, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.update_user("u0003", displayName="Renamed")
    entra.update_user("u0004", accountEnabled=False)
    entra.delete_user("u0005")
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    stored = await rows(directory)
    assert stored["u0003"].display_name == "Renamed"
    assert stored["u0004"].state is UserState.DEACTIVATED
    assert stored["u0005"].state is UserState.MISSING_IN_ENTRA
    assert report.missing_in_entra == 1
    assert "user.missingInEntra" in audit.actions()


async def test_an_expired_delta_token_leads_to_a_full_resync(world: Any) -> None:
    service, directory, _, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.add_user(user(700), "gB")
    entra.expired = True
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert report.mode == "full"
    assert "expired" in (report.resynced or "")
    assert report.added == 1
    entra.expired = False
    assert (await service.run(conn(), entra, run_id="r3", correlation_id="c3")).mode == "incremental"
    assert len(await rows(directory)) == 31


@pytest.mark.parametrize("failing", ["transitive_users", "groups_delta", "users_delta"])
async def test_an_incomplete_read_removes_nothing(world: Any, failing: str) -> None:
    service, directory, audit, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    if failing == "transitive_users":
        await service.forget_state("demo")
    for uid in list(entra.accounts)[:20]:
        entra.delete_user(uid)
    entra.fail = failing
    with pytest.raises(Stop, match="incomplete read"):
        await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert all(r.state is UserState.ACTIVE for r in (await rows(directory)).values())
    assert "sync.aborted" in audit.actions()
    assert (await service.last_run("demo"))["outcome"] == "aborted"


async def test_removals_above_the_threshold_stop_the_run_and_are_read_again(world: Any) -> None:
    service, directory, audit, _, _ = world
    entra = tenant(100)
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    entra.remove_member(SYNC, "gA")
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert report.outcome == "blocked"
    assert "removalThreshold" in (report.alert or "")
    assert all(r.state is UserState.ACTIVE for r in (await rows(directory)).values())
    assert "sync.blocked" in audit.actions()
    # The delta links were not advanced: the same change blocks again instead of being forgotten.
    assert (await service.run(conn(), entra, run_id="r3", correlation_id="c3")).outcome == "blocked"
    report = await service.run(conn(removalThreshold={"percent": 100, "absolute": 1000}), entra, run_id="r4",
                               correlation_id="c4")
    assert (report.outcome, report.removed) == ("completed", 67)


async def test_delete_behaviour_soft_deletes_the_managed_password(world: Any) -> None:
    service, directory, audit, secrets, _ = world
    entra = tenant()
    await service.run(conn(removal="delete"), entra, run_id="r1", correlation_id="c")
    await secrets.put("pwd-demo-u0000", "x", tags={"state": "current"})
    entra.remove_member("gA", "u0000")
    await service.run(conn(removal="delete"), entra, run_id="r2", correlation_id="c")
    assert (await rows(directory))["u0000"].state is UserState.REMOVED
    assert "pwd-demo-u0000" in secrets.deleted
    removed = [r for r in audit.records if r.action == "user.removed"]
    assert removed[0].detail["secretSoftDeleted"] is True
    assert removed[0].detail["passkeysToRevoke"] is True


async def test_keep_behaviour_leaves_departed_users_alone(world: Any) -> None:
    service, directory, _, _, _ = world
    entra = tenant()
    await service.run(conn(removal="keep"), entra, run_id="r1", correlation_id="c")
    entra.remove_member("gA", "u0000")
    report = await service.run(conn(removal="keep"), entra, run_id="r2", correlation_id="c")
    assert report.removed == 0
    assert (await rows(directory))["u0000"].state is UserState.ACTIVE


async def test_leaving_the_rotation_group_stops_rotation(world: Any) -> None:
    service, directory, _, _, _ = world
    entra = tenant()
    await service.run(conn(), entra, run_id="r1", correlation_id="c")
    entra.remove_member(ROTATION, "u0001")
    entra.add_member(ROTATION, "gC")  # nested: every user of gC becomes eligible
    await service.run(conn(), entra, run_id="r2", correlation_id="c")
    stored = await rows(directory)
    assert not stored["u0001"].in_rotation_group
    assert stored["u0002"].in_rotation_group
    assert stored["u0005"].in_rotation_group


async def test_dry_run_writes_nothing(world: Any, stored: Stored) -> None:
    service, directory, _, _, _ = world
    report = await service.run(conn(), tenant(10), run_id="r1", correlation_id="c", dry_run=True)
    assert (report.outcome, report.added) == ("dry-run", 10)
    assert await rows(directory) == {}
    assert await stored.state.delta("demo") is None  # no links, no group tree


async def test_one_run_at_a_time(world: Any) -> None:
    service, _, _, _, clock = world
    await service._take_lease("demo", "other-run")
    with pytest.raises(Conflict, match="is running"):
        await service.run(conn(), tenant(1), run_id="r1", correlation_id="c")
    clock.advance(minutes=11)
    assert (await service.run(conn(), tenant(1), run_id="r1", correlation_id="c")).outcome == "completed"


async def test_the_tree_of_a_large_group_is_kept_and_shrinks(world: Any, stored: Stored) -> None:
    # How the adapter spreads a large group over rows is its own test (tests/integration/storage).
    service, _, _, _, _ = world
    entra = tenant(0)
    for i in range(2000):
        entra.accounts[f"u{i:04d}"] = user(i)
        entra.groups["gB"].append(f"u{i:04d}")
    await service.run(conn(removalThreshold={"percent": 100, "absolute": 5000}), entra, run_id="r1",
                      correlation_id="c")
    kept = await stored.state.delta("demo")
    assert kept is not None
    assert len(kept.tree.users["gB"]) == 2000
    for uid in [f"u{i:04d}" for i in range(1000)]:
        entra.remove_member("gB", uid)
    report = await service.run(conn(removalThreshold={"percent": 100, "absolute": 5000}), entra, run_id="r2",
                               correlation_id="c")
    assert (report.mode, report.removed) == ("incremental", 1000)
    kept = await stored.state.delta("demo")
    assert kept is not None
    assert kept.tree.users["gB"] == {f"u{i:04d}" for i in range(1000, 2000)}
    assert (await service.run(conn(), entra, run_id="r3", correlation_id="c")).unchanged == 1000


class BrokenEntra(FakeEntra):
    """A tenant the bridge cannot read at all: every call raises `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def group_id(self, name_or_id: str) -> str:
        raise self.error


async def test_a_token_failure_is_a_failed_run_with_the_setting_to_fix(world: Any) -> None:
    service, directory, audit, _, _ = world
    refused = Configuration("connection 'demo' cannot get a token for https://graph.microsoft.us: ... - check the "
                            "connection's `cloud`", setting="CONNECTIONS")
    with pytest.raises(Configuration):
        await service.run(conn(), BrokenEntra(refused), run_id="r1", correlation_id="c1")
    status = await service.status("demo")
    assert status.running is None
    assert status.last_run is not None
    assert status.last_run["outcome"] == "failed"
    assert status.last_run["problem"]["type"] == "urn:entra-bridge:problem:configuration"
    assert status.last_run["problem"]["setting"] == "CONNECTIONS"
    assert status.problems() == [f"sync failed: {refused.detail} (setting CONNECTIONS)"]
    assert "sync.failed" in audit.actions()
    assert "sync.aborted" not in audit.actions()
    assert await rows(directory) == {}


async def test_an_unexpected_exception_is_translated_and_recorded_without_its_text(world: Any) -> None:
    service, _, audit, _, _ = world
    with pytest.raises(BridgeError) as raised:
        await service.run(conn(), BrokenEntra(RuntimeError("sig=SECRETVALUE")), run_id="r1", correlation_id="c1")
    assert type(raised.value) is BridgeError
    last = await service.last_run("demo")
    assert last is not None
    assert last["outcome"] == "failed"
    assert "RuntimeError" in last["problem"]["detail"]
    assert "SECRETVALUE" not in str(last)
    assert "SECRETVALUE" not in str([r.detail for r in audit.records])
    assert (await service.status("demo")).running is None
    # The lease was released: the next run starts at once.
    assert (await service.run(conn(), tenant(3), run_id="r2", correlation_id="c2")).outcome == "completed"


async def test_a_transient_failure_while_reading_is_an_aborted_run(world: Any) -> None:
    service, _, audit, _, _ = world
    with pytest.raises(Stop) as raised:
        await service.run(conn(), BrokenEntra(Transient("Graph did not answer")), run_id="r1", correlation_id="c1")
    assert root_cause(raised.value).retryable
    last = await service.last_run("demo")
    assert last is not None
    assert (last["outcome"], last["problem"]["type"]) == ("aborted", "urn:entra-bridge:problem:transient")
    assert "sync.aborted" in audit.actions()


async def test_running_comes_from_a_live_lease_only(world: Any) -> None:
    service, _, _, _, clock = world
    await service._take_lease("demo", "other-run")
    running = (await service.status("demo")).running
    assert running is not None
    assert running["runId"] == "other-run"
    clock.advance(seconds=LEASE.total_seconds() + 1)  # the run died: its lease was not renewed
    assert (await service.status("demo")).running is None


async def test_a_run_record_left_as_running_by_a_dead_run_shows_as_failed(world: Any) -> None:
    service, _, _, _, _ = world
    await service._state.put_run("demo", {"runId": "r0", "outcome": "running"})
    status = await service.status("demo")
    assert status.last_run is not None
    assert status.last_run["outcome"] == "failed"
    assert status.problems() == ["sync failed: the run ended without recording its outcome"]


class SlowEntra(FakeEntra):
    """A tenant whose first read takes a while, with something to do meanwhile."""

    def __init__(self, meanwhile: Any) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    async def group_id(self, name_or_id: str) -> str:
        if self.meanwhile is not None:  # once, even when the groups are looked up side by side
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return await super().group_id(name_or_id)


async def test_a_long_run_renews_its_lease_and_releases_it(world: Any, stored: Stored,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    service, _, _, _, clock = world
    monkeypatch.setattr(sync_service, "LEASE_RENEWAL", dt.timedelta(milliseconds=10))
    seen: list[dt.datetime] = []

    async def meanwhile() -> None:
        clock.advance(seconds=LEASE.total_seconds() - 1)
        await asyncio.sleep(0.1)
        held = await stored.leases.holder("sync", "demo")
        assert held is not None
        seen.append(held.until)

    entra = SlowEntra(meanwhile)
    entra.groups, entra.accounts = tenant(3).groups, tenant(3).accounts
    assert (await service.run(conn(), entra, run_id="r1", correlation_id="c1")).outcome == "completed"
    assert seen == [clock.now() + LEASE]  # renewed from the new now, not left at the first until
    assert await stored.leases.holder("sync", "demo") is None  # given back
    assert (await service.status("demo")).running is None


async def test_a_run_whose_lease_was_taken_over_writes_nothing(world: Any, stored: Stored,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    service, directory, _, _, clock = world
    monkeypatch.setattr(sync_service, "LEASE_RENEWAL", dt.timedelta(milliseconds=10))

    async def stolen() -> None:
        clock.advance(seconds=LEASE.total_seconds() + 1)  # this run looked dead: another took the lease
        await service._take_lease("demo", "thief")
        await asyncio.sleep(0.1)

    entra = SlowEntra(stolen)
    entra.groups, entra.accounts = tenant(3).groups, tenant(3).accounts
    with pytest.raises(Conflict, match="taken over"):
        await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    assert await rows(directory) == {}
    held = await stored.leases.holder("sync", "demo")
    assert held is not None
    assert held.owner == "thief"
    assert (await service.last_run("demo"))["outcome"] == "failed"
