"""Directory sync at scale: initial import, incremental runs, resource units and memory.

    python -m bench.sync --users 100000 --depth 3 [--groups 20] [--latency-ms 100] [--changes 0,100,1000]

Generates a tenant of `--users` users in `--groups` nested trees of `--depth` levels under one sync
group (in a child process, so its memory is not counted here), starts Azurite and the Entra simulator
with Microsoft's throttling limits on and `--latency-ms` of latency on every Graph request, and runs
the real sync through the production adapters (msgraph-sdk through the Graph gateway, Table storage on
Azurite, the hash-chained audit log):

- initial import: time, users per second, and the resource units the simulator counted against the
  budget of 8,000 per 10 s (a tenant above 500 users) over the run's duration; target 60 s;
- an incremental run after each of `--changes` (default 0, 100 and 1,000 changes made through the
  simulator's admin API: a quarter new users added to a nested group, a quarter removed from their
  group, a quarter moved between nested groups, a quarter deleted in Entra): time and resource units;
  target 20 RU when nothing changed, whatever the tenant's size;
- peak memory: the largest resident set of this process (the sync, its SDKs and the bench), target 600 MB.

Prints one line per scenario with its ratio to the target. Timings depend on the machine and on
whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.identity.aio import ClientSecretCredential

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import running as entra_running
from local.servers import azurite
from local.tls import ensure_tls
from shared.adapters.audit import TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.directory import GraphDirectoryReader
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.ownership import TableGroupRecords
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.tables import TableEntityStore
from shared.config import Connection
from shared.services.directory import Directory, EnrollmentGroups
from shared.services.sync import SyncReport, SyncService
from shared.topology import Table
from tests.fakes import FakeSecretStore

INITIAL_TARGET_S = 60.0
IDLE_TARGET_RU = 20.0
MEMORY_TARGET_MB = 600.0
#: Microsoft's identity and access budget for a tenant above 500 users (docs/architecture.md, Limits).
RU_PER_WINDOW, RU_WINDOW_S = 8000, 10.0

Admin = Callable[[str, str, Any], Any]


def peak_rss_mb() -> float:
    """The largest resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def connection(tenant_id: str) -> Connection:
    """The bench connection: one sync group, the rotation group, removals allowed (the bench deletes users)."""
    return Connection.model_validate({
        "name": "bench", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"], "removal": "deactivate",
                              "removalThreshold": {"percent": 100, "absolute": 1000000}},
                     "rotation": {"enabled": True, "group": "Bridge Rotation"}}})



def _audit(tables: TableEntityStore, clock: SystemClock) -> TableAuditSink:
    """The audit sink, with its key and anchors in memory: the vault is not what this bench measures."""
    vault = FakeSecretStore()
    return TableAuditSink(tables, clock, VaultAuditKeys(lambda: vault, clock), VaultAuditAnchors(lambda: vault))

@dataclass
class World:
    """The production adapters and the sync service on one stack."""

    graph: GraphGateway
    tables: TableEntityStore
    sync: SyncService


@contextlib.asynccontextmanager
async def open_world(tenant_id: str, entra_url: str, storage: str, ca: str) -> AsyncIterator[World]:
    """Adapters and services as the function app builds them, closed afterwards."""
    clock = SystemClock()
    tables = TableEntityStore.from_connection_string(storage)
    queue = StorageWorkQueue.from_connection_string(storage)
    credential = ClientSecretCredential(tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, authority=entra_url,
                                        connection_verify=ca)
    graph = GraphGateway(connection="bench", tenant_id=tenant_id, credential=credential, graph_base=entra_url,
                         scope="https://graph.microsoft.com/.default", verify=ssl.create_default_context(cafile=ca),
                         governor=ThrottleGovernor(tables, clock), max_wait=300)
    try:
        audit = _audit(tables, clock)
        yield World(graph, tables, SyncService(directory=Directory(tables), entities=tables, audit=audit, queue=queue,
                                               clock=clock, enrollment_groups=EnrollmentGroups(
                                                   TableGroupRecords(tables), audit, clock)))
    finally:
        await graph.close()
        await tables.close()
        await queue.close()


