"""User and group sync on the reconcile engine (shared.services.reconcile): lease, read, plan, threshold, apply.

Order of a run: take the connection's lease (one run at a time); read Entra - the first run (or a
resync after a delta token expired, 410) reads the group tree with a first `groups/delta` round per
50 groups and the users' attributes with `transitiveMembers`; later runs read only `users/delta` and
the `groups/delta` rounds of the groups under the sync groups, and recompute effective membership
locally (shared.domain.sync.GroupTree). Any failed or incomplete page aborts the run before anything is
written. Then plan (shared.domain.sync), stop with an alert if removals exceed the threshold, write rows,
carry out the removal behaviour, keep the enrollment-state groups, and only then store the new delta
links and tree (shared.services.ports.SyncStateRepository), so a run that stops early is read again next time.
The engine holds the lease, checks the threshold, applies and audits each removal, and reports; the rules
of the plan are shared.domain.sync, and `_SyncRun` below is the sync's read, plan and apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.config import Connection
from shared.domain import rotation as rotation_policy
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.domain.enrollment import target
from shared.domain.sync import (
    EntraUser,
    GroupTree,
    RowDigests,
    SeenIds,
    SyncPlan,
    affected_users,
    blocked,
    chunks,
    new_row,
    plan,
    removed_row,
    row_digest,
    scope,
    scope_among,
    user_changes,
)
from shared.errors import BridgeError, Conflict, Gone, Stop, Throttled, Transient, root_cause, translated
from shared.messages import WorkMessage
from shared.services.audit_context import AuditContext
from shared.services.concurrency import together
from shared.services.directory import Directory
from shared.services.enrollment_groups import EnrollmentGroups
from shared.services.events import recover_user_events, user_events
from shared.services.ports import (
    AuditSink,
    Clock,
    DeltaState,
    DirectoryReader,
    EnrollmentDelta,
    EventOutbox,
    GroupWriter,
    JsonObject,
    Lease,
    Leases,
    SecretStore,
    SyncStateRepository,
    WorkQueue,
)
from shared.services.reconcile import Capability, Done, Report, ThresholdExceeded, reconcile
from shared.topology import Queue

__all__ = ["DeltaState", "SyncReport", "SyncService", "SyncStatus"]

log = logging.getLogger(__name__)

#: A run holds its connection's lease this long past its last renewal: a run that died is shown as running
#: (and blocks the next one) for at most this long.
LEASE = dt.timedelta(minutes=2)
#: A live run renews its lease this often.
LEASE_RENEWAL = dt.timedelta(seconds=30)
#: The scope of a connection's sync lease (shared.services.ports.Leases).
LEASE_SCOPE = "sync"
ACTOR = "sync"
#: Planned ids kept per kind (add, update, remove) for `GET connections/{c}/runs/{runId}`.
PLANNED_IDS_KEPT = 100
WRITE_CONCURRENCY = 16
#: All-or-nothing writes of user rows in flight at once (shared.services.ports.UserRepository.put_many).
BATCH_CONCURRENCY = 4
#: Removals (secret soft-delete, audit record) carried out at once.
REMOVAL_CONCURRENCY = 8
#: Users planned together on a full run: the size of a `transitiveMembers` page.
PAGE_USERS = 999
#: Planned pages waiting for the writer on a full run: reads stay at most this far ahead of writes.
QUEUE_PAGES = 4
#: A partition with at least this many rows waiting is written before it fills a transaction when the import's
#: writer would otherwise wait for the next page (its rows are in storage's idle time instead of after the read).
IDLE_WRITE_ROWS = 25

Progress = Callable[[str, int, int], None]


@dataclass
class ReadResult:
    """A complete incremental read of Entra for one run: the changes, and the users they concern."""

    state: DeltaState
    #: The tree before the run (the stored one).
    before: GroupTree
    changed: dict[str, Mapping[str, object]]
    deleted: set[str]
    dirty: set[str]
    gone_groups: set[str]
    #: Users whose row may change: in the users delta, or whose membership differs between the trees.
    affected: set[str]
    mode: str


@dataclass
class SyncReport:
    """What one run did (also what `SyncStateRepository.put_run` records)."""

    run_id: str
    connection: str
    started_at: str
    outcome: str = "running"  # completed | dry-run | blocked | aborted | failed (never stored as running)
    mode: str = ""  # full | incremental
    resynced: str | None = None  # why an incremental run became a full one
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    missing_in_entra: int = 0
    #: Directory rows read to plan (an incremental run reads only the rows of the users its changes concern).
    rows_read: int = 0
    errors: int = 0
    resource_units: int = 0
    duration_seconds: float = 0.0
    enrollment_changes: int | None = None
    alert: str | None = None
    #: How many users the plan would add, update and remove.
    planned: dict[str, int] = field(default_factory=dict)
    #: The first PLANNED_IDS_KEPT ids of each; status shows counts, `GET .../runs/{runId}` the ids.
    planned_ids: dict[str, list[str]] = field(default_factory=dict)
    #: Why the run aborted or failed: RFC 9457 members of the root error (type, title, detail, setting...).
    problem: dict[str, object] | None = None

    def row(self) -> JsonObject:
        """The recorded form: camelCase members, absent ones left out."""
        return {_camel(k): v for k, v in asdict(self).items() if v is not None}

    def failed(self, err: BridgeError) -> None:
        """Record that the run ended on `err` (unless it already recorded why it stopped)."""
        if self.outcome == "running":
            self.outcome = "failed"
        if self.problem is None:
            self.problem = root_cause(err).problem()


@dataclass
class SyncStatus:
    """What status shows of a connection's sync: the last recorded run, and the run holding the lease now."""

    last_run: JsonObject | None
    #: {"runId", "leaseUntil"} while a live run holds the lease; None otherwise (a dead run's lease expires).
    running: JsonObject | None

    def problems(self) -> list[str]:
        """One line per thing to fix, naming the setting when the error does."""
        last = self.last_run or {}
        problem = last.get("problem") if isinstance(last.get("problem"), dict) else None
        if problem:
            setting = f" (setting {problem['setting']})" if problem.get("setting") else ""
            return [f"sync {last.get('outcome')}: {last.get('alert') or problem.get('detail')}{setting}"]
        if last.get("alert"):
            return [f"sync: {last['alert']}"]
        return []


