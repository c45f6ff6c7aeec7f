"""Directory sync at scale: initial import, incremental runs, rows read, resource units and memory.

    python -m bench.sync [--users 20000,100000] [--depth 3] [--groups 20] [--latency-ms 100]
                         [--changes 0,100,1000] [--read-only] [--time-budget SECONDS]

For each size in `--users` (one child process per size, so each size's peak memory is its own):
generates a tenant of that many users in `--groups` nested trees of `--depth` levels under one sync
group (in a child process, so its memory is not counted here), starts Azurite and the Entra simulator
with Microsoft's throttling limits on and `--latency-ms` of latency on every Graph request, and runs
the real sync through the production adapters (msgraph-sdk through the Graph gateway, Table storage on
Azurite, the hash-chained audit log):

- initial import: time, users per second, the resource units the simulator counted against the
  budget of 8,000 per 10 s (a tenant above 500 users) over the run's duration, and the rows it read
  from storage; target 22 s per 100,000 users;
- an incremental run after each of `--changes` (default 0, 100 and 1,000 changes made through the
  simulator's admin API: a quarter new users added to a nested group, a quarter removed from their
  group, a quarter moved between nested groups, a quarter deleted in Entra): time (target 1 s with no
  change, 3 s with up to 1,000), resource units (target 20 RU with no change) and rows read from
  storage (target: at most 1,000 plus 10 per change, whatever the tenant's size);
- peak memory: the largest resident set of this process (the bridge side: the sync, its SDKs and the
  bench), after the import and at the end; target 250 MB up to 100,000 users, 1 GB above;
- the simulator's own resident set (peak and at the end) and load time, for information.

Prints one line per scenario with its ratio to the target and, per size, one summary line with every
ratio and the worst. `--time-budget` stops a size's scenarios once that many seconds have passed (what
was not run is said so). Timings depend on the machine and on whatever else runs on it.
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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.identity.aio import ClientSecretCredential

from bench.memory import children_cpu_seconds, peak_rss_mb, process_rss_mb
from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import running as entra_running
from local.memory import FakeSecretStore
from local.servers import azurite
from local.tls import ensure_tls
from shared.adapters.audit import TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.leases import TableLeases
from shared.adapters.ownership import TableGroupRecords
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.syncstate import TableSyncState
from shared.adapters.tables import TableEntityStore
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.services.directory import Directory
from shared.services.enrollment_groups import EnrollmentGroups
from shared.services.ports import Entity
from shared.services.sync import SyncReport, SyncService
from shared.topology import Table

#: The 100,000-user import's goal (docs/sync.md: the larger of Graph's paging and Azurite's writes),
#: scaled with the tenant's size.
IMPORT_TARGET_S_PER_100K = 22.0
IDLE_TARGET_S = 1.0
CHANGES_TARGET_S = 3.0  # an incremental run with up to CHANGES_TARGET_COUNT changes
CHANGES_TARGET_COUNT = 1000
IDLE_TARGET_RU = 20.0
#: Rows an incremental run may read from storage: a fixed part (state, the group tree) and a part per
#: change, none growing with the directory.
ROWS_FIXED, ROWS_PER_CHANGE = 1000, 10
MEMORY_TARGET_MB, LARGE_MEMORY_TARGET_MB, LARGE_TENANT = 250.0, 1024.0, 100_000
DEFAULT_SIZES = "20000,100000"
#: Microsoft's identity and access budget for a tenant above 500 users (docs/architecture.md, Limits).
RU_PER_WINDOW, RU_WINDOW_S = 8000, 10.0

Admin = Callable[[str, str, Any], Any]


def import_target_s(users: int) -> float:
    """The import's goal for a tenant of this size."""
    return IMPORT_TARGET_S_PER_100K * users / 100_000


def memory_target_mb(users: int) -> float:
    """The bridge side's peak memory goal for a tenant of this size."""
    return MEMORY_TARGET_MB if users <= LARGE_TENANT else LARGE_MEMORY_TARGET_MB


