"""Incremental planning from the changed objects only (docs/sync.md, How a run works): nested moves, deletions,
restores, a user in two groups losing one, rotation-group changes, a full resync after an expired delta token,
the enrollment-state groups, and rows read in proportion to the changes, not to the directory.

The strongest check is the last one of each scenario: a full run (`full=True`) over the directory an incremental
run left must find nothing to add, update or remove."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from shared.adapters import users as users_adapter
from shared.adapters.leases import TableLeases
from shared.adapters.ownership import TableGroupRecords
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import PARTITIONS, TableUsers
from shared.config import Connection
from shared.domain.directory import Enrollment, UserState
from shared.domain.sync import GroupTree, SeenIds, affected_users
from shared.errors import Gone, PermissionDenied, Transient
from shared.services import sync as sync_module
from shared.services.directory import Directory
from shared.services.enrollment_groups import EnrollmentGroups
from shared.services.ports import DeltaRead, Entity, GroupChange, MemberChange, SyncUser, UserChange
from shared.services.sync import SyncReport, SyncService
from shared.topology import USERS_TABLES, Table
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeSecretStore, FakeWorkQueue
from tests.unit.test_enrollment_uninstall import Groups
from tests.unit.test_sync_service import ROTATION, SYNC, FakeEntra, conn, tenant, user

SYNC2 = "11111111-0000-4000-8000-000000000003"


class CountingStore(FakeEntityStore):
    """Counts the `users` rows read: point reads and rows returned by queries."""

    def __init__(self) -> None:
        super().__init__()
        self.point_reads = 0
        self.rows_listed = 0

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        if table in USERS_TABLES:
            self.point_reads += 1
        return await super().get(table, partition_key, row_key)

    async def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
                    row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        async for row in super().query(table, partition_key, row_key_from=row_key_from, row_key_to=row_key_to,
                                       limit=limit):
            if table in USERS_TABLES:
                self.rows_listed += 1
            yield row

    async def query_partitions(self, table: Table, first: str, last: str, *,
                               limit: int | None = None) -> AsyncIterator[Entity]:
        async for row in super().query_partitions(table, first, last, limit=limit):
            if table in USERS_TABLES:
                self.rows_listed += 1
            yield row

    def reset(self) -> None:
        self.point_reads = self.rows_listed = 0


class Tenant(FakeEntra):
    """FakeEntra with deleted groups, restored users and two sync groups."""

    def __init__(self) -> None:
        super().__init__()
        self.recycle: dict[str, Any] = {}

    async def group_id(self, name_or_id: str) -> str:
        return {"Bridge Sync": SYNC, "Bridge Sync 2": SYNC2, "Bridge Rotation": ROTATION}.get(name_or_id, name_or_id)

    def delete_group(self, group: str) -> None:
        self.tenant.delete_group(group)

    def move_group(self, group: str, old: str, new: str) -> None:
        self.remove_member(old, group)
        self.add_member(new, group)

    def delete_user(self, user_id: str) -> None:
        self.recycle[user_id] = ([g for g, m in self.groups.items() if user_id in m], dict(self.accounts[user_id]))
        super().delete_user(user_id)

    def restore_user(self, user_id: str) -> None:
        """Restored from deleted items: the account and its memberships come back."""
        groups, account = self.recycle.pop(user_id)
        self.tenant.add_user(account)
        for group in groups:
            if group in self.groups:
                self.add_member(group, user_id)


def fresh(n: int = 30) -> Tenant:
    """The tenant of tests/unit/test_sync_service.py (SYNC > gA > gC, SYNC > gB) as a Tenant."""
    entra = Tenant()
    made = tenant(n)
    entra.groups, entra.accounts = made.groups, made.accounts
    return entra


def two_roots(**sync: Any) -> Connection:
    return conn(groups=["Bridge Sync", "Bridge Sync 2"], **sync)


def world(store: FakeEntityStore | None = None, *, groups: bool = False) -> tuple[SyncService, Directory]:
    entities = store if store is not None else CountingStore()
    clock = FakeClock()
    audit = FakeAuditSink()
    enrollment = EnrollmentGroups(TableGroupRecords(entities), audit, clock) if groups else None
    service = SyncService(directory=Directory(TableUsers(entities)), state=TableSyncState(entities),
                          leases=TableLeases(entities, clock), audit=audit, queue=FakeWorkQueue(), clock=clock,
                          secrets=FakeSecretStore(clock), enrollment_groups=enrollment)
    return service, Directory(TableUsers(entities))


async def rows(directory: Directory) -> dict[str, Any]:
    return {r.id: r async for r in directory.all("demo")}


async def run(service: SyncService, entra: FakeEntra, connection: Connection | None = None, **kw: Any) -> SyncReport:
    return await service.run(connection or conn(), entra, run_id="r", correlation_id="c", **kw)


async def assert_consistent(service: SyncService, entra: FakeEntra, connection: Connection | None = None) -> None:
    """A full run over what the incremental runs left finds nothing to change."""
    report = await run(service, entra, connection, full=True)
    assert (report.mode, report.outcome) == ("full", "completed")
    assert (report.added, report.updated, report.removed) == (0, 0, 0), report.planned_ids


# ----------------------------------------------------------------------------- nested moves


async def test_a_nested_group_moved_into_and_out_of_a_sync_group() -> None:
    service, directory = world()
    entra = fresh()
    entra.groups["outside"] = ["gD"]
    entra.groups["gD"] = ["gE"]
    entra.groups["gE"] = []
    for n in (100, 101):
        entra.accounts[f"u{n:04d}"] = user(n)
    entra.groups["gD"].append("u0100")
    entra.groups["gE"].append("u0101")
    await run(service, entra)
    assert "u0100" not in await rows(directory)

    entra.move_group("gD", "outside", "gC")  # two levels moved in under the deepest nested group
    report = await run(service, entra)
    assert (report.mode, report.added, report.removed) == ("incremental", 2, 0)
    stored = await rows(directory)
    assert stored["u0100"].groups == [SYNC]
    assert stored["u0101"].state is UserState.ACTIVE
    await assert_consistent(service, entra)

    entra.add_user(user(102), "gE")  # now tracked through gE's own delta link
    assert (await run(service, entra)).added == 1

    entra.move_group("gD", "gC", "outside")  # and out again: its users leave scope
    report = await run(service, entra)
    assert (report.mode, report.removed) == ("incremental", 3)
    stored = await rows(directory)
    assert {stored[u].state for u in ("u0100", "u0101", "u0102")} == {UserState.DEACTIVATED}
    assert stored["u0002"].state is UserState.ACTIVE  # gC's own users stay
    await assert_consistent(service, entra)


async def test_a_user_moved_between_nested_groups_of_one_sync_group_reads_no_row() -> None:
    store = CountingStore()
    service, _directory = world(store)
    entra = fresh()
    await run(service, entra)
    entra.remove_member("gC", "u0002")
    entra.add_member("gB", "u0002")
    store.reset()
    report = await run(service, entra)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 30)
    assert (report.rows_read, store.point_reads, store.rows_listed) == (0, 0, 0)  # same sync group: no read


# ----------------------------------------------------------------------------- deletions and restores


async def test_a_user_deleted_in_entra_then_restored_from_deleted_items() -> None:
    service, directory = world()
    entra = fresh()
    await run(service, entra)
    first_seen = (await rows(directory))["u0004"].first_seen
    entra.delete_user("u0004")
    report = await run(service, entra)
    assert (report.removed, report.missing_in_entra) == (1, 1)
    assert (await rows(directory))["u0004"].state is UserState.MISSING_IN_ENTRA
    assert (await run(service, entra)).removed == 0  # stays missing, not removed again
    await assert_consistent(service, entra)

    entra.restore_user("u0004")
    report = await run(service, entra)
    assert (report.mode, report.updated, report.removed) == ("incremental", 1, 0)
    stored = (await rows(directory))["u0004"]
    assert (stored.state, stored.groups, stored.first_seen) == (UserState.ACTIVE, [SYNC], first_seen)
    await assert_consistent(service, entra)


async def test_a_deleted_nested_group_takes_its_users_out_of_scope() -> None:
    store = CountingStore()
    service, directory = world(store)
    entra = fresh()
    await run(service, entra)
    entra.add_member("gB", "u0002")  # a user of gC also in gB stays
    entra.delete_group("gC")
    report = await run(service, entra, conn(removalThreshold={"percent": 50, "absolute": 1000}))
    stored = await rows(directory)
    assert report.removed == 9
    assert stored["u0002"].state is UserState.ACTIVE
    assert stored["u0005"].state is UserState.DEACTIVATED
    kept = await TableSyncState(store).delta("demo")  # as another process reads it
    assert kept is not None
    assert "gC" not in kept.tree.groups()
    await assert_consistent(service, entra, conn(removalThreshold={"percent": 50, "absolute": 1000}))


# ----------------------------------------------------------------------------- two sync groups, rotation


async def test_a_user_in_two_sync_groups_losing_one() -> None:
    service, directory = world()
    entra = fresh()
    entra.groups[SYNC2] = ["g2"]
    entra.groups["g2"] = ["u0003", "u0004"]
    await run(service, entra, two_roots())
    assert (await rows(directory))["u0003"].groups == sorted([SYNC, SYNC2])
    entra.remove_member("g2", "u0003")  # still in SYNC through gA
    entra.remove_member("gB", "u0004")  # still in SYNC2 through g2
    report = await run(service, entra, two_roots())
    stored = await rows(directory)
    assert (report.updated, report.removed) == (2, 0)
    assert stored["u0003"].groups == [SYNC]
    assert stored["u0004"].groups == [SYNC2]
    await assert_consistent(service, entra, two_roots())
    entra.remove_member("g2", "u0004")  # out of both
    assert (await run(service, entra, two_roots())).removed == 1
    assert (await rows(directory))["u0004"].state is UserState.DEACTIVATED


async def test_rotation_group_changes_nested_and_direct() -> None:
    service, directory = world()
    entra = fresh()
    await run(service, entra)
    entra.add_member(ROTATION, "gC")  # nested under gA: every user of gC becomes eligible
    entra.remove_member(ROTATION, "u0001")
    report = await run(service, entra)
    stored = await rows(directory)
    assert not stored["u0001"].in_rotation_group
    assert all(stored[u].in_rotation_group for u in entra.groups["gC"])
    assert report.updated == len(entra.groups["gC"]) + 1
    entra.remove_member("gC", "u0005")  # leaves gC: out of rotation and of scope
    await run(service, entra)
    stored = await rows(directory)
    assert (stored["u0005"].in_rotation_group, stored["u0005"].state) == (False, UserState.DEACTIVATED)
    await assert_consistent(service, entra)


# ----------------------------------------------------------------------------- full resync, threshold


async def test_a_full_resync_after_an_expired_token_adds_updates_and_sweeps() -> None:
    store = CountingStore()
    service, directory = world(store)
    entra = fresh()
    await run(service, entra)
    entra.add_user(user(700), "gB")
    entra.update_user("u0003", displayName="Renamed")
    entra.remove_member("gA", "u0000")
    entra.expired = True
    report = await run(service, entra)
    assert (report.mode, report.added, report.updated, report.removed, report.unchanged) == ("full", 1, 1, 1, 28)
    assert "expired" in (report.resynced or "")
    stored = await rows(directory)
    assert (stored["u0700"].state, stored["u0003"].display_name) == (UserState.ACTIVE, "Renamed")
    assert stored["u0000"].state is UserState.DEACTIVATED
    entra.expired = False
    store.reset()
    report = await run(service, entra)
    assert (report.mode, report.unchanged, store.point_reads, store.rows_listed) == ("incremental", 30, 0, 0)


async def test_the_threshold_is_relative_to_the_kept_directory_size() -> None:
    service, _directory = world()
    entra = fresh(40)
    await run(service, entra)
    state = await service._state.delta("demo")
    assert (state.rows, state.in_scope) == (40, 40)
    for uid in [f"u{i:04d}" for i in range(0, 40, 3)][:5]:  # 5 of 40: above 10%
        entra.remove_member("gA", uid)
    report = await run(service, entra, conn(removalThreshold={"percent": 10, "absolute": 1000}))
    assert report.outcome == "blocked"
    assert "10% of 40" in (report.alert or "")
    report = await run(service, entra, conn(removalThreshold={"percent": 15, "absolute": 1000}))
    assert (report.outcome, report.removed) == ("completed", 5)
    state = await service._state.delta("demo")
    assert (state.rows, state.in_scope) == (40, 35)


async def test_a_state_stored_without_counts_is_counted_once() -> None:
    service, _ = world()
    entra = fresh()
    await run(service, entra)
    stored = await service._state.delta("demo")
    stored.rows = stored.in_scope = None  # as a version that did not keep them stored it
    await service._state.save_delta("demo", stored, changed=(), gone=(), full=False)
    assert (await run(service, entra)).unchanged == 30
    stored = await service._state.delta("demo")
    assert (stored.rows, stored.in_scope) == (30, 30)


# ----------------------------------------------------------------------------- rows read: O(changes)


@pytest.mark.parametrize("changes", [0, 5, 20])
async def test_an_incremental_run_reads_rows_in_proportion_to_the_changes(changes: int) -> None:
    store = CountingStore()
    service, _ = world(store)
    entra = fresh(600)
    await run(service, entra, conn(removalThreshold={"percent": 100, "absolute": 1000}))
    for n in range(changes):
        kind = n % 4
        if kind == 0:
            entra.add_user(user(1000 + n), "gB")
        elif kind == 1:
            entra.update_user(f"u{n:04d}", displayName="Changed")
        elif kind == 2:
            entra.remove_member(("gA", "gB", "gC")[n % 3], f"u{n:04d}")
        else:
            entra.delete_user(f"u{n:04d}")
    store.reset()
    report = await run(service, entra, conn(removalThreshold={"percent": 100, "absolute": 1000}))
    assert report.mode == "incremental"
    assert store.rows_listed == 0  # no query of the users table
    assert store.point_reads == report.rows_read <= changes
    assert report.added + report.updated + report.removed == changes


# ----------------------------------------------------------------------------- enrollment-state groups


async def test_enrollment_groups_follow_the_changed_users_only() -> None:
    service, directory = world(groups=True)
    entra = fresh()
    writer = Groups()
    connection = conn().model_copy(update={"features": conn().features.model_copy(
        update={"passkeys": conn().features.passkeys.model_copy(update={"enabled": True})})})
    first = await service.run(connection, entra, run_id="r1", correlation_id="c", groups=writer)
    assert first.enrollment_changes == 30
    ids = {r.state: r.id for r in await service.enrollment_groups.known("demo")}  # type: ignore[union-attr]
    not_enrolled = ids[Enrollment.NOT_ENROLLED]
    entra.add_user(user(800), "gB")
    entra.remove_member("gA", "u0000")
    report = await service.run(connection, entra, run_id="r2", correlation_id="c", groups=writer)
    assert report.enrollment_changes == 2
    stored = await rows(directory)
    assert writer.groups[not_enrolled][1] == {u for u, r in stored.items() if r.state is UserState.ACTIVE}

    # A group deleted in Entra is made again with every user in it; then runs go back to the changed users.
    await writer.delete_group(not_enrolled)
    report = await service.run(connection, entra, run_id="r3", correlation_id="c", groups=writer)
    remade = {r.state: r.id for r in await service.enrollment_groups.known("demo")}  # type: ignore[union-attr]
    assert remade[Enrollment.NOT_ENROLLED] != not_enrolled
    assert len(writer.groups[remade[Enrollment.NOT_ENROLLED]][1]) == 30
    assert (await service.run(connection, entra, run_id="r4", correlation_id="c",
                              groups=writer)).enrollment_changes == 0


# ----------------------------------------------------------------------------- random changes


@pytest.mark.parametrize("seed", range(12))
async def test_random_changes_leave_what_a_full_run_would(seed: int) -> None:
    rng = random.Random(seed)
    store = CountingStore()
    service, _ = world(store)
    entra = Tenant()
    entra.groups = {SYNC: ["gA", "gB"], SYNC2: ["gF"], "gA": ["gC"], "gB": [], "gC": ["gD"], "gD": [], "gF": [],
                    "outside": ["gE"], "gE": [], ROTATION: ["gE"]}
    groups = [g for g in entra.groups if g not in (SYNC, SYNC2, ROTATION)]
    for i in range(60):
        entra.accounts[f"u{i:04d}"] = user(i)
        entra.groups[rng.choice(groups)].append(f"u{i:04d}")
    connection = two_roots(removalThreshold={"percent": 100, "absolute": 1000})
    await run(service, entra, connection)
    next_user = 100
    for round_ in range(4):
        if (seed + round_) % 2:
            service, _ = world(store)  # another instance: the tree is loaded from the table
        for _ in range(rng.randint(1, 8)):
            action = rng.randrange(8)
            members = [(g, m) for g, ms in entra.groups.items() for m in ms if m in entra.accounts]
            if action == 0:
                entra.add_user(user(next_user), rng.choice(groups))
                next_user += 1
            elif action == 1 and members:
                group, member = rng.choice(members)
                entra.remove_member(group, member)
            elif action == 2 and members:
                group, member = rng.choice(members)
                entra.add_member(rng.choice([*groups, ROTATION]), member)
            elif action == 3:
                child = rng.choice(["gD", "gE", "gF", "gB"])
                parents = [g for g, ms in entra.groups.items() if child in ms]
                target = rng.choice([g for g in (*groups, SYNC, SYNC2, ROTATION) if g != child])
                if parents and target not in entra.groups[child] and child not in entra.groups[target]:
                    entra.move_group(child, rng.choice(parents), target)
            elif action == 4 and entra.accounts:
                entra.delete_user(rng.choice(sorted(entra.accounts)))
            elif action == 5 and entra.recycle:
                entra.restore_user(rng.choice(sorted(entra.recycle)))
            elif action == 6 and entra.accounts:
                entra.update_user(rng.choice(sorted(entra.accounts)), accountEnabled=rng.random() < 0.5)
            elif entra.accounts:
                entra.update_user(rng.choice(sorted(entra.accounts)), displayName=f"Name {rng.random()}")
        report = await run(service, entra, connection)
        assert (report.mode, report.outcome) == ("incremental", "completed")
    await assert_consistent(service, entra, connection)


# ----------------------------------------------------------------------------- the pure parts


def test_affected_users_covers_every_user_whose_membership_changed() -> None:
    old = GroupTree({"r": {"a"}, "x": {"b", "c"}, "y": {"d"}}, {"r": {"x"}, "x": {"y"}, "y": set()})
    new = old.copy()
    new.children["r"].discard("x")
    new.children["r"].add("y")  # x (with y) out, y back in directly
    new.users["r"].add("e")
    assert affected_users(old, new, {"r"}) == {"b", "c", "d", "e"}
    assert affected_users(old, old.copy(), {"r", "x", "y"}) == set()


def test_seen_ids_are_compact_and_exact_for_what_was_added() -> None:
    seen = SeenIds()
    ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(5000)]
    for user_id in ids[::2]:
        seen.add(user_id)
    assert all(u in seen for u in ids[::2])
    assert not any(u in seen for u in ids[1::2])
    assert len(seen) == 2500


class TenantGroups:
    """A GroupWriter over the Tenant itself, so the groups' changes show in its groups/delta rounds."""

    def __init__(self, entra: Tenant) -> None:
        self.entra = entra
        self.names: dict[str, str] = {}

    async def find_groups(self, display_name: str) -> list[str]:
        return [g for g, name in self.names.items() if name == display_name and g in self.entra.groups]

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        group_id = f"eg{len(self.names)}"
        self.names[group_id] = display_name
        self.entra.groups[group_id] = []
        return group_id

    async def member_ids(self, group_id: str) -> set[str]:
        return set(self.entra.groups[group_id])

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        for user_id in user_ids:
            self.entra.add_member(group_id, user_id)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        if user_id in self.entra.groups[group_id]:
            self.entra.remove_member(group_id, user_id)

    async def delete_group(self, group_id: str) -> None:
        self.entra.delete_group(group_id)

    async def group(self, group_id: str) -> dict[str, Any] | None:
        return {"id": group_id, "displayName": self.names[group_id]} if group_id in self.entra.groups else None