def _target(row: UserRow | None) -> Enrollment | None:
    return target(row) if row is not None else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class SyncService:
    """Runs syncs for connections."""

    def __init__(self, *, directory: Directory, state: SyncStateRepository, leases: Leases, audit: AuditSink,
                 queue: WorkQueue, clock: Clock, secrets: SecretStore | None = None,
                 enrollment_groups: EnrollmentGroups | None = None, events: EventOutbox | None = None) -> None:
        self._directory = directory
        self._events = events
        self._state = state
        self._leases = leases
        self._audit = audit
        self._queue = queue
        self._clock = clock
        self._secrets = secrets
        #: The enrollment-state groups, kept by each run when given.
        self.enrollment_groups = enrollment_groups

    # ------------------------------------------------------------------ planning runs

    async def request(self, conn: Connection, *, actor: str, correlation_id: str, dry_run: bool = False,
                      full: bool = False, notified: bool = False) -> str:
        """Queue a run now; returns its run id (`notified`: queued by a Graph change notification, whose
        marker the run removes as it starts, docs/notifications.md)."""
        if not conn.features.sync.enabled:
            raise Conflict(f"sync is not enabled for connection {conn.name!r} (features.sync.enabled)")
        run_id = f"sync-{uuid.uuid4().hex[:12]}"
        message = WorkMessage(connection=conn.name, kind="sync", target=conn.name, idempotency_key=run_id,
                              correlation_id=correlation_id, args={"actor": actor, "dryRun": dry_run, "full": full,
                                    **({"notified": True} if notified else {})})
        await self._queue.send(Queue.SYNC, message.model_dump(mode="json", by_alias=True))
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id,
                             run_id=run_id)
        await audit.record("sync.requested", conn.name, "queued")
        return run_id

    async def last_run(self, connection: str, *, dry_run: bool = False) -> JsonObject | None:
        """The last real run of a connection (`lastRun`), or its last dry run (`lastDryRun`), if any."""
        return await self._state.last_run(connection, dry_run=dry_run)

    async def status(self, connection: str) -> SyncStatus:
        """The last run and whether a run is alive now: "running" comes from a live lease, never from a record."""
        last = await self.last_run(connection)
        lease = await self._leases.holder(LEASE_SCOPE, connection)
        running: JsonObject | None = None
        if lease is not None:
            running = {"runId": lease.owner, "leaseUntil": lease.until.isoformat()}
        if last is not None and last.get("outcome") == "running" and (running is None or
                                                                      running["runId"] != last.get("runId")):
            # Written by a version that stored a run's state before its end: the run is gone.
            last["outcome"] = "failed"
            last["problem"] = BridgeError("the run ended without recording its outcome").problem()
        return SyncStatus(last_run=last, running=running)

    async def fail(self, conn: Connection, err: BaseException, *, run_id: str, correlation_id: str) -> SyncReport:
        """Record a run that failed before it could start (its Graph client or credential could not be built)."""
        report = SyncReport(run_id=run_id, connection=conn.name, started_at=self._clock.now().isoformat())
        problem = translated(err)
        report.failed(problem)
        await self._state.put_run(conn.name, report.row())
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id,
                             run_id=run_id)
        await audit.record("sync.failed", conn.name, "failed", graph_request_id=problem.request_id,
                           reason=problem.detail)
        return report

    # ------------------------------------------------------------------ one run

    async def run(self, conn: Connection, reader: DirectoryReader, *, run_id: str, correlation_id: str,
                  dry_run: bool = False, progress: Progress | None = None, full: bool = False,
                  groups: GroupWriter | None = None) -> SyncReport:
        """One sync of `conn` on the reconcile engine: incremental when a delta state exists, full otherwise (or
        when asked). The delta links are stored after the engine's report, so a run that stopped is read again."""
        started = time.monotonic()
        report = SyncReport(run_id=run_id, connection=conn.name, started_at=self._clock.now().isoformat())
        dry_run = dry_run or conn.dry_run
        writer = groups if groups is not None else (reader if isinstance(reader, GroupWriter) else None)
        lease = _RunLease(self, conn.name, run_id)
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id,
                             run_id=run_id)
        job = _SyncRun(self, conn, reader, report, audit, lease, dry_run=dry_run, full=full, progress=progress,
                       groups=writer)
        try:
            await self._reconcile(job)
        except Exception as exc:
            if lease.held is None:
                raise  # the lease was not taken (another run holds it): nothing of this run happened
            failure = translated(exc)
            if failure is not exc:
                log.exception("sync %s of %s failed unexpectedly", run_id, conn.name)
            if report.outcome == "running":
                await audit.record("sync.failed", conn.name, "failed", graph_request_id=failure.request_id,
                                   reason=failure.detail)
            report.failed(failure)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            await job.close()
            if lease.held is not None:
                if report.outcome == "running":  # cancelled (the host's timeout, a shutdown)
                    report.failed(BridgeError("the run was interrupted before it ended (functionTimeout or a restart)"))
                extra = getattr(writer, "resource_units", 0) if writer is not None and id(writer) != id(reader) else 0
                report.resource_units = reader.resource_units + (extra if isinstance(extra, int) else 0)
                report.duration_seconds = round(time.monotonic() - started, 3)
                await self._state.put_run(conn.name, report.row(), dry_run=dry_run)
        await audit.record("sync.completed", conn.name, report.outcome, mode=report.mode, added=report.added,
                           updated=report.updated, removed=report.removed, unchanged=report.unchanged,
                           missingInEntra=report.missing_in_entra)
        await audit.flush()  # the end of a run anchors its audit chains (docs/audit.md)
        return report

    async def _reconcile(self, job: _SyncRun) -> None:
        """Run `job` on the engine (which ends an applied run with `_store`), then fill in the report."""
        conn, report = job.conn, job.report
        try:
            engine = await reconcile(job, job.audit, dry_run=job.dry_run, limit=job.limit, lease=job.lease,
                                     stream=True, concurrency=REMOVAL_CONCURRENCY)
        except ThresholdExceeded as stop:
            await self._blocked(job, stop.detail)
            return
        except BridgeError as err:
            cause = root_cause(err)
            if job.lease.held is None or job.read_done or not (cause.retryable or isinstance(cause, Stop)):
                raise  # no read can be made (a token, a permission, a missing group): the run failed
            report.outcome = "aborted"
            report.alert = f"incomplete read, nothing removed: {err.detail}"
            report.errors += 1
            await job.audit.record("sync.aborted", conn.name, "aborted", graph_request_id=err.request_id,
                                   reason=err.detail)
            report.problem = cause.problem()
            raise Stop(report.alert, request_id=err.request_id) from err
        if engine.stopped:  # a dry run over the threshold
            await self._blocked(job, engine.stopped)
            return
        report.added, report.updated = job.changes_added, job.changes_updated
        if job.delta is not None:
            changes = job.changes
            report.added, report.updated, report.removed = len(changes.add), len(changes.update), len(changes.remove)
        elif job.sweep is not None:
            report.removed = len(job.sweep.removals)
        if job.dry_run:
            report.outcome = "dry-run"

    async def _store(self, job: _SyncRun) -> None:
        """The end of an applied run, still under its lease: store the new state (delta links last of what the
        run read), then keep the enrollment-state groups."""
        conn, report, writer = job.conn, job.report, job.groups
        delta, changes = job.delta, job.changes
        if delta is not None:
            read = delta.read
            read.state.rows = (read.state.rows or 0) + len(changes.add)
            await self._state.save_delta(conn.name, read.state, changed=read.dirty, gone=read.gone_groups, full=False)
            if conn.features.passkeys.enabled and writer is not None:
                moves = {row.id: (_target(delta.rows.get(row.id)), _target(row))
                         for row in (*changes.add, *changes.update, *changes.remove)}
                await self._enrollment(conn, writer, job.reader, report, job.audit.correlation_id, moves=moves)
        else:
            if job.sweep is None or job.state is None or job.size is None:
                raise BridgeError("the full read ended without its sweep")
            job.state.rows = job.size + job.changes_added
            await self._state.save_delta(conn.name, job.state, changed=job.state.tree.groups(), gone=set(), full=True)
            if conn.features.passkeys.enabled and writer is not None:
                await self._enrollment(conn, writer, job.reader, report, job.audit.correlation_id, moves=None)
        report.outcome = "completed"

    async def _hold(self, connection: str, key: str, before: Mapping[str, UserRow], changes: SyncPlan) -> bool:
        """Hold the events of `changes` under `key` until their rows are written; whether any were held."""
        if self._events is None:
            return False
        events = user_events(connection, before, changes, self._clock.now())
        if events:
            await self._events.hold(connection, key, events)
        return bool(events)

    async def _release(self, connection: str, keys: Sequence[str]) -> None:
        """The rows of these held events are written: record them for publishing."""
        if self._events is not None:
            for key in keys:
                await self._events.release(connection, key)

    def _planned(self, report: SyncReport, changes: SyncPlan) -> None:
        report.missing_in_entra = sum(1 for r in changes.remove if r.state is UserState.MISSING_IN_ENTRA)
        report.planned = {"add": len(changes.add), "update": len(changes.update), "remove": len(changes.remove)}
        report.planned_ids = {"add": [r.id for r in changes.add][:PLANNED_IDS_KEPT],
                              "update": [r.id for r in changes.update][:PLANNED_IDS_KEPT],
                              "remove": [r.id for r in changes.remove][:PLANNED_IDS_KEPT]}

    async def _blocked(self, job: _SyncRun, reason: str) -> None:
        job.report.outcome, job.report.alert = "blocked", reason
        await job.audit.record("sync.blocked", job.conn.name, "blocked", reason=reason)
        log.error("sync of %s blocked: %s", job.conn.name, reason)
    # ------------------------------------------------------------------ reading

    async def _start(self, conn: Connection, reader: DirectoryReader, report: SyncReport,
                     full: bool) -> tuple[list[str], str | None, DeltaState | None]:
        """The sync and rotation roots, and the stored state to continue from (None: a full run)."""
        rotation = conn.features.rotation
        names = [*conn.features.sync.groups, *([rotation.group] if rotation.enabled and rotation.group else [])]
        found = await together(reader.group_id(name) for name in names)
        sync_roots = found[:len(conn.features.sync.groups)]
        rotation_root = found[len(sync_roots)] if len(found) > len(sync_roots) else None
        state = None if full else await self._state.delta(conn.name)
        if state is not None and (state.sync_roots != sync_roots or state.rotation_root != rotation_root):
            report.resynced = "the sync or rotation groups changed"
            state = None
        return sync_roots, rotation_root, state

    async def _read_groups(self, reader: DirectoryReader, tree: GroupTree, groups: set[str]) -> list[dict[str, Any]]:
        """First delta rounds for `groups` and every group nested under them, level by level."""
        links: list[dict[str, Any]] = []
        frontier = set(groups) - tree.groups()
        while frontier:
            found: set[str] = set()
            runs = chunks(frontier)
            # One level's queries side by side; their answers applied in order.
            for ids, read in zip(runs, await together(reader.groups_delta(ids=ids) for ids in runs), strict=True):
                for group in ids:
                    tree.add_group(group)
                for item in read.items:
                    if not item.removed and item.id:
                        nested, _ = tree.apply_members(item.id, item.members)
                        found |= nested
                links.append({"ids": ids, "link": read.link})
            frontier = found - tree.groups()
        return links

    async def _read_incremental(self, reader: DirectoryReader, state: DeltaState,
                                progress: Progress | None) -> ReadResult:
        # The users' link and every group link are independent: read side by side, applied in order.
        users_read = asyncio.ensure_future(reader.users_delta(state.users_link))
        # Its failure is raised below, or replaced by a group link's: either way it counts as seen.
        users_read.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            group_reads = await together(reader.groups_delta(link=str(entry["link"])) for entry in state.group_links)
        except BaseException:
            users_read.cancel()
            raise
        users = await users_read
        changed, deleted = user_changes(users.items)
        tree = state.tree.fork()
        dirty: set[str] = set()
        nested: set[str] = set()
        links: list[dict[str, Any]] = []
        for entry, read in zip(state.group_links, group_reads, strict=True):
            for item in read.items:
                group = item.id
                if not group or group not in tree.users:
                    continue
                dirty.add(group)
                if item.removed:
                    # A deleted group has no members any more; its parents report the removal too.
                    tree.clear(group)
                    continue
                new_groups, _ = tree.apply_members(group, item.members)
                nested |= new_groups
            links.append({"ids": entry["ids"], "link": read.link})
        if deleted:
            dirty |= tree.remove_users(deleted)
        new_groups = nested - tree.groups()
        links += await self._read_groups(reader, tree, new_groups)
        dirty |= new_groups
        roots = [*state.sync_roots, *([state.rotation_root] if state.rotation_root else [])]
        gone = tree.prune(roots)
        affected = affected_users(state.tree, tree, dirty | gone) | set(changed) | deleted
        dirty -= gone
        links = [{"ids": [i for i in e["ids"] if i not in gone], "link": e["link"]} for e in links]
        links = [e for e in links if e["ids"]]
        if progress:
            progress("read", len(affected), len(affected))
        new_state = DeltaState(sync_roots=state.sync_roots, rotation_root=state.rotation_root,
                               users_link=users.link, group_links=links, tree=tree,
                               rows=state.rows, in_scope=state.in_scope, version=state.version)
        return ReadResult(state=new_state, before=state.tree, changed=changed, deleted=deleted, dirty=dirty,
                          gone_groups=gone, affected=affected, mode="incremental")

    # ------------------------------------------------------------------ delta state

    async def forget_state(self, connection: str) -> None:
        """Drop the delta links so the next run reads everything again."""
        await self._state.forget_delta(connection)

    # ------------------------------------------------------------------ writing

    async def _write(self, conn: Connection, chunk: list[UserRow], report: SyncReport, *,
                     new: Collection[str]) -> None:
        """Write one write group's rows all or nothing (`Directory.batches`); `new` are the planned additions,
        every other row was read, so it is stored. A write is safe to repeat, so a dropped connection or a busy
        answer gets one more try, and a refused group (a bad row, or a row another writer created or deleted
        since the read) is written row by row as inserts-or-replaces, so a bad row costs one error."""
        try:
            try:
                await self._directory.put_many(conn.name, chunk, new=new)
            except (Transient, Throttled) as err:
                await asyncio.sleep(min(getattr(err, "retry_after", 0.0) or 0.5, 5.0))
                await self._directory.put_many(conn.name, chunk, new=new)
        except BridgeError as err:
            log.info("a batch of %d users was refused (%s); writing them one by one", len(chunk), err.detail)
            for row in chunk:
                try:
                    await self._directory.put(conn.name, row)
                except BridgeError as single:
                    report.errors += 1
                    log.warning("could not store user %s: %s", row.id, single.detail)

    async def _enrollment(self, conn: Connection, writer: GroupWriter, reader: DirectoryReader, report: SyncReport,
                          correlation_id: str, *,
                          moves: Mapping[str, tuple[Enrollment | None, Enrollment | None]] | None) -> None:
        """Keep the enrollment-state groups equal to the users' states.

        A full run (`moves` None) reconciles every user, drift repaired both ways, and starts a `groups/delta`
        link on the three groups. An incremental run moves only the users whose group this run changed, then
        reads that link: members added or removed since by anyone else are put back as their rows say (point
        reads of those users only). Every user is reconciled again when a group went missing, the link cannot
        be followed, or an earlier run's update failed (marked pending in the sync state).
        """
        if self.enrollment_groups is None:
            return
        groups = self.enrollment_groups
        run_id = report.run_id
        try:
            if moves is not None:
                pending = await self._state.enrollment_pending(conn.name)
                present = await groups.present(conn, writer, correlation_id=correlation_id, run_id=run_id)
                ids = await groups.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
                kept = await self._state.enrollment_delta(conn.name)
                if not pending and present and kept is not None and kept.ids == sorted(ids.values()):
                    moved = await groups.move_users(conn, writer, moves, correlation_id=correlation_id, run_id=run_id)
                    repaired = await self._repair(conn, groups, writer, reader, report, ids, kept.link,
                                                  correlation_id)
                    if repaired is not None:
                        report.enrollment_changes = moved.changes + repaired
                        return
            changes = await groups.reconcile(conn, writer, self._directory.scan(conn.name),
                                             correlation_id=correlation_id, run_id=run_id)
            report.enrollment_changes = changes.changes
            ids = await groups.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
            first = await reader.groups_delta(ids=sorted(ids.values()))
            await self._state.put_enrollment_delta(conn.name, EnrollmentDelta(sorted(ids.values()), first.link))
            await self._state.set_enrollment_pending(conn.name, None)
        except BridgeError as err:
            # The directory is already right; every user's group is checked on the next run.
            report.errors += 1
            report.alert = f"enrollment-state groups not updated: {err.detail}"
            log.warning("sync of %s: %s", conn.name, report.alert)
            with contextlib.suppress(BridgeError):
                await self._state.set_enrollment_pending(conn.name, run_id)

    async def _repair(self, conn: Connection, groups: EnrollmentGroups, writer: GroupWriter, reader: DirectoryReader,
                      report: SyncReport, ids: Mapping[Enrollment, str], link: str, correlation_id: str) -> int | None:
        """Repair the members others changed since the last round of the groups' delta link; None when the
        link cannot be followed or a group was deleted (the caller then reconciles every user)."""
        try:
            read = await reader.groups_delta(link=link)
        except Gone:
            return None
        state_of = {group_id: state for state, group_id in ids.items()}
        seen: dict[str, dict[Enrollment, bool]] = {}
        for item in read.items:
            state = state_of.get(item.id)
            if state is None:
                continue
            if item.removed:
                return None
            for member in item.members:
                if member.id:
                    seen.setdefault(member.id, {})[state] = not member.removed
        rows = await self._directory.get_many(conn.name, seen)
        report.rows_read += len(seen)
        changes = await groups.repair(conn, writer, seen, rows, correlation_id=correlation_id,
                                                      run_id=report.run_id)
        await self._state.put_enrollment_delta(conn.name, EnrollmentDelta(sorted(ids.values()), read.link))
        return changes.changes

    # ------------------------------------------------------------------ the lease

    async def _take_lease(self, connection: str, run_id: str) -> Lease:
        taken = await self._leases.take(LEASE_SCOPE, connection, run_id, LEASE.total_seconds())
        if taken is not None:
            return taken
        holder = await self._leases.holder(LEASE_SCOPE, connection)
        if holder is None:
            raise Conflict(f"a sync of {connection!r} has just started; try again later")
        raise Conflict(f"a sync of {connection!r} ({holder.owner}) is running until {holder.until:%H:%M:%S} UTC")


