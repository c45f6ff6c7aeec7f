"""Sync under faults, against the Entra simulator (Microsoft's limits on) and Azurite, through the production
adapters: 429s, 5xx and dropped connections while paging never remove anyone (the run completes after
retries or aborts before writing); an expired delta token leads to a full read; a user moved between
nested groups is seen by the next incremental run."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.sync import World, open_world
from local.entra.demo import BRIDGE_CLIENT_ID, generated_tenant
from local.entra.process import RunningEntra, running
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import UserRow, UserState
from shared.errors import Stop
from shared.services.directory import Directory
from shared.services.sync import SyncReport

USERS = 3000


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, tls_files: Any) -> Iterator[RunningEntra]:
    """A simulator of its own: six nested trees of three levels, 3,000 users, limits on."""
    folder = tmp_path_factory.mktemp("sync-faults")
    tenant_file = folder / "tenant.json"
    tenant_file.write_text(json.dumps(generated_tenant(USERS, groups=6, depth=3, seed=5).to_json()), encoding="utf-8")
    with running(data_dir=folder / "entra", log_path=folder / "entra.log", tenant=str(tenant_file)) as running_sim:
        yield running_sim


def _connection(tenant_id: str, groups: list[str]) -> Connection:
    return Connection.model_validate({
        "name": f"sf{uuid.uuid4().hex[:10]}", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"sync": {"enabled": True, "groups": groups, "removal": "deactivate",
                              "removalThreshold": {"percent": 50, "absolute": 1000}}}})


async def _run(world: World, conn: Connection, *, full: bool = False) -> SyncReport:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    return await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=run_id, correlation_id=run_id,
                                full=full)


async def _rows(world: World, conn: Connection) -> dict[str, UserRow]:
    return {row.id: row async for row in Directory(TableUsers(world.tables)).all(conn.name)}


def _faults(sim: RunningEntra, settings: dict[str, Any]) -> None:
    sim.admin("PUT", "/_sim/faults", {"latencyMs": 0, "errorRate": 0, "throttleRate": 0, "dropRate": 0,
                                      "routes": [], **settings})


async def test_throttling_errors_and_dropped_connections_while_paging_never_remove(
        sim: RunningEntra, azurite_connection_string: str, tls_files: Any) -> None:
    conn = _connection(sim.tenant_id, ["Bridge Sync"])
    async with open_world(sim.tenant_id, sim.url, azurite_connection_string, str(tls_files.ca)) as world:
        first = await _run(world, conn)
        assert (first.outcome, first.mode, first.added) == ("completed", "full", USERS)
        before = await _rows(world, conn)
        try:
            # Every page of the transitive read breaks: the gateway retries, then the run aborts unwritten.
            _faults(sim, {"routes": [{"path": "transitiveMembers", "dropRate": 1.0}]})
            with pytest.raises(Stop):
                await _run(world, conn, full=True)
            last = await world.sync.last_run(conn.name)
            assert last is not None
            assert last["outcome"] == "aborted"
            assert await _rows(world, conn) == before
            # Storms of 429, 503 and dropped connections on every route, in full and incremental runs.
            outcomes = []
            storms = (({"throttleRate": 0.25}, True), ({"errorRate": 0.25}, False), ({"dropRate": 0.25}, True),
                      ({"dropRate": 0.25, "errorRate": 0.1}, False))
            for n, (storm, full) in enumerate(storms):
                _faults(sim, {**storm, "seed": 40 + n})
                try:
                    report = await _run(world, conn, full=full)
                except Stop:
                    outcomes.append("aborted")
                else:
                    outcomes.append(report.outcome)
                    assert report.removed == 0
                    assert report.errors == 0
                rows = await _rows(world, conn)
                assert set(rows) == set(before)
                assert all(r.state is UserState.ACTIVE for r in rows.values())
            assert "completed" in outcomes, outcomes
            assert set(outcomes) <= {"completed", "aborted"}
        finally:
            _faults(sim, {})
        calm = await _run(world, conn)
        assert (calm.outcome, calm.removed, calm.added, calm.unchanged) == ("completed", 0, 0, USERS)


async def test_an_expired_delta_token_leads_to_a_full_read(sim: RunningEntra, azurite_connection_string: str,
                                                           tls_files: Any) -> None:
    conn = _connection(sim.tenant_id, ["Bridge Sync"])
    async with open_world(sim.tenant_id, sim.url, azurite_connection_string, str(tls_files.ca)) as world:
        first = await _run(world, conn)
        assert first.outcome == "completed"
        leaf = await GraphDirectoryReader(world.graph).group_id("Sync 2-2")
        leaving = sim.admin("GET", f"/_sim/groups/{leaf}/members")["members"][0]
        sim.admin("DELETE", f"/_sim/groups/{leaf}/members", {"ids": [leaving]})
        sim.admin("POST", "/_sim/delta/expire")
        report = await _run(world, conn)
        assert (report.outcome, report.mode) == ("completed", "full")
        assert report.resynced is not None
        assert "expired" in report.resynced
        assert report.removed == 1
        assert (await _rows(world, conn))[leaving].state is UserState.DEACTIVATED
        after = await _run(world, conn)
        assert (after.mode, after.resynced, after.removed, after.added) == ("incremental", None, 0, 0)


async def test_users_moved_between_nested_groups_are_seen_by_the_next_incremental_run(
        sim: RunningEntra, azurite_connection_string: str, tls_files: Any) -> None:
    conn = _connection(sim.tenant_id, ["Sync 0-0", "Sync 1-0"])
    async with open_world(sim.tenant_id, sim.url, azurite_connection_string, str(tls_files.ca)) as world:
        reader = GraphDirectoryReader(world.graph)
        ids = {name: await reader.group_id(name) for name in ("Sync 0-0", "Sync 1-0", "Sync 0-2", "Sync 1-2",
                                                               "Sync 4-2", "Sync 5-1", "Sync 1-1")}
        first = await _run(world, conn)
        assert first.outcome == "completed"
        deep = sim.admin("GET", f"/_sim/groups/{ids['Sync 0-2']}/members")["members"]
        outside = sim.admin("GET", f"/_sim/groups/{ids['Sync 5-1']}/members")["members"]
        across, away = deep[0], deep[1]
        inside = next(m for m in outside if m not in ids.values())
        # Deep in tree 0 -> deep in tree 1; deep in tree 0 -> a tree no sync group holds; outside -> tree 1.
        sim.admin("DELETE", f"/_sim/groups/{ids['Sync 0-2']}/members", {"ids": [across, away]})
        sim.admin("POST", f"/_sim/groups/{ids['Sync 1-2']}/members", {"ids": [across]})
        sim.admin("POST", f"/_sim/groups/{ids['Sync 4-2']}/members", {"ids": [away]})
        sim.admin("DELETE", f"/_sim/groups/{ids['Sync 5-1']}/members", {"ids": [inside]})
        sim.admin("POST", f"/_sim/groups/{ids['Sync 1-1']}/members", {"ids": [inside]})
        report = await _run(world, conn)
        assert (report.outcome, report.mode) == ("completed", "incremental")
        assert (report.added, report.updated, report.removed) == (1, 1, 1)
        rows = await _rows(world, conn)
        assert rows[across].groups == [ids["Sync 1-0"]]
        assert rows[across].state is UserState.ACTIVE
        assert rows[away].state is UserState.DEACTIVATED
        assert rows[inside].groups == [ids["Sync 1-0"]]
        assert rows[inside].state is UserState.ACTIVE