async def test_drift_made_by_hand_is_repaired_from_the_groups_delta_reading_only_those_users() -> None:
    store = CountingStore()
    service, directory = world(store, groups=True)
    entra = fresh()
    writer = TenantGroups(entra)
    connection = conn().model_copy(update={"features": conn().features.model_copy(
        update={"passkeys": conn().features.passkeys.model_copy(update={"enabled": True})})})
    await service.run(connection, entra, run_id="r1", correlation_id="c", groups=writer)
    ids = {r.state: r.id for r in await service.enrollment_groups.known("demo")}  # type: ignore[union-attr]
    not_enrolled, with_entra = ids[Enrollment.NOT_ENROLLED], ids[Enrollment.PAIRED_WITH_ENTRA]
    assert len(entra.groups[not_enrolled]) == 30
    entra.remove_member(not_enrolled, "u0003")  # by hand: a member taken out, a stray one put in
    entra.add_member(with_entra, "u0004")
    entra.add_user(user(900), "gB")  # and a change for the sync itself
    store.reset()
    report = await service.run(connection, entra, run_id="r2", correlation_id="c", groups=writer)
    assert report.enrollment_changes == 3
    assert "u0003" in entra.groups[not_enrolled]
    assert "u0900" in entra.groups[not_enrolled]
    assert entra.groups[with_entra] == []
    assert store.rows_listed == 0
    assert store.point_reads == report.rows_read <= 4  # u0900, then the three members the round reported
    stored = await rows(directory)
    assert set(entra.groups[not_enrolled]) == {u for u, r in stored.items() if r.state is UserState.ACTIVE}
    # The next run finds its own repairs in the round, consistent with the rows: nothing more to do.
    assert (await service.run(connection, entra, run_id="r3", correlation_id="c",
                              groups=writer)).enrollment_changes == 0


