"""The SyncStateRepository contract, on the in-memory stand-in and on the Table adapter over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.syncstate import TREE_IDS_PER_ROW, TableSyncState
from shared.domain.sync import GroupTree
from shared.services.ports import DeltaState, EnrollmentDelta, EntityStore, SyncStateRepository
from tests.fake_repositories import FakeSyncState


@pytest.fixture(params=["memory", "table"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def state(request: pytest.FixtureRequest, kind: str) -> SyncStateRepository:
    return FakeSyncState() if kind == "memory" else TableSyncState(request.getfixturevalue("store"))


@pytest.fixture
def conn() -> str:
    return f"conn{uuid.uuid4().hex[:8]}"


def _tree(members: dict[str, list[str]], children: dict[str, list[str]] | None = None) -> GroupTree:
    tree = GroupTree()
    for group, users in members.items():
        tree.add_group(group)
        tree.users[group].update(users)
    for group, kids in (children or {}).items():
        tree.children[group].update(kids)
    return tree


def _delta(tree: GroupTree, **extra: object) -> DeltaState:
    return DeltaState(sync_roots=["root"], rotation_root=None, users_link="https://graph/users/delta?t=1",
                      group_links=[{"ids": ["root", "gA"], "link": "https://graph/groups/delta?t=1"}], tree=tree,
                      **extra)  # type: ignore[arg-type]


async def _fresh(request: pytest.FixtureRequest, kind: str, state: SyncStateRepository) -> SyncStateRepository:
    """What another process reads: a new adapter on the same store (the stand-in keeps nothing per process)."""
    if kind == "memory":
        return state
    store: EntityStore = request.getfixturevalue("store")
    return TableSyncState(store)


async def test_no_state_means_a_full_run(state: SyncStateRepository, conn: str) -> None:
    assert await state.delta(conn) is None
    assert await state.last_run(conn) is None
    assert await state.enrollment_delta(conn) is None
    assert not await state.enrollment_pending(conn)


async def test_the_links_tree_and_size_come_back_as_stored(request: pytest.FixtureRequest, kind: str,
                                                           state: SyncStateRepository, conn: str) -> None:
    big = [f"u{n:05d}" for n in range(TREE_IDS_PER_ROW * 2 + 5)]  # more than one stored row's worth
    tree = _tree({"root": [], "gA": big, "gB": ["u1"]}, {"root": ["gA", "gB"]})
    saved = _delta(tree, rows=1_000, in_scope=900)
    await state.save_delta(conn, saved, changed=tree.groups(), gone=(), full=True)
    assert saved.version
    for reader in (state, await _fresh(request, kind, state)):
        found = await reader.delta(conn)
        assert found is not None
        assert (found.sync_roots, found.rotation_root, found.users_link, found.group_links) == (
            saved.sync_roots, None, saved.users_link, saved.group_links)
        assert (found.rows, found.in_scope, found.version) == (1_000, 900, saved.version)
        assert found.tree.users["gA"] == set(big)
        assert found.tree.children["root"] == {"gA", "gB"}
        assert found.tree.groups() == {"root", "gA", "gB"}


async def test_an_incremental_save_changes_only_the_groups_named(request: pytest.FixtureRequest, kind: str,
                                                                 state: SyncStateRepository, conn: str) -> None:
    big = [f"u{n:05d}" for n in range(TREE_IDS_PER_ROW + 5)]
    tree = _tree({"root": [], "gA": big, "gB": ["u1"], "gC": ["u2"]}, {"root": ["gA", "gB", "gC"]})
    await state.save_delta(conn, _delta(tree), changed=tree.groups(), gone=(), full=True)
    loaded = await (await _fresh(request, kind, state)).delta(conn)
    assert loaded is not None
    after = loaded.tree.fork()
    after.users["gA"] = {"u9"}  # shrinks to one stored row
    after.children["root"].discard("gC")
    assert after.prune(["root"]) == {"gC"}
    next_state = _delta(after, rows=3, in_scope=2, version=loaded.version)
    next_state.users_link = "https://graph/users/delta?t=2"
    await state.save_delta(conn, next_state, changed={"gA", "root"}, gone={"gC"}, full=False)
    found = await (await _fresh(request, kind, state)).delta(conn)
    assert found is not None
    assert found.users_link.endswith("t=2")
    assert found.tree.users["gA"] == {"u9"}
    assert found.tree.users["gB"] == {"u1"}
    assert "gC" not in found.tree.groups()
    assert (found.rows, found.in_scope) == (3, 2)


async def test_a_full_save_drops_every_group_it_does_not_hold(state: SyncStateRepository, conn: str) -> None:
    first = _tree({"root": [], "gA": ["u1"], "old": ["u2"]})
    await state.save_delta(conn, _delta(first), changed=first.groups(), gone=(), full=True)
    second = _tree({"root": [], "gA": ["u3"]})
    await state.save_delta(conn, _delta(second), changed=second.groups(), gone=(), full=True)
    found = await state.delta(conn)
    assert found is not None
    assert found.tree.groups() == {"root", "gA"}
    assert found.tree.users["gA"] == {"u3"}


async def test_forgetting_the_links_makes_the_next_run_a_full_one(state: SyncStateRepository, conn: str) -> None:
    tree = _tree({"root": ["u1"]})
    await state.save_delta(conn, _delta(tree), changed=tree.groups(), gone=(), full=True)
    await state.forget_delta(conn)
    assert await state.delta(conn) is None


async def test_run_reports_keep_their_nested_members(state: SyncStateRepository, conn: str) -> None:
    report = {"runId": "r1", "outcome": "completed", "added": 3, "planned": {"add": 3, "update": 0, "remove": 0},
              "plannedIds": {"add": ["a", "b", "c"], "update": [], "remove": []},
              "problem": {"title": "x", "status": 409}, "alert": None}
    await state.put_run(conn, report)
    await state.put_run(conn, {"runId": "r2", "outcome": "dry-run", "planned": {}, "plannedIds": {}}, dry_run=True)
    found = await state.last_run(conn)
    assert found is not None
    assert {k: found[k] for k in ("runId", "outcome", "added", "planned", "plannedIds", "problem")} == {
        k: report[k] for k in ("runId", "outcome", "added", "planned", "plannedIds", "problem")}
    assert "alert" not in found
    dry = await state.last_run(conn, dry_run=True)
    assert dry is not None
    assert dry["runId"] == "r2"


async def test_the_enrollment_link_and_pending_mark(state: SyncStateRepository, conn: str) -> None:
    await state.put_enrollment_delta(conn, EnrollmentDelta(["g1", "g2"], "https://graph/groups/delta?t=1"))
    assert await state.enrollment_delta(conn) == EnrollmentDelta(["g1", "g2"], "https://graph/groups/delta?t=1")
    await state.set_enrollment_pending(conn, "r1")
    assert await state.enrollment_pending(conn)
    await state.set_enrollment_pending(conn, None)
    await state.set_enrollment_pending(conn, None)  # absent counts as cleared
    assert not await state.enrollment_pending(conn)