class _RunLease:
    """The connection's sync lease as the engine's lease hook: taken as the run starts (Conflict while another
    live run holds it), renewed in the background, given back at the end; `lost` once another run took it."""

    def __init__(self, service: SyncService, connection: str, run_id: str) -> None:
        self._service = service
        self.connection = connection
        self.run_id = run_id
        #: The lease as last written; None until it was taken.
        self.held: Lease | None = None
        self.lost = False

    def check(self, what: str) -> None:
        """Raise Conflict when another run took the lease over (`what`: what this run leaves unwritten)."""
        if self.lost:
            raise Conflict(f"the sync lease of {self.connection!r} was taken over by another run; {what}")

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        self.held = await self._service._take_lease(self.connection, self.run_id)
        ended = asyncio.Event()
        renewal = asyncio.get_running_loop().create_task(self._keep(ended))
        try:
            yield
        finally:
            ended.set()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            await self._release()

    async def _keep(self, ended: asyncio.Event) -> None:
        """Renew the lease while the run lives; a lease taken over by another run is marked lost."""
        leases = self._service._leases
        while not self.lost and self.held is not None:
            try:
                await asyncio.wait_for(ended.wait(), LEASE_RENEWAL.total_seconds())
                return
            except TimeoutError:
                pass
            try:
                self.held = await leases.renew(self.held, LEASE.total_seconds())
            except Conflict:
                self.lost = True
                log.warning("the sync lease of %s was taken over while run %s was reading", self.connection,
                            self.run_id)
            except BridgeError as err:
                log.warning("the sync lease of %s could not be renewed (%s); trying again", self.connection,
                            err.detail)

    async def _release(self) -> None:
        if self.lost or self.held is None:
            return
        try:
            await self._service._leases.release(self.held)
        except BridgeError:
            log.info("the sync lease of %s could not be given back; it expires", self.connection)