def test_a_forked_tree_copies_only_the_groups_it_changes() -> None:
    old = GroupTree({"r": {"a"}, "x": {"b"}, "y": {"c"}}, {"r": {"x", "y"}, "x": set(), "y": set()})
    new = old.fork()
    new.apply_members("x", [MemberChange("d", "user")])
    new.remove_users({"c"})
    new.clear("r")
    assert (old.users, old.children["r"]) == ({"r": {"a"}, "x": {"b"}, "y": {"c"}}, {"x", "y"})
    assert (new.users, new.children["r"]) == ({"r": set(), "x": {"b", "d"}, "y": set()}, set())
    assert new.users["x"] is not old.users["x"]
    unchanged = old.fork()
    assert unchanged.users["x"] is old.users["x"]


async def test_a_full_run_over_a_directory_reads_again_only_the_rows_that_changed() -> None:
    store = CountingStore()
    service, directory = world(store)
    entra = fresh(300)
    await run(service, entra)
    entra.update_user("u0003", displayName="Renamed")
    entra.add_user(user(900), "gB")
    paired = await directory.get("demo", "u0007")
    assert paired is not None
    await directory.put("demo", paired.model_copy(update={"enrollment": Enrollment.PAIRED_WITH_ENTRA}))
    store.reset()
    report = await run(service, entra, full=True)
    assert (report.added, report.updated, report.unchanged) == (1, 1, 299)
    assert store.point_reads == 1  # u0003: the digests of the other 299 stored rows matched
    assert store.rows_listed == 1 + 300 + 301  # is it empty, the digests, then the sweep (with u0900)
    stored = await rows(directory)
    assert stored["u0003"].display_name == "Renamed"
    assert stored["u0007"].enrollment is Enrollment.PAIRED_WITH_ENTRA  # what only the bridge knows is kept