def rows_allowed(changes: int) -> int:
    """Rows an incremental run after `changes` changes may read."""
    return ROWS_FIXED + ROWS_PER_CHANGE * changes


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

class _Busy:
    """Wall time during which at least one request of a kind was in flight, and how many were made."""

    def __init__(self) -> None:
        self.seconds, self.count, self._open, self._since = 0.0, 0, 0, 0.0

    @contextlib.asynccontextmanager
    async def timing(self, count: int = 1) -> AsyncIterator[None]:
        if self._open == 0:
            self._since = time.perf_counter()
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            self.count += count
            if self._open == 0:
                self.seconds += time.perf_counter() - self._since


class TimedTables(TableEntityStore):
    """The Table adapter, timing its point reads, its transactions and its other writes: where a run's
    storage time goes (Azurite serves one request at a time, so the three add up to its share)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads, self.transactions, self.writes = _Busy(), _Busy(), _Busy()

    def busy(self) -> tuple[float, float, float]:
        return self.reads.seconds, self.transactions.seconds, self.writes.seconds

    def counts(self) -> tuple[int, int, int]:
        return self.reads.count, self.transactions.count, self.writes.count

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        async with self.reads.timing():
            return await super().get(table, partition_key, row_key)

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        async with self.transactions.timing(len(entities)):
            await super().upsert_many(table, entities, exists=exists)

    async def insert(self, table: Table, entity: Entity) -> Entity:
        async with self.writes.timing():
            return await super().insert(table, entity)

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        async with self.writes.timing():
            return await super().upsert(table, entity)

    async def update(self, table: Table, entity: Entity) -> Entity:
        async with self.writes.timing():
            return await super().update(table, entity)

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        async with self.writes.timing():
            await super().delete(table, partition_key, row_key, etag=etag)


@dataclass
class World:
    """The production adapters and the sync service on one stack."""

    graph: GraphGateway
    tables: TimedTables
    sync: SyncService


@contextlib.asynccontextmanager
async def open_world(tenant_id: str, entra_url: str, storage: str, ca: str) -> AsyncIterator[World]:
    """Adapters and services as the function app builds them, closed afterwards."""
    clock = SystemClock()
    tables = TimedTables.from_connection_string(storage)
    assert isinstance(tables, TimedTables)
    queue = StorageWorkQueue.from_connection_string(storage)
    credential = ClientSecretCredential(tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, authority=entra_url,
                                        connection_verify=ca)
    graph = GraphGateway(connection="bench", tenant_id=tenant_id, credential=credential, graph_base=entra_url,
                         scope="https://graph.microsoft.com/.default", verify=ssl.create_default_context(cafile=ca),
                         governor=ThrottleGovernor(tables, clock), max_wait=300)
    try:
        audit = _audit(tables, clock)
        yield World(graph, tables, SyncService(
            directory=Directory(TableUsers(tables)), state=TableSyncState(tables), leases=TableLeases(tables, clock),
            audit=audit, queue=queue, clock=clock, enrollment_groups=EnrollmentGroups(
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
    rows_read: int
    #: Wall seconds with a point read, a transaction, another write in flight; how many of each (rows for
    #: transactions).
    busy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    counts: tuple[int, int, int] = (0, 0, 0)
    #: CPU seconds the stand-ins used during the run, by command name (Azurite is `node`).
    stand_ins: Mapping[str, float] = field(default_factory=dict)


def cpu_seconds() -> float:
    """CPU time of this process so far (the bridge's own work, not the stand-ins')."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(world: World, conn: Connection, admin: Admin, run_id: str, *, dry_run: bool = False) -> Measured:
    """Run one sync and read the simulator's counters around it."""
    before = admin("GET", "/_sim/counters", None)
    rows = world.tables.rows_read
    busy, counts = world.tables.busy(), world.tables.counts()
    started, cpu, others = time.perf_counter(), cpu_seconds(), children_cpu_seconds()
    report = await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=run_id, correlation_id=run_id,
                                  dry_run=dry_run)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    stand_ins = {name: used - others.get(name, 0.0) for name, used in children_cpu_seconds().items()}
    rows = world.tables.rows_read - rows
    busy = tuple(b - a for a, b in zip(busy, world.tables.busy(), strict=True))  # type: ignore[assignment]
    counts = tuple(b - a for a, b in zip(counts, world.tables.counts(), strict=True))  # type: ignore[assignment]
    after = admin("GET", "/_sim/counters", None)
    if report.outcome != ("dry-run" if dry_run else "completed"):
        raise SystemExit(f"sync {run_id} ended {report.outcome}: {report.alert}")
    return Measured(report, seconds, cpu, after["resourceUnits"] - before["resourceUnits"],
                    after["requests"] - before["requests"], after["throttled"] - before["throttled"], rows,
                    busy, counts, stand_ins)