@dataclass(frozen=True)
class _Rows:
    """Rows of users in scope to write (added or updated): one action, written in all-or-nothing groups."""

    changes: SyncPlan
    #: A full run's page: handed to the run's writer, which writes while the next pages are read.
    queued: bool = False
    kind: str = "write"
    #: The connection (the target of a failed write's audit record).
    target: str = ""
    removals: int = 0

    @property
    def rows(self) -> list[UserRow]:
        """The rows to write."""
        return [*self.changes.add, *self.changes.update]


@dataclass(frozen=True)
class _Removal:
    """A user no longer in scope (or deleted in Entra): its row in its removed state, its secret, its record."""

    row: UserRow
    removals: int = 1

    @property
    def kind(self) -> str:
        """The audit action."""
        return "user.missingInEntra" if self.row.state is UserState.MISSING_IN_ENTRA else "user.removed"

    @property
    def target(self) -> str:
        """The user."""
        return self.row.id


_Action = _Rows | _Removal


@dataclass
class _Delta:
    """An incremental run's one batch: the complete read, and the rows and attributes of the users it concerns."""

    read: ReadResult
    rows: dict[str, UserRow]
    seen: dict[str, EntraUser]
    rotation_members: frozenset[str]
    #: The directory's size (the threshold is relative to it), and the users in scope before the run.
    size: int
    in_scope: int
    concerned: set[str]