@dataclass
class Measured:
    """One sync run as the simulator and this process saw it."""

    report: SyncReport
    seconds: float
    cpu_seconds: float
    resource_units: float
    requests: float
    throttled: float


def cpu_seconds() -> float:
    """CPU time of this process so far (the bridge's own work, not the stand-ins')."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(world: World, conn: Connection, admin: Admin, run_id: str, *, dry_run: bool = False) -> Measured:
    """Run one sync and read the simulator's counters around it."""
    before = admin("GET", "/_sim/counters", None)
    started, cpu = time.perf_counter(), cpu_seconds()
    report = await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=run_id, correlation_id=run_id,
                                  dry_run=dry_run)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    after = admin("GET", "/_sim/counters", None)
    if report.outcome != ("dry-run" if dry_run else "completed"):
        raise SystemExit(f"sync {run_id} ended {report.outcome}: {report.alert}")
    return Measured(report, seconds, cpu, after["resourceUnits"] - before["resourceUnits"],
                    after["requests"] - before["requests"], after["throttled"] - before["throttled"])


async def tree_groups(tables: TableEntityStore, connection_name: str) -> dict[str, list[str]]:
    """Direct user members of the groups under the sync group (from the sync's `groups` table)."""
    state = await tables.get(Table.SYNCSTATE, connection_name, "delta")
    rotation_root = str(state.data.get("rotationRoot") or "") if state else ""
    found: dict[str, list[str]] = {}
    async for row in tables.query(Table.GROUPS, connection_name):
        if row.row_key.startswith(f"{rotation_root}.") and rotation_root:
            continue
        group = row.row_key.partition(".")[0]
        found.setdefault(group, []).extend(u for u in str(row.data.get("users") or "").split(",") if u)
    return found


def make_changes(admin: Admin, groups: dict[str, list[str]], count: int, round_no: int) -> None:
    """`count` directory changes: new users, users leaving a group, users moving, users deleted."""
    if count <= 0:
        return
    ordered = sorted((g for g in groups if groups[g]), key=lambda g: -len(groups[g]))
    if len(ordered) < 2:
        raise SystemExit("the tenant has too few groups for changes: raise --groups")
    target, sources = ordered[0], ordered[1:]
    quarter, rest = divmod(count, 4)
    new, leave, move, delete = (quarter + (1 if k < rest else 0) for k in range(4))
    picked: dict[str, list[str]] = {}
    wanted = leave + move + delete
    for group in sources:
        take = groups[group][:wanted - sum(len(v) for v in picked.values())]
        if take:
            picked[group] = take
    flat = [(g, u) for g, users in picked.items() for u in users]
    if len(flat) < wanted:
        raise SystemExit("the tenant is too small for this many changes: raise --users")
    fresh = [admin("POST", "/_sim/users", {"userPrincipalName": f"bench.r{round_no}.n{n}@generated.example",
                                           "displayName": f"Bench {round_no}-{n}"})["id"] for n in range(new)]
    leaving, moving, deleted = flat[:leave], flat[leave:leave + move], flat[leave + move:]
    for group in picked:
        out = [u for g, u in (*leaving, *moving) if g == group]
        if out:
            admin("DELETE", f"/_sim/groups/{group}/members", {"ids": out})
        groups[group] = [u for u in groups[group] if u not in set(picked[group])]
    arriving = [*fresh, *(u for _, u in moving)]
    if arriving:
        admin("POST", f"/_sim/groups/{target}/members", {"ids": arriving})
        groups[target] = [*groups[target], *arriving]
    for _, user in deleted:
        admin("DELETE", f"/_sim/users/{user}", None)


def budget(seconds: float) -> int:
    """The resource units Microsoft's limit allows over `seconds` (at least one window)."""
    return int(RU_PER_WINDOW * max(1.0, seconds / RU_WINDOW_S))