async def tree_groups(tables: TableEntityStore, connection_name: str) -> dict[str, list[str]]:
    """Direct user members of the groups under the sync group (from the group tree the sync stored)."""
    state = await TableSyncState(tables).delta(connection_name)
    if state is None:
        return {}
    return {group: sorted(users) for group, users in state.tree.users.items()
            if group != state.rotation_root}


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
        taken = set(picked[group])
        groups[group] = [u for u in groups[group] if u not in taken]
    arriving = [*fresh, *(u for _, u in moving)]
    if arriving:
        admin("POST", f"/_sim/groups/{target}/members", {"ids": arriving})
        groups[target] = [*groups[target], *arriving]
    for _, user in deleted:
        admin("DELETE", f"/_sim/users/{user}", None)
    # Write the simulator's tenant file now: a large tenant's periodic write (seconds at a million
    # users, with its state locked) would otherwise fall in the measured run.
    admin("POST", "/_sim/save", None)


def budget(seconds: float) -> int:
    """The resource units Microsoft's limit allows over `seconds` (at least one window)."""
    return int(RU_PER_WINDOW * max(1.0, seconds / RU_WINDOW_S))


@dataclass
class Outcome:
    """What one size's scenarios found, for its summary line."""

    users: int
    ratios: dict[str, float]
    parts: list[str]


def ratio_text(value: float, target: float, unit: str) -> str:
    """`value unit (ratio R to target unit)`."""
    return f"ratio to {target:g} {unit} {value / target:.2f}"