async def test_a_blocked_full_run_removes_nobody_and_is_read_again() -> None:
    service, directory = world()
    entra = fresh(40)
    await run(service, entra)
    entra.remove_member(SYNC, "gA")  # 27 of 40 leave scope while the token expired
    entra.add_user(user(900), "gB")
    entra.expired = True
    report = await run(service, entra)
    assert (report.mode, report.outcome, report.added) == ("full", "blocked", 1)
    assert "27 users would be removed" in (report.alert or "")
    stored = await rows(directory)
    assert all(r.state is UserState.ACTIVE for r in stored.values())
    assert "u0900" in stored  # in scope, so written as read
    entra.expired = False
    report = await run(service, entra, conn(removalThreshold={"percent": 100, "absolute": 1000}))
    assert (report.mode, report.outcome, report.removed) == ("full", "completed", 27)  # no link was kept
    await assert_consistent(service, entra)


async def test_a_full_run_drops_the_tree_rows_of_a_group_that_shrank() -> None:
    store = CountingStore()
    service, _ = world(store)
    entra = fresh(0)
    for i in range(2000):
        entra.accounts[f"u{i:04d}"] = user(i)
        entra.groups["gB"].append(f"u{i:04d}")
    wide = conn(removalThreshold={"percent": 100, "absolute": 5000})
    await run(service, entra, wide)
    for uid in [f"u{i:04d}" for i in range(1000)]:
        entra.remove_member("gB", uid)
    entra.expired = True
    assert (await run(service, entra, wide)).removed == 1000
    kept = await TableSyncState(store).delta("demo")  # as another process reads it: no row of the larger group
    assert kept is not None
    assert kept.tree.users["gB"] == {f"u{i:04d}" for i in range(1000, 2000)}
    entra.expired = False
    fresh_service, _ = world(store)
    entra.update_user("u1999", displayName="Last")
    report = await run(fresh_service, entra, wide)
    assert (report.mode, report.updated, report.unchanged) == ("incremental", 1, 999)