@dataclass
class _Page:
    """A page of a full run: the users read, and the stored rows of those whose row may change."""

    number: int
    before: dict[str, UserRow]
    users: dict[str, EntraUser]
    now: dt.datetime


@dataclass
class _Sweep:
    """The last batch of a full run, read once every page was: the stored rows of users no longer read."""

    removals: list[UserRow]
    #: The stored rows of the removals, for their events.
    originals: dict[str, UserRow]


_Batch = _Delta | _Page | _Sweep


class _Writer:
    """A full run's writer: rows of one write group go as one all-or-nothing write once there are as many as it
    takes (the rest at the end), BATCH_CONCURRENCY writes at a time, while the reader stays at most QUEUE_PAGES
    pages ahead."""

    def __init__(self, job: _SyncRun) -> None:
        self._job = job
        #: Pages of rows, each with whether it is a planned addition (None: the read ended).
        self._queue: asyncio.Queue[list[tuple[UserRow, bool]] | None] = asyncio.Queue(maxsize=QUEUE_PAGES)
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def offer(self, rows: list[UserRow] | None, new: Collection[str] = ()) -> None:
        """Queue a page's rows, `new` the planned additions among them (None: the read ended); the writer's error
        when it failed."""
        if self._task.done():
            self._task.result()
            raise Stop("the writer of the import stopped before the read ended")
        put = asyncio.ensure_future(self._queue.put(None if rows is None else [(r, r.id in new) for r in rows]))
        done, _ = await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:  # the writer ended first: only by failing
            put.cancel()
            self._task.result()  # the writer failed: its error ends the run
            raise Stop("the writer of the import stopped before the read ended")

    async def finish(self) -> None:
        """Write what is queued and wait for every write."""
        await self.offer(None)
        await self._task

    async def close(self) -> None:
        """Stop writing (a run that ended early)."""
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _drain(self) -> None:
        job = self._job
        directory, connection = job.service._directory, job.conn.name
        pending: dict[str, list[tuple[UserRow, bool]]] = {}
        semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)
        in_flight: set[asyncio.Task[None]] = set()
        done = 0

        async def send(chunk: list[tuple[UserRow, bool]]) -> None:
            nonlocal done
            try:
                await job.service._write(job.conn, [row for row, _ in chunk], job.report,
                                         new={row.id for row, added in chunk if added})
            finally:
                semaphore.release()
            done += len(chunk)
            if job.progress:
                job.progress("write", done, done)

        async def start(chunk: list[tuple[UserRow, bool]]) -> None:
            job.lease.check("nothing more written")
            await semaphore.acquire()
            task = asyncio.get_running_loop().create_task(send(chunk))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            for finished in [t for t in list(in_flight) if t.done()]:
                finished.result()

        async def next_page() -> list[tuple[UserRow, bool]] | None:
            """The next page of rows; while the reader waits on Graph and storage has room, the fullest waiting
            partitions are written early (a directory whose partitions never fill a transaction during the
            read would otherwise be written only after it)."""
            getter = asyncio.ensure_future(self._queue.get())
            try:
                while not getter.done():
                    while pending and len(in_flight) < BATCH_CONCURRENCY:
                        key = max(pending, key=lambda k: len(pending[k]))
                        if len(pending[key]) < IDLE_WRITE_ROWS:
                            break
                        await start(pending.pop(key))
                    await asyncio.wait({getter, *in_flight}, return_when=asyncio.FIRST_COMPLETED)
                return getter.result()
            finally:
                getter.cancel()

        try:
            while (rows := await next_page()) is not None:
                for row, added in rows:
                    key = directory.batch_key(connection, row.id)
                    chunk = pending.setdefault(key, [])
                    chunk.append((row, added))
                    if len(chunk) >= directory.batch_rows:
                        await start(pending.pop(key))
            for chunk in pending.values():
                await start(chunk)
            pending.clear()
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()