async def scenarios(users: int, changes: list[int], read_only: bool, tenant_id: str, entra_url: str, storage: str,
                    ca: str, admin: Admin, out: Callable[[str], None], deadline: float | None) -> Outcome:
    """Run the scenarios and print their lines; stop starting new ones after `deadline` (monotonic)."""
    conn = connection(tenant_id)
    outcome = Outcome(users, {}, [])

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.perf_counter())

    async with open_world(tenant_id, entra_url, storage, ca) as world:
        await world.graph.token_claims()  # sign in before timing, as a warm instance would have
        try:
            first = await asyncio.wait_for(measure(world, conn, admin, "bench-initial", dry_run=read_only),
                                           remaining())
        except TimeoutError:
            out(f"sync {users} initial: not finished within the time budget; nothing else run")
            outcome.ratios["import"] = float("inf")
            return outcome
        count = first.report.added
        rate = count / first.seconds if first.seconds else 0.0
        what = "initial read and plan (dry run, nothing written)" if read_only else "initial"
        target = import_target_s(users)
        imported_peak = peak_rss_mb()
        out(f"sync {users} {what}: {count} users in {first.seconds:.1f} s ({rate:.0f}/s, own CPU "
            f"{first.cpu_seconds:.1f} s), {first.resource_units:.0f} RU of {budget(first.seconds)} budget "
            f"({RU_PER_WINDOW}/10 s), {first.requests:.0f} Graph requests, 429s {first.throttled:.0f}, rows read "
            f"{first.rows_read}, peak RSS {imported_peak:.0f} MB; {ratio_text(first.seconds, target, 's')}")
        outcome.ratios["import"] = first.seconds / target
        outcome.parts.append(f"import {first.seconds:.1f} s")
        groups = {} if read_only else await tree_groups(world.tables, conn.name)
        for n, count in enumerate([] if read_only else changes, start=1):
            left = remaining()
            if left is not None and left <= 0:
                out(f"sync {users} incremental, {count} changes: not run, the time budget was spent")
                continue
            make_changes(admin, groups, count, n)
            try:
                run = await asyncio.wait_for(measure(world, conn, admin, f"bench-incremental-{n}"), remaining())
            except TimeoutError:
                out(f"sync {users} incremental, {count} changes: not finished within the time budget")
                outcome.ratios[f"{count} changes"] = float("inf")
                continue
            allowed = rows_allowed(count)
            per_change = f", {run.rows_read / count:.1f} per change" if count else ""
            line = (f"sync {users} incremental, {count} changes: {run.seconds:.2f} s (own CPU "
                    f"{run.cpu_seconds:.1f} s), {run.resource_units:.0f} RU, {run.requests:.0f} Graph requests, "
                    f"rows read {run.rows_read}{per_change} (added {run.report.added}, updated {run.report.updated}, "
                    f"removed {run.report.removed}, unchanged {run.report.unchanged}, mode {run.report.mode}; "
                    f"storage busy: {run.counts[0]} point reads {run.busy[0]:.2f} s, {run.counts[1]} rows in "
                    f"transactions {run.busy[1]:.2f} s, {run.counts[2]} other writes {run.busy[2]:.2f} s; CPU of "
                    f"{stand_ins_text(run.stand_ins)})")
            ratios = {f"rows {count}": run.rows_read / allowed}
            if count == 0:
                ratios[f"time {count}"] = run.seconds / IDLE_TARGET_S
                line += (f"; {ratio_text(run.seconds, IDLE_TARGET_S, 's')}, "
                         f"{ratio_text(run.resource_units, IDLE_TARGET_RU, 'RU')}")
            elif count <= CHANGES_TARGET_COUNT:
                ratios[f"time {count}"] = run.seconds / CHANGES_TARGET_S
                line += f"; {ratio_text(run.seconds, CHANGES_TARGET_S, 's')}"
            line += f", rows read ratio to {allowed} {run.rows_read / allowed:.2f}"
            out(line)
            outcome.ratios.update(ratios)
            outcome.parts.append(f"{count} changes {run.seconds:.2f} s / {run.rows_read} rows")
    peak = peak_rss_mb()
    memory_target = memory_target_mb(users)
    out(f"sync {users} memory: peak RSS {peak:.0f} MB ({imported_peak:.0f} MB after the import) for {users} users; "
        f"{ratio_text(peak, memory_target, 'MB')}")
    outcome.ratios["memory"] = peak / memory_target
    outcome.parts.append(f"peak {peak:.0f} MB")
    return outcome


def stand_ins_text(used: Mapping[str, float]) -> str:
    """The stand-ins' CPU during a run: Azurite (`node`) and the simulator (`python`)."""
    names = {"node": "Azurite", "python": "the simulator"}
    parts = [f"{names.get(name, name)} {seconds:.1f} s" for name, seconds in sorted(used.items())
             if name in names or seconds >= 0.05]
    return ", ".join(parts) or "the stand-ins not measured"


def summary(outcome: Outcome) -> str:
    """One line per size: the figures and the worst ratio to a goal (above 1 misses it)."""
    worst = max(outcome.ratios.items(), key=lambda item: item[1]) if outcome.ratios else ("none", 0.0)
    ratios = ", ".join(f"{name} {value:.2f}" for name, value in outcome.ratios.items())
    return (f"sync summary {outcome.users} users: {'; '.join(outcome.parts)}; ratios to goals: {ratios}; "
            f"worst {worst[0]} {worst[1]:.2f}")