class StreamedTenant(Tenant):
    """Notes how many users rows are stored each time the transitive read hands out another 500 users."""

    def __init__(self, store: CountingStore) -> None:
        super().__init__()
        self.store = store
        self.stored_while_reading: list[int] = []

    async def transitive_users(self, group_id: str) -> AsyncIterator[SyncUser]:
        n = 0
        async for item in super().transitive_users(group_id):
            n += 1
            if n % 500 == 0:
                await asyncio.sleep(0.01)  # a page's latency: the writer runs meanwhile
                reads = self.store.point_reads, self.store.rows_listed
                self.stored_while_reading.append(await TableUsers(self.store).count("demo"))
                self.store.point_reads, self.store.rows_listed = reads  # the probe's reads are not the run's
            yield item


async def _streamed_import(store: CountingStore) -> StreamedTenant:
    """A first import of 6,000 users into an empty directory, noting what was stored while it read."""
    service, directory = world(store)
    entra = StreamedTenant(store)
    made = tenant(6000)
    entra.groups, entra.accounts = made.groups, made.accounts
    report = await run(service, entra, conn(removalThreshold={"percent": 100, "absolute": 10000}))
    reads = store.point_reads, store.rows_listed
    assert (report.mode, report.added) == ("full", 6000)
    assert len(await rows(directory)) == 6000
    store.point_reads, store.rows_listed = reads  # the check's reads are not the run's
    return entra