class _SyncRun(Capability[_Batch, _Action]):
    """One sync run on the reconcile engine (shared.services.reconcile).

    An incremental run reads its changes as one batch (`_Delta`), held whole until the threshold is checked. A
    full run streams: each page (`_Page`) is planned as it is read and its rows handed to the writer; the sweep
    of stored rows no longer read (`_Sweep`) comes last, once every page was read and written, and its removals
    wait for the threshold. The removal threshold counts the run's departures (active users leaving) against
    the directory's kept size (shared.domain.sync.blocked).
    """

    def __init__(self, service: SyncService, conn: Connection, reader: DirectoryReader, report: SyncReport,
                 audit: AuditContext, lease: _RunLease, *, dry_run: bool, full: bool,
                 progress: Progress | None, groups: GroupWriter | None) -> None:
        self.service = service
        self.conn = conn
        self.reader = reader
        self.report = report
        self.audit = audit
        self.lease = lease
        self.dry_run = dry_run
        self.full = full
        self.progress = progress
        #: Where the enrollment-state groups are kept (None: not kept by this run).
        self.groups = groups
        #: Set once the read ended: a failure before it aborts the run, nothing removed.
        self.read_done = False
        self.delta: _Delta | None = None
        self.changes = SyncPlan()
        #: A full run's new state, the ids it read, its sweep.
        self.state: DeltaState | None = None
        self.sweep: _Sweep | None = None
        self.departures = 0
        self.size: int | None = None
        self.writer: _Writer | None = None
        self._rotation_members = frozenset[str]()
        self._pages: list[str] = []  # the keys of the pages whose events are held
        self._held: str | None = None
        self._errors = 0
        self._seen = SeenIds()
        self._started_empty = False
        self.changes_added = 0
        self.changes_updated = 0

    # ------------------------------------------------------------------ read

    async def read(self) -> AsyncIterator[_Batch]:
        conn, report, service = self.conn, self.report, self.service
        if not self.dry_run:
            async def stored(ids: Collection[str]) -> Mapping[str, UserRow]:
                return await service._directory.get_many(conn.name, ids)

            # Events held by a run that stopped: released when the stored row proves the change.
            await recover_user_events(service._events, conn.name, stored)
        sync_roots, rotation_root, state = await service._start(conn, self.reader, report, self.full)
        if state is not None:
            try:
                self.delta = await self._read_delta(state)
            except Gone as err:
                report.resynced = f"a delta link cannot be used any more (expired, or for another Graph " \
                                  f"host): {err.detail}"
                log.info("sync of %s: %s; reading everything again", conn.name, report.resynced)
            else:
                yield self.delta
                self.read_done = True
                return
        if report.resynced:
            await self.audit.record("sync.resync", conn.name, "full", reason=report.resynced)
        async for page in self._import(sync_roots, rotation_root):
            yield page
        self.sweep = await self._sweep()
        yield self.sweep
        self.read_done = True

    async def _read_delta(self, state: DeltaState) -> _Delta:
        """Read the changes, then the rows of the users they concern only (point reads)."""
        conn, service, reader = self.conn, self.service, self.reader
        if not self.dry_run:
            await service._directory.lay_out(conn.name, None)  # stored once for a directory laid out before
        read = await service._read_incremental(reader, state, self.progress)
        self.report.mode = "incremental"
        tree, before, rotation = read.state.tree, read.before, state.rotation_root
        members = scope_among(tree, state.sync_roots, read.affected)
        was_in_scope = scope_among(before, state.sync_roots, read.affected)
        rotation_members = frozenset(tree.among(rotation, read.affected)) if rotation else frozenset[str]()
        was_rotating = before.among(rotation, read.affected) if rotation else set()
        # A user the tree changes only moved within the same sync groups and rotation group (e.g. between
        # nested groups) keeps the row it has: it is not read.
        concerned = {uid for uid in read.affected
                     if uid in read.changed or uid in read.deleted or members.get(uid) != was_in_scope.get(uid)
                     or (uid in rotation_members) != (uid in was_rotating)}
        rows = await service._directory.get_many(conn.name, concerned)
        self.report.rows_read = len(concerned)
        attributes = {uid: EntraUser.from_row(row) for uid, row in rows.items()}
        for uid, change in read.changed.items():
            if uid in attributes:
                attributes[uid] = attributes[uid].updated(change)
            elif change.get("userPrincipalName"):
                attributes[uid] = EntraUser.from_graph(change, "")
        missing = sorted(uid for uid in members if uid in concerned and uid not in attributes
                         and uid not in read.deleted)
        if missing:
            for user in await reader.users(missing):
                attributes[user.id] = user
        seen = {uid: attributes[uid].with_groups(roots) for uid, roots in members.items()
                if uid in concerned and uid in attributes and uid not in read.deleted}
        if state.rows is None or state.in_scope is None:
            # A state stored before the counts were kept: counted once, then kept by every run.
            state.rows = await service._directory.count(conn.name)
            state.in_scope = len(scope(before, state.sync_roots))
        read.state.rows = state.rows
        in_scope = state.in_scope - sum(1 for uid in was_in_scope if uid in concerned) + len(seen)
        read.state.in_scope = in_scope
        return _Delta(read=read, rows=rows, seen=seen, rotation_members=rotation_members, size=state.rows,
                      in_scope=in_scope, concerned=concerned)

    async def _import(self, sync_roots: list[str], rotation_root: str | None) -> AsyncIterator[_Page]:
        """Read every user of the sync groups page by page; only the tree and the ids read are kept."""
        conn, report, reader, service = self.conn, self.report, self.reader, self.service
        report.mode = "full"
        # The users link is taken first: a change made while the tree is read shows up again next run.
        users_link = await reader.users_delta_latest()
        tree = GroupTree()
        roots = [*sync_roots, *([rotation_root] if rotation_root else [])]
        links = await service._read_groups(reader, tree, set(roots))
        self._rotation_members = frozenset(tree.effective(rotation_root)) if rotation_root else frozenset[str]()
        empty = self._started_empty = await service._directory.is_empty(conn.name)
        if not self.dry_run:
            # A directory's first import spreads its rows for the size Entra expects (UserRepository.lay_out).
            await service._directory.lay_out(conn.name, await self._expected_users(sync_roots) if empty else None)
        # Against a directory that holds rows, the stored rows' digests tell which users changed: only their
        # rows are read again (for what only the bridge keeps: first seen, enrollment).
        digests: RowDigests | None = None
        if not empty:
            digests = RowDigests()
            async for row in service._directory.scan(conn.name):
                digests.add(row)
            report.rows_read += len(digests)
        errors = report.errors
        if not self.dry_run:
            # Rows are written as they are read: until this run stores its own state, the next run is a full one.
            await service.forget_state(conn.name)
            self.writer = _Writer(self)
        seen = SeenIds()
        report.planned_ids = {"add": [], "update": [], "remove": []}
        number = 0

        async def page(items: list[EntraUser], position: int) -> _Page:
            nonlocal number
            by_id = {user.id: user for user in items}
            members = scope_among(tree, sync_roots, by_id)
            # A user in several sync groups is planned with the first of them that lists it.
            chosen = {uid: r for uid, r in members.items()
                      if position < 0 or not any(sync_roots.index(root) < position for root in r)}
            users = {uid: by_id[uid].with_groups(r) for uid, r in chosen.items()}
            now = service._clock.now()
            if digests is not None:
                stored = {uid: digests.get(uid) for uid in users}
                same = {uid for uid, user in users.items() if stored[uid] is not None and stored[uid] == row_digest(
                    new_row(None, user, in_rotation_group=uid in self._rotation_members, now=now))}
                users = {uid: user for uid, user in users.items() if uid not in same}
                wanted = [uid for uid in users if stored[uid] is not None]
            else:
                same, wanted = set(), ([] if empty else list(users))
            before = await service._directory.get_many(conn.name, wanted) if wanted else {}
            report.rows_read += len(wanted)
            report.unchanged += len(same)
            for uid in chosen:
                seen.add(uid)
            if self.progress:
                self.progress("read", len(seen), 0)
            number += 1
            return _Page(number=number, before=before, users=users, now=now)

        for position, root in enumerate(sync_roots):
            batch: list[EntraUser] = []
            async for item in reader.transitive_users(root):
                batch.append(item)
                if len(batch) >= PAGE_USERS:
                    yield await page(batch, position)
                    batch = []
            if batch:
                yield await page(batch, position)
        # Users in the tree that the transitive reads did not list (Graph is eventually consistent).
        missing = sorted({uid for group in tree.reachable(sync_roots) for uid in tree.users[group] if uid not in seen})
        for start in range(0, len(missing), PAGE_USERS):
            found = await reader.users(missing[start:start + PAGE_USERS])
            if found:
                yield await page(found, -1)
        if self.writer is not None:
            await self.writer.finish()
            if report.errors == errors:
                await service._release(conn.name, self._pages)  # else the next run proves each one
        self.state = DeltaState(sync_roots=sync_roots, rotation_root=rotation_root, users_link=users_link,
                                group_links=links, tree=tree, in_scope=len(seen))
        self._seen = seen

    async def _stored_rows(self) -> AsyncIterator[UserRow]:
        """The directory's rows after an import (none to read when it started empty)."""
        if not self._started_empty:
            async for row in self.service._directory.scan(self.conn.name):
                yield row

    async def _expected_users(self, sync_roots: list[str]) -> int | None:
        """Entra's estimate of the users in the sync groups (a user in two counted twice); None without one."""
        try:
            counts = await together(self.reader.count_users(root) for root in sync_roots)
        except BridgeError as err:
            log.info("sync of %s: no count of the sync groups' users (%s); the directory gets the default layout",
                     self.conn.name, err.detail)
            return None
        return sum(c for c in counts if c is not None) if any(c is not None for c in counts) else None

    async def _sweep(self) -> _Sweep:
        """The stored rows of users no longer read (every row was written, so the count is the directory's). A
        directory that was empty has none: every row in it is one this run wrote (only sync adds rows, under its
        lease), so it is not read again."""
        conn, report = self.conn, self.report
        removal, threshold = conn.features.sync.removal, conn.features.sync.removal_threshold
        removals: list[UserRow] = []
        originals: dict[str, UserRow] = {}
        departures = rows = 0
        async for row in self._stored_rows():
            rows += 1
            if row.id in self._seen:
                continue
            gone = removed_row(row, removal, deleted=False)
            if gone is None:
                continue
            if row.state is UserState.ACTIVE:
                departures += 1
            if departures <= threshold.absolute:  # beyond it the run is blocked whatever the size: keep no more
                removals.append(gone)
                originals[row.id] = row
        self.departures = departures
        self.size = rows - (0 if self.dry_run or self._started_empty else self.changes_added)
        report.planned = {"add": self.changes_added, "update": self.changes_updated,
                          "remove": len(removals) if departures <= threshold.absolute else departures}
        report.planned_ids["remove"] = [r.id for r in removals][:PLANNED_IDS_KEPT]
        report.missing_in_entra = sum(1 for r in removals if r.state is UserState.MISSING_IN_ENTRA)
        # The rows of the users read are written already (a dry run only counts them).
        report.added, report.updated = self.changes_added, self.changes_updated
        return _Sweep(removals=removals, originals=originals)

    # ------------------------------------------------------------------ plan

    def streamed(self, batch: _Batch) -> bool:
        return not isinstance(batch, _Delta)

    def plan(self, batch: _Batch) -> Sequence[_Action]:
        conn = self.conn
        removal, threshold = conn.features.sync.removal, conn.features.sync.removal_threshold
        if isinstance(batch, _Sweep):
            return [_Removal(row) for row in batch.removals]
        if isinstance(batch, _Page):
            changes = plan(batch.before, batch.users, rotation_members=self._rotation_members, removal=removal,
                           threshold=threshold, now=batch.now)
            self.changes_added += len(changes.add)
            self.changes_updated += len(changes.update)
            self.report.unchanged += changes.unchanged
            ids = self.report.planned_ids
            for kind, rows in (("add", changes.add), ("update", changes.update)):
                ids[kind] += [r.id for r in rows][:PLANNED_IDS_KEPT - len(ids[kind])]
            if not changes.add and not changes.update:
                return []
            return [_Rows(SyncPlan(add=changes.add, update=changes.update), queued=True, target=conn.name)]
        changes = plan(batch.rows, batch.seen, rotation_members=batch.rotation_members, removal=removal,
                       threshold=threshold, now=self.service._clock.now(),
                       deleted_in_entra=frozenset(batch.read.deleted), size=batch.size)
        self.changes = changes
        self.departures = sum(1 for r in changes.remove if batch.rows[r.id].state is UserState.ACTIVE)
        self.size = batch.size
        self.service._planned(self.report, changes)
        self.report.unchanged = max(batch.in_scope - len(changes.add) - len(changes.update), 0)
        actions: list[_Action] = [_Rows(SyncPlan(add=changes.add, update=changes.update), target=conn.name)] \
            if changes.add or changes.update else []
        return [*actions, *(_Removal(row) for row in changes.remove)]

    def limit(self, removals: int) -> str | None:
        """The engine's Limit: the run's departures against the directory's kept size."""
        if self.size is None:
            return None
        return blocked(self.departures, self.size, self.conn.features.sync.removal_threshold)

    # ------------------------------------------------------------------ apply

    async def begin(self, batch: _Batch, actions: Sequence[_Action]) -> None:
        """Hold the batch's events before its writes (docs/events.md, "exactly once"), then write the rows of its
        removals."""
        removals = [a.row for a in actions if isinstance(a, _Removal)]
        rows = [a for a in actions if isinstance(a, _Rows)]
        changes = SyncPlan(add=[r for a in rows for r in a.changes.add],
                           update=[r for a in rows for r in a.changes.update], remove=removals)
        if isinstance(batch, _Page):
            # Held per page, so releasing them never holds the whole directory's events at once.
            key = f"{self.report.run_id}.{batch.number - 1:06d}"
            if await self.service._hold(self.conn.name, key, batch.before, changes):
                self._pages.append(key)
            return
        self.lease.check("nothing removed" if isinstance(batch, _Sweep) else "nothing written")
        key = f"{self.report.run_id}.removals" if isinstance(batch, _Sweep) else self.report.run_id
        before = batch.originals if isinstance(batch, _Sweep) else batch.rows
        self._held = key if await self.service._hold(self.conn.name, key, before, changes) else None
        self._errors = self.report.errors
        if removals:
            await self._write_all(removals, new=())  # rows that were read: all stored

    async def apply(self, action: _Action) -> Done | None:
        if isinstance(action, _Rows):
            added = {row.id for row in action.changes.add}
            if action.queued and self.writer is not None:
                await self.writer.offer(action.rows, added)
            else:
                await self._write_all(action.rows, new=added)
            return None
        row = action.row
        detail: dict[str, Any] = {}
        if row.state is UserState.REMOVED:
            if self.service._secrets is not None:
                # Soft delete: recoverable for the vault's retention period; never purged by the bridge.
                try:
                    await self.service._secrets.delete(rotation_policy.secret_name(self.conn.name, row.id))
                    detail["secretSoftDeleted"] = True
                except BridgeError as err:
                    detail["secretError"] = err.detail
            # The passkeys service revokes what the bridge registered for removed users after the run.
            detail["passkeysToRevoke"] = True
        return Done(outcome=row.state.value, detail=detail)

    def describe(self, action: _Action) -> Mapping[str, Any]:
        if isinstance(action, _Removal):
            return {"state": action.row.state.value, "removal": self.conn.features.sync.removal.value}
        return {}

    async def end(self, batch: _Batch, actions: Sequence[_Action]) -> None:
        if not isinstance(batch, _Page) and self._held is not None and self.report.errors == self._errors:
            await self.service._release(self.conn.name, [self._held])  # else the next run proves each one

    async def finish(self, report: Report[_Action]) -> None:
        await self.service._store(self)

    async def _write_all(self, rows: list[UserRow], *, new: Collection[str]) -> None:
        """Write rows in write groups, BATCH_CONCURRENCY at a time; `new` are the planned additions among them."""
        service, progress = self.service, self.progress
        done = 0
        semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def write(chunk: list[UserRow]) -> None:
            nonlocal done
            async with semaphore:
                await service._write(self.conn, chunk, self.report, new=new)
                done += len(chunk)
                if progress:
                    progress("write", done, len(rows))

        await asyncio.gather(*(write(batch) for batch in service._directory.batches(self.conn.name, rows)))
        if progress:
            progress("write", len(rows), len(rows))

    async def close(self) -> None:
        """Stop the writer of a run that ended early."""
        if self.writer is not None:
            await self.writer.close()