def run(users: int, groups: int, depth: int, latency_ms: float, changes: list[int], read_only: bool,
        folder: Path, time_budget: float | None) -> None:
    """Generate the tenant, start the stand-ins, run the scenarios."""
    tls = ensure_tls()
    tenant_file = folder / "tenant.json"
    started = time.perf_counter()
    deadline = None if time_budget is None else started + time_budget
    subprocess.run([sys.executable, "-m", "local.entra", "generate", "--users", str(users), "--groups", str(groups),
                    "--depth", str(depth), "--seed", "11", "--out", str(tenant_file)],
                   check=True, stdout=subprocess.DEVNULL)
    generated = time.perf_counter() - started
    # Nothing the bench writes needs to outlive it; on disk, Azurite's table store of a million rows no
    # longer fits in the one JSON text it saves (local/servers.py).
    with azurite(folder / "azurite", folder / "azurite.log", in_memory=True) as storage:
        loading = time.perf_counter()
        with entra_running(data_dir=folder / "entra", log_path=folder / "entra.log", tenant=str(tenant_file),
                           limits=True, faults={"latencyMs": latency_ms}, timeout=600) as sim:
            loaded = time.perf_counter() - loading
            tenant_file.unlink()
            pid = sim.process.proc.pid if sim.process.proc else 0
            print(f"(tenant of {users} users generated in {generated:.1f} s, loaded by the simulator in "
                  f"{loaded:.1f} s, simulator RSS {process_rss_mb(pid)[1]:.0f} MB)", file=sys.stderr, flush=True)

            def admin(method: str, path: str, body: Any) -> Any:
                return sim.admin(method, path, body)

            outcome = asyncio.run(scenarios(users, changes, read_only, sim.tenant_id, sim.url, storage,
                                            str(tls.ca), admin, lambda line: print(line, flush=True), deadline))
            sim_peak, sim_now = process_rss_mb(pid)
            print(f"sync {users} simulator: generated in {generated:.1f} s, loaded in {loaded:.1f} s, RSS peak "
                  f"{sim_peak:.0f} MB, now {sim_now:.0f} MB", flush=True)
    print(summary(outcome), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the benchmark, one child process per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default=DEFAULT_SIZES, help="tenant sizes, comma-separated")
    parser.add_argument("--groups", type=int, default=20, help="nested trees under the sync group")
    parser.add_argument("--depth", type=int, default=3, help="levels of each tree")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every Graph request")
    parser.add_argument("--changes", default="0,100,1000", help="changes before each incremental run")
    parser.add_argument("--read-only", action="store_true",
                        help="only the initial run, as a dry run: Graph reads and planning without Table writes")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds per size after which no scenario is started (and a running one stops)")
    args = parser.parse_args(argv)
    sizes = [int(u.replace("_", "")) for u in str(args.users).split(",") if u.strip()]
    changes = [int(c) for c in args.changes.split(",") if c.strip()]
    if len(sizes) > 1:
        rest = [f"--groups={args.groups}", f"--depth={args.depth}", f"--latency-ms={args.latency_ms}",
                f"--changes={args.changes}", *(["--read-only"] if args.read_only else []),
                *([f"--time-budget={args.time_budget}"] if args.time_budget is not None else [])]
        failed = 0
        for size in sizes:
            failed |= subprocess.run([sys.executable, "-m", "bench.sync", f"--users={size}", *rest],
                                     check=False).returncode
        return 1 if failed else 0
    with tempfile.TemporaryDirectory(prefix=f"bench-sync-{uuid.uuid4().hex[:6]}-") as folder:
        run(sizes[0], args.groups, args.depth, args.latency_ms, changes, args.read_only, Path(folder),
            args.time_budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