async def test_a_full_import_writes_pages_while_it_reads_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TableUsers, "batch_rows", 3)  # a partition's transaction goes at 3 rows
    store = CountingStore()
    entra = await _streamed_import(store)
    assert store.point_reads == 1  # a first import into an empty directory reads no user row: its layout row only
    assert store.rows_listed == 0  # nor scans what it wrote for users to remove
    assert any(0 < stored < 6000 for stored in entra.stored_while_reading), entra.stored_while_reading


async def test_an_import_whose_partitions_never_fill_a_transaction_writes_while_it_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "IDLE_WRITE_ROWS", 5)  # 6,000 users over 256 partitions: about 23 each
    entra = await _streamed_import(CountingStore())
    assert any(0 < stored < 6000 for stored in entra.stored_while_reading), entra.stored_while_reading


class Uncounted(Tenant):
    """A tenant whose count of the sync groups' users is refused (no advanced queries for this app)."""

    async def count_users(self, group_id: str) -> int | None:
        raise PermissionDenied("Graph refused the count: grant GroupMember.Read.All", permission="GroupMember.Read.All")


async def test_a_first_import_spreads_a_big_directory_and_later_runs_of_any_process_find_its_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_adapter, "PARTITION_ROWS", 1)  # 300 users "fill" 256 partitions: the next count up
    store = CountingStore()
    service, _ = world(store)
    entra = fresh(300)
    assert (await run(service, entra)).added == 300
    assert await TableUsers(store).layout("demo") == 512
    stored = {e.partition_key for t in USERS_TABLES async for e in store.query_partitions(t, "demo.", "demo/")}
    assert max(int(p.rsplit(".", 1)[1]) for p in stored) >= PARTITIONS
    # Another process changes, deletes and restores users, nested moves included: its runs find the rows.
    other, directory = world(store)
    entra.update_user(sorted(entra.accounts)[0], displayName="Renamed")
    victim = sorted(entra.accounts)[1]
    entra.delete_user(victim)
    entra.move_group("gC", "gA", "gB")
    report = await run(other, entra)
    assert (report.mode, report.updated, report.removed) == ("incremental", 1, 1)
    entra.restore_user(victim)
    assert (await run(other, entra)).mode == "incremental"
    assert (await rows(directory))[victim].state.value == "active"
    await assert_consistent(other, entra)