async def scenarios(users: int, changes: list[int], read_only: bool, tenant_id: str, entra_url: str, storage: str,
                    ca: str, admin: Admin, out: Callable[[str], None]) -> None:
    """Run the scenarios and print their lines."""
    conn = connection(tenant_id)
    async with open_world(tenant_id, entra_url, storage, ca) as world:
        await world.graph.token_claims()  # sign in before timing, as a warm instance would have
        first = await measure(world, conn, admin, "bench-initial", dry_run=read_only)
        count = first.report.added
        rate = count / first.seconds if first.seconds else 0.0
        what = "initial read and plan (dry run, nothing written)" if read_only else "initial"
        out(f"sync {what}: {count} users in {first.seconds:.1f} s ({rate:.0f}/s, own CPU "
            f"{first.cpu_seconds:.1f} s), {first.resource_units:.0f} RU of {budget(first.seconds)} budget "
            f"({RU_PER_WINDOW}/10 s), {first.requests:.0f} Graph requests, 429s {first.throttled:.0f}; "
            f"ratio to {INITIAL_TARGET_S:.0f} s {first.seconds / INITIAL_TARGET_S:.2f}")
        groups = {} if read_only else await tree_groups(world.tables, conn.name)
        for n, count in enumerate([] if read_only else changes, start=1):
            make_changes(admin, groups, count, n)
            run = await measure(world, conn, admin, f"bench-incremental-{n}")
            line = (f"sync incremental, {count} changes: {run.seconds:.1f} s (own CPU {run.cpu_seconds:.1f} s), "
                    f"{run.resource_units:.0f} RU, {run.requests:.0f} Graph requests (added {run.report.added}, "
                    f"updated {run.report.updated}, removed {run.report.removed}, unchanged {run.report.unchanged}, "
                    f"mode {run.report.mode})")
            if count == 0:
                line += f"; ratio to {IDLE_TARGET_RU:.0f} RU {run.resource_units / IDLE_TARGET_RU:.2f}"
            out(line)
    peak = peak_rss_mb()
    out(f"sync memory: peak RSS {peak:.0f} MB for {users} users; ratio to {MEMORY_TARGET_MB:.0f} MB "
        f"{peak / MEMORY_TARGET_MB:.2f}")


def run(users: int, groups: int, depth: int, latency_ms: float, changes: list[int], read_only: bool,
        folder: Path) -> None:
    """Generate the tenant, start the stand-ins, run the scenarios."""
    tls = ensure_tls()
    tenant_file = folder / "tenant.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "local.entra", "generate", "--users", str(users), "--groups", str(groups),
                    "--depth", str(depth), "--seed", "11", "--out", str(tenant_file)],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"(tenant generated in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    with azurite(folder / "azurite", folder / "azurite.log") as storage, \
            entra_running(data_dir=folder / "entra", log_path=folder / "entra.log", tenant=str(tenant_file),
                          limits=True, faults={"latencyMs": latency_ms}, timeout=180) as sim:
        tenant_file.unlink()

        def admin(method: str, path: str, body: Any) -> Any:
            return sim.admin(method, path, body)

        asyncio.run(scenarios(users, changes, read_only, sim.tenant_id, sim.url, storage, str(tls.ca), admin,
                              lambda line: print(line, flush=True)))


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=20, help="nested trees under the sync group")
    parser.add_argument("--depth", type=int, default=3, help="levels of each tree")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every Graph request")
    parser.add_argument("--changes", default="0,100,1000", help="changes before each incremental run")
    parser.add_argument("--read-only", action="store_true",
                        help="only the initial run, as a dry run: Graph reads and planning without Table writes")
    args = parser.parse_args(argv)
    changes = [int(c) for c in args.changes.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix=f"bench-sync-{uuid.uuid4().hex[:6]}-") as folder:
        run(args.users, args.groups, args.depth, args.latency_ms, changes, args.read_only, Path(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