async def test_without_entras_count_a_first_import_takes_the_default_layout() -> None:
    store = CountingStore()
    service, directory = world(store)
    entra = Uncounted()
    made = tenant(40)
    entra.groups, entra.accounts = made.groups, made.accounts
    report = await run(service, entra)
    assert (report.mode, report.outcome, report.added) == ("full", "completed", 40)
    assert await TableUsers(store).layout("demo") == PARTITIONS
    assert len(await rows(directory)) == 40


class BrokenLinks(Tenant):
    """Once `broken`: the users' link fails at once, every group link answers 410 a moment later."""

    broken = False

    async def users_delta(self, link: str) -> DeltaRead[UserChange]:
        if self.broken:
            raise Transient("the users link dropped")
        return await super().users_delta(link)

    async def groups_delta(self, ids: Sequence[str] | None = None,
                           link: str | None = None) -> DeltaRead[GroupChange]:
        if self.broken and link:
            await asyncio.sleep(0.01)
            raise Gone("the delta token expired")
        return await super().groups_delta(ids, link)


async def test_links_read_side_by_side_an_expired_one_means_a_full_run_whatever_the_others_did() -> None:
    service, directory = world()
    entra = BrokenLinks()
    made = tenant(30)
    entra.groups, entra.accounts = made.groups, made.accounts
    assert (await run(service, entra)).mode == "full"
    entra.broken = True
    report = await run(service, entra)
    assert (report.mode, report.outcome) == ("full", "completed")
    assert "delta link cannot be used" in (report.resynced or "")
    assert len(await rows(directory)) == 30
