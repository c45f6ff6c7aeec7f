"""User and group sync: read the sync groups, plan, then apply under a lease.

Order of a run: take the connection's lease (one run at a time); read Entra - the first run (or a
resync after a delta token expired, 410) reads the group tree with a first `groups/delta` round per
50 groups and the users' attributes with `transitiveMembers`; later runs read only `users/delta` and
the `groups/delta` rounds of the groups under the sync groups, and recompute effective membership
locally (shared.domain.sync.GroupTree). Any failed or incomplete page aborts the run before anything is
written. Then plan (shared.domain.sync), stop with an alert if removals exceed the threshold, write rows,
carry out the removal behaviour, keep the enrollment-state groups, and only then store the new delta
links and tree (shared.services.ports.SyncStateRepository), so a run that stops early is read again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
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
class _Imported:
    """What the streamed part of a full run leaves for its end: the new state and the ids it read."""

    state: DeltaState
    seen: SeenIds
    dirty: set[str]
    #: Rows of the connection before the run (counted by the sweep).
    rows_before: int = 0


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


class _Lease:
    """The connection's sync lease while a run holds it: renewed in the background, lost when taken over."""

    def __init__(self, held: Lease) -> None:
        self.held = held
        self.lost = False
        self.ended = asyncio.Event()


@dataclass
class _Run:
    """One run's inputs, handed to its steps."""

    conn: Connection
    reader: DirectoryReader
    report: SyncReport
    dry_run: bool
    lease: _Lease
    progress: Progress | None
    correlation_id: str


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
        await self._audit.record(connection=conn.name, actor=actor, action="sync.requested", target=conn.name,
                                 outcome="queued", correlation_id=correlation_id, detail={"runId": run_id})
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
        await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.failed", target=conn.name,
                                 outcome="failed", correlation_id=correlation_id, graph_request_id=problem.request_id,
                                 detail={"runId": run_id, "reason": problem.detail})
        return report

    # ------------------------------------------------------------------ one run

    async def run(self, conn: Connection, reader: DirectoryReader, *, run_id: str, correlation_id: str,
                  dry_run: bool = False, progress: Progress | None = None, full: bool = False,
                  groups: GroupWriter | None = None) -> SyncReport:
        """One sync of `conn`: incremental when a delta state exists, full otherwise (or when asked)."""
        started = time.monotonic()
        report = SyncReport(run_id=run_id, connection=conn.name, started_at=self._clock.now().isoformat())
        dry_run = dry_run or conn.dry_run
        writer = groups if groups is not None else (reader if isinstance(reader, GroupWriter) else None)
        lease = _Lease(await self._take_lease(conn.name, run_id))
        renewal = asyncio.get_running_loop().create_task(self._keep_lease(conn.name, run_id, lease))
        try:
            if not dry_run:
                async def stored(ids: Collection[str]) -> Mapping[str, UserRow]:
                    return await self._directory.get_many(conn.name, ids)

                # Events held by a run that stopped: released when the stored row proves the change.
                await recover_user_events(self._events, conn.name, stored)
            run = _Run(conn=conn, reader=reader, report=report, dry_run=dry_run, lease=lease,
                       progress=progress, correlation_id=correlation_id)
            incremental: tuple[ReadResult, SyncPlan, dict[str, UserRow]] | None = None
            imported: _Imported | None = None
            try:
                sync_roots, rotation_root, state = await self._start(conn, reader, report, full)
                if state is not None:
                    try:
                        incremental = await self._plan_incremental(run, state)
                    except Gone as err:
                        report.resynced = f"a delta link cannot be used any more (expired, or for another Graph " \
                                          f"host): {err.detail}"
                        log.info("sync of %s: %s; reading everything again", conn.name, report.resynced)
                if incremental is None:
                    if report.resynced:
                        await self._resynced(run)
                    imported = await self._import(run, sync_roots, rotation_root)
            except BridgeError as err:
                cause = root_cause(err)
                if not (cause.retryable or isinstance(cause, Stop)):
                    raise  # no read can be made (a token, a permission, a missing group): the run failed
                report.outcome = "aborted"
                report.alert = f"incomplete read, nothing removed: {err.detail}"
                report.errors += 1
                await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.aborted", target=conn.name,
                                         outcome="aborted", correlation_id=correlation_id,
                                         graph_request_id=err.request_id, detail={"runId": run_id,
                                                                                  "reason": err.detail})
                report.problem = root_cause(err).problem()
                raise Stop(report.alert, request_id=err.request_id) from err
            if incremental is not None:
                read, changes, before = incremental
                await self._finish_incremental(run, writer, read, changes, before)
            elif imported is not None:
                await self._finish_import(run, writer, imported)
        except Exception as exc:
            failure = translated(exc)
            if failure is not exc:
                log.exception("sync %s of %s failed unexpectedly", run_id, conn.name)
            if report.outcome == "running":
                await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.failed", target=conn.name,
                                         outcome="failed", correlation_id=correlation_id,
                                         graph_request_id=failure.request_id,
                                         detail={"runId": run_id, "reason": failure.detail})
            report.failed(failure)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            lease.ended.set()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            if report.outcome == "running":  # cancelled (the host's timeout, a shutdown)
                report.failed(BridgeError("the run was interrupted before it ended (functionTimeout or a restart)"))
            extra = getattr(writer, "resource_units", 0) if writer is not None and id(writer) != id(reader) else 0
            report.resource_units = reader.resource_units + (extra if isinstance(extra, int) else 0)
            report.duration_seconds = round(time.monotonic() - started, 3)
            await self._state.put_run(conn.name, report.row(), dry_run=dry_run)
            await self._release_lease(conn.name, lease)
        await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.completed", target=conn.name,
                                 outcome=report.outcome, correlation_id=correlation_id,
                                 detail={"runId": run_id, "mode": report.mode, "added": report.added,
                                         "updated": report.updated, "removed": report.removed,
                                         "unchanged": report.unchanged, "missingInEntra": report.missing_in_entra})
        await self._audit.flush()  # the end of a run anchors its audit chains (docs/audit.md)
        return report

    async def _resynced(self, run: _Run) -> None:
        await self._audit.record(connection=run.conn.name, actor=ACTOR, action="sync.resync", target=run.conn.name,
                                 outcome="full", correlation_id=run.correlation_id,
                                 detail={"runId": run.report.run_id, "reason": run.report.resynced})

    async def _hold(self, run: _Run, key: str, before: Mapping[str, UserRow], changes: SyncPlan) -> bool:
        """Hold the events of `changes` under `key` until their rows are written; whether any were held."""
        if self._events is None:
            return False
        events = user_events(run.conn.name, before, changes, self._clock.now())
        if events:
            await self._events.hold(run.conn.name, key, events)
        return bool(events)

    async def _release(self, run: _Run, keys: Sequence[str]) -> None:
        """The rows of these held events are written: record them for publishing."""
        if self._events is not None:
            for key in keys:
                await self._events.release(run.conn.name, key)

    def _planned(self, report: SyncReport, changes: SyncPlan) -> None:
        report.missing_in_entra = sum(1 for r in changes.remove if r.state is UserState.MISSING_IN_ENTRA)
        report.planned = {"add": len(changes.add), "update": len(changes.update), "remove": len(changes.remove)}
        report.planned_ids = {"add": [r.id for r in changes.add][:PLANNED_IDS_KEPT],
                              "update": [r.id for r in changes.update][:PLANNED_IDS_KEPT],
                              "remove": [r.id for r in changes.remove][:PLANNED_IDS_KEPT]}

    async def _blocked(self, run: _Run, reason: str) -> None:
        run.report.outcome, run.report.alert = "blocked", reason
        await self._audit.record(connection=run.conn.name, actor=ACTOR, action="sync.blocked", target=run.conn.name,
                                 outcome="blocked", correlation_id=run.correlation_id,
                                 detail={"runId": run.report.run_id, "reason": reason})
        log.error("sync of %s blocked: %s", run.conn.name, reason)

    # ------------------------------------------------------------------ an incremental run

    async def _finish_incremental(self, run: _Run, writer: GroupWriter | None, read: ReadResult, changes: SyncPlan,
                                  before: dict[str, UserRow]) -> None:
        """Apply an incremental plan: only the changed rows are written, only the changed users moved."""
        conn, report = run.conn, run.report
        report.mode = "incremental"
        self._planned(report, changes)
        if changes.blocked:
            await self._blocked(run, changes.blocked)
        elif run.dry_run:
            report.outcome = "dry-run"
            report.added, report.updated, report.removed = len(changes.add), len(changes.update), len(changes.remove)
        else:
            if run.lease.lost:
                raise Conflict(f"the sync lease of {conn.name!r} was taken over by another run; nothing written")
            # The run's events are held until its rows are written (docs/events.md, "exactly once").
            held = await self._hold(run, report.run_id, before, changes)
            failed_before = report.errors
            await self._apply(conn, changes, report, run.correlation_id, run.progress)
            if held and report.errors == failed_before:
                await self._release(run, [report.run_id])  # else the next run proves each one
            read.state.rows = (read.state.rows or 0) + len(changes.add)
            await self._state.save_delta(conn.name, read.state, changed=read.dirty, gone=read.gone_groups, full=False)
            if conn.features.passkeys.enabled and writer is not None:
                moves = {row.id: (_target(before.get(row.id)), _target(row))
                         for row in (*changes.add, *changes.update, *changes.remove)}
                await self._enrollment(conn, writer, run.reader, report, run.correlation_id, moves=moves)
            report.outcome = "completed"

    async def _plan_incremental(self, run: _Run, state: DeltaState) -> tuple[ReadResult, SyncPlan, dict[str, UserRow]]:
        """Read the changes, then plan from the rows of the users they concern only (point reads)."""
        conn = run.conn
        read = await self._read_incremental(run.reader, state, run.progress)
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
        rows = await self._directory.get_many(conn.name, concerned)
        run.report.rows_read = len(concerned)
        attributes = {uid: EntraUser.from_row(row) for uid, row in rows.items()}
        for uid, change in read.changed.items():
            if uid in attributes:
                attributes[uid] = attributes[uid].updated(change)
            elif change.get("userPrincipalName"):
                attributes[uid] = EntraUser.from_graph(change, "")
        missing = sorted(uid for uid in members if uid in concerned and uid not in attributes
                         and uid not in read.deleted)
        if missing:
            for user in await run.reader.users(missing):
                attributes[user.id] = user
        seen = {uid: attributes[uid].with_groups(roots) for uid, roots in members.items()
                if uid in concerned and uid in attributes and uid not in read.deleted}
        if state.rows is None or state.in_scope is None:
            # A state stored before the counts were kept: counted once, then kept by every run.
            state.rows = await self._directory.count(conn.name)
            state.in_scope = len(scope(before, state.sync_roots))
        changes = plan(rows, seen, rotation_members=rotation_members, removal=conn.features.sync.removal,
                       threshold=conn.features.sync.removal_threshold, now=self._clock.now(),
                       deleted_in_entra=frozenset(read.deleted), size=state.rows)
        read.state.rows = state.rows
        read.state.in_scope = state.in_scope - sum(1 for uid in was_in_scope if uid in concerned) + len(seen)
        run.report.unchanged = max(read.state.in_scope - len(changes.add) - len(changes.update), 0)
        return read, changes, rows

    # ------------------------------------------------------------------ a full run, streamed

    async def _import(self, run: _Run, sync_roots: list[str], rotation_root: str | None) -> _Imported:
        """Read every user of the sync groups page by page; plan and write each page as it comes (writes overlap
        the next reads, through a queue of at most QUEUE_PAGES pages). Only the tree and the ids read are kept."""
        conn, report, reader = run.conn, run.report, run.reader
        report.mode = "full"
        # The users link is taken first: a change made while the tree is read shows up again next run.
        users_link = await reader.users_delta_latest()
        tree = GroupTree()
        roots = [*sync_roots, *([rotation_root] if rotation_root else [])]
        links = await self._read_groups(reader, tree, set(roots))
        rotation_members = frozenset(tree.effective(rotation_root)) if rotation_root else frozenset[str]()
        empty = await self._directory.is_empty(conn.name)
        # Against a directory that holds rows, the stored rows' digests tell which users changed: only their
        # rows are read again (for what only the bridge keeps: first seen, enrollment).
        digests: RowDigests | None = None
        if not empty:
            digests = RowDigests()
            async for row in self._directory.scan(conn.name):
                digests.add(row)
            report.rows_read += len(digests)
        if not run.dry_run:
            # Rows are written as they are read: until this run stores its own state, the next run is a full one.
            await self.forget_state(conn.name)
        seen = SeenIds()
        pages: list[str] = []  # the keys of the pages whose events are held
        planned = {"add": 0, "update": 0}
        ids: dict[str, list[str]] = {"add": [], "update": [], "remove": []}
        queue: asyncio.Queue[list[UserRow] | None] = asyncio.Queue(maxsize=QUEUE_PAGES)
        drain = None if run.dry_run else asyncio.get_running_loop().create_task(self._drain(run, queue))

        async def offer(rows: list[UserRow] | None) -> None:
            if drain is None:
                return
            if drain.done():
                drain.result()
                raise Stop("the writer of the import stopped before the read ended")
            put = asyncio.ensure_future(queue.put(rows))
            done, _ = await asyncio.wait({put, drain}, return_when=asyncio.FIRST_COMPLETED)
            if put not in done:  # the writer ended first: only by failing
                put.cancel()
                drain.result()  # the writer failed: its error ends the run
                raise Stop("the writer of the import stopped before the read ended")

        async def page(items: list[EntraUser], position: int) -> None:
            by_id = {user.id: user for user in items}
            members = scope_among(tree, sync_roots, by_id)
            # A user in several sync groups is planned with the first of them that lists it.
            chosen = {uid: r for uid, r in members.items()
                      if position < 0 or not any(sync_roots.index(root) < position for root in r)}
            users = {uid: by_id[uid].with_groups(r) for uid, r in chosen.items()}
            now = self._clock.now()
            if digests is not None:
                stored = {uid: digests.get(uid) for uid in users}
                same = {uid for uid, user in users.items() if stored[uid] is not None and stored[uid] == row_digest(
                    new_row(None, user, in_rotation_group=uid in rotation_members, now=now))}
                users = {uid: user for uid, user in users.items() if uid not in same}
                wanted = [uid for uid in users if stored[uid] is not None]
            else:
                same, wanted = set(), ([] if empty else list(users))
            before = await self._directory.get_many(conn.name, wanted) if wanted else {}
            report.rows_read += len(wanted)
            changes = plan(before, users, rotation_members=rotation_members, removal=conn.features.sync.removal,
                           threshold=conn.features.sync.removal_threshold, now=now)
            for uid in chosen:
                seen.add(uid)
            planned["add"] += len(changes.add)
            planned["update"] += len(changes.update)
            report.unchanged += changes.unchanged + len(same)
            for kind, rows in (("add", changes.add), ("update", changes.update)):
                ids[kind] += [r.id for r in rows][:PLANNED_IDS_KEPT - len(ids[kind])]
            if changes.add or changes.update:
                if not run.dry_run:
                    # Held per page, so releasing them never holds the whole directory's events at once.
                    key = f"{report.run_id}.{len(pages):06d}"
                    if await self._hold(run, key, before, changes):
                        pages.append(key)
                await offer([*changes.add, *changes.update])
            if run.progress:
                run.progress("read", len(seen), 0)

        try:
            for position, root in enumerate(sync_roots):
                batch: list[EntraUser] = []
                async for item in reader.transitive_users(root):
                    batch.append(item)
                    if len(batch) >= PAGE_USERS:
                        await page(batch, position)
                        batch = []
                if batch:
                    await page(batch, position)
            # Users in the tree that the transitive reads did not list (Graph is eventually consistent).
            missing = sorted({uid for group in tree.reachable(sync_roots) for uid in tree.users[group]
                              if uid not in seen})
            for start in range(0, len(missing), PAGE_USERS):
                found = await reader.users(missing[start:start + PAGE_USERS])
                if found:
                    await page(found, -1)
            await offer(None)
            if drain is not None:
                failed_before = report.errors
                await drain
                if report.errors == failed_before:
                    await self._release(run, pages)  # else the next run proves each one
        finally:
            if drain is not None and not drain.done():
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        report.planned = {**planned, "remove": 0}
        report.planned_ids = ids
        state = DeltaState(sync_roots=sync_roots, rotation_root=rotation_root, users_link=users_link,
                           group_links=links, tree=tree, in_scope=len(seen))
        return _Imported(state=state, seen=seen, dirty=tree.groups())

    async def _drain(self, run: _Run, queue: asyncio.Queue[list[UserRow] | None]) -> None:
        """Write planned rows as they come: the rows of one write group go as one all-or-nothing write once
        there are as many as it takes (the rest at the end), BATCH_CONCURRENCY writes at a time."""
        conn, report = run.conn, run.report
        pending: dict[str, list[UserRow]] = {}
        semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)
        in_flight: set[asyncio.Task[None]] = set()
        done = 0

        async def send(chunk: list[UserRow]) -> None:
            nonlocal done
            try:
                await self._write(conn, chunk, report)
            finally:
                semaphore.release()
            done += len(chunk)
            if run.progress:
                run.progress("write", done, done)

        async def start(chunk: list[UserRow]) -> None:
            if run.lease.lost:
                raise Conflict(f"the sync lease of {conn.name!r} was taken over by another run; nothing more written")
            await semaphore.acquire()
            task = asyncio.get_running_loop().create_task(send(chunk))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            for finished in [t for t in list(in_flight) if t.done()]:
                finished.result()

        try:
            while (rows := await queue.get()) is not None:
                for row in rows:
                    key = self._directory.batch_key(conn.name, row.id)
                    chunk = pending.setdefault(key, [])
                    chunk.append(row)
                    if len(chunk) >= self._directory.batch_rows:
                        await start(pending.pop(key))
            for chunk in pending.values():
                await start(chunk)
            pending.clear()
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()

    async def _finish_import(self, run: _Run, writer: GroupWriter | None, imported: _Imported) -> None:
        """The end of a full run: sweep the stored rows for users no longer read, then remove them (within the
        threshold), store the state, keep the enrollment-state groups."""
        conn, report = run.conn, run.report
        removal, threshold = conn.features.sync.removal, conn.features.sync.removal_threshold
        removals: list[UserRow] = []
        originals: dict[str, UserRow] = {}  # the stored rows of the removals, for their events
        departures = rows = 0
        async for row in self._directory.scan(conn.name):
            rows += 1
            if row.id in imported.seen:
                continue
            gone = removed_row(row, removal, deleted=False)
            if gone is None:
                continue
            if row.state is UserState.ACTIVE:
                departures += 1
            if departures <= threshold.absolute:  # beyond it the run is blocked whatever the size: keep no more
                removals.append(gone)
                originals[row.id] = row
        size = rows - (0 if run.dry_run else report.planned.get("add", 0))
        report.planned["remove"] = len(removals) if departures <= threshold.absolute else departures
        report.planned_ids["remove"] = [r.id for r in removals][:PLANNED_IDS_KEPT]
        report.missing_in_entra = sum(1 for r in removals if r.state is UserState.MISSING_IN_ENTRA)
        # The rows of the users read are written already (a dry run only counts them).
        report.added, report.updated = report.planned.get("add", 0), report.planned.get("update", 0)
        reason = blocked(departures, size, threshold)
        if reason:
            await self._blocked(run, reason)
            return
        if run.dry_run:
            report.outcome, report.removed = "dry-run", len(removals)
            return
        if run.lease.lost:
            raise Conflict(f"the sync lease of {conn.name!r} was taken over by another run; nothing removed")
        key = f"{report.run_id}.removals"
        held = await self._hold(run, key, originals, SyncPlan(remove=removals))
        failed_before = report.errors
        await self._apply(conn, SyncPlan(remove=removals), report, run.correlation_id, run.progress)
        if held and report.errors == failed_before:
            await self._release(run, [key])
        report.added, report.updated = report.planned.get("add", 0), report.planned.get("update", 0)
        imported.state.rows = size + report.added
        await self._state.save_delta(conn.name, imported.state, changed=imported.dirty, gone=set(), full=True)
        if conn.features.passkeys.enabled and writer is not None:
            await self._enrollment(conn, writer, run.reader, report, run.correlation_id, moves=None)
        report.outcome = "completed"

    # ------------------------------------------------------------------ reading

    async def _start(self, conn: Connection, reader: DirectoryReader, report: SyncReport,
                     full: bool) -> tuple[list[str], str | None, DeltaState | None]:
        """The sync and rotation roots, and the stored state to continue from (None: a full run)."""
        sync_roots = [await reader.group_id(name) for name in conn.features.sync.groups]
        rotation = conn.features.rotation
        rotation_root = await reader.group_id(rotation.group) if rotation.enabled and rotation.group else None
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
            for ids in chunks(frontier):
                for group in ids:
                    tree.add_group(group)
                read = await reader.groups_delta(ids=ids)
                for item in read.items:
                    if not item.removed and item.id:
                        nested, _ = tree.apply_members(item.id, item.members)
                        found |= nested
                links.append({"ids": ids, "link": read.link})
            frontier = found - tree.groups()
        return links

    async def _read_incremental(self, reader: DirectoryReader, state: DeltaState,
                                progress: Progress | None) -> ReadResult:
        users = await reader.users_delta(state.users_link)
        changed, deleted = user_changes(users.items)
        tree = state.tree.fork()
        dirty: set[str] = set()
        nested: set[str] = set()
        links: list[dict[str, Any]] = []
        for entry in state.group_links:
            read = await reader.groups_delta(link=str(entry["link"]))
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

    # ------------------------------------------------------------------ applying

    async def _apply(self, conn: Connection, changes: SyncPlan, report: SyncReport, correlation_id: str,
                     progress: Progress | None) -> None:
        rows = [*changes.add, *changes.update, *changes.remove]
        done = 0
        semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def write(chunk: list[UserRow]) -> None:
            nonlocal done
            async with semaphore:
                await self._write(conn, chunk, report)
                done += len(chunk)
                if progress:
                    progress("write", done, len(rows))

        await asyncio.gather(*(write(batch) for batch in self._directory.batches(conn.name, rows)))
        if progress:
            progress("write", len(rows), len(rows))
        report.added, report.updated = len(changes.add), len(changes.update)
        removing = asyncio.Semaphore(REMOVAL_CONCURRENCY)

        async def remove(row: UserRow) -> None:
            async with removing:
                await self._remove(conn, row, correlation_id)

        # Each removal is its own audit chain (by target) and secret: independent of the others.
        await asyncio.gather(*(remove(row) for row in changes.remove))
        report.removed = len(changes.remove)

    async def _write(self, conn: Connection, chunk: list[UserRow], report: SyncReport) -> None:
        """Write one write group's rows all or nothing (`Directory.batches`); a write is safe to repeat, so a
        dropped connection or a busy answer gets one more try, and a refused group is written row by row, so a
        bad row costs one error."""
        try:
            try:
                await self._directory.put_many(conn.name, chunk)
            except (Transient, Throttled) as err:
                await asyncio.sleep(min(getattr(err, "retry_after", 0.0) or 0.5, 5.0))
                await self._directory.put_many(conn.name, chunk)
        except BridgeError as err:
            log.info("a batch of %d users was refused (%s); writing them one by one", len(chunk), err.detail)
            for row in chunk:
                try:
                    await self._directory.put(conn.name, row)
                except BridgeError as single:
                    report.errors += 1
                    log.warning("could not store user %s: %s", row.id, single.detail)

    async def _remove(self, conn: Connection, row: UserRow, correlation_id: str) -> None:
        detail: dict[str, Any] = {"state": row.state.value, "removal": conn.features.sync.removal.value}
        if row.state is UserState.REMOVED:
            if self._secrets is not None:
                # Soft delete: recoverable for the vault's retention period; never purged by the bridge.
                try:
                    await self._secrets.delete(rotation_policy.secret_name(conn.name, row.id))
                    detail["secretSoftDeleted"] = True
                except BridgeError as err:
                    detail["secretError"] = err.detail
            # The passkeys service revokes what the bridge registered for removed users after the run.
            detail["passkeysToRevoke"] = True
        action = "user.missingInEntra" if row.state is UserState.MISSING_IN_ENTRA else "user.removed"
        await self._audit.record(connection=conn.name, actor=ACTOR, action=action, target=row.id,
                                 outcome=row.state.value, correlation_id=correlation_id, detail=detail)

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

    async def _keep_lease(self, connection: str, run_id: str, lease: _Lease) -> None:
        """Renew the lease while the run lives; a lease taken over by another run is marked lost."""
        while not lease.lost:
            try:
                await asyncio.wait_for(lease.ended.wait(), LEASE_RENEWAL.total_seconds())
                return
            except TimeoutError:
                pass
            try:
                lease.held = await self._leases.renew(lease.held, LEASE.total_seconds())
            except Conflict:
                lease.lost = True
                log.warning("the sync lease of %s was taken over while run %s was reading", connection, run_id)
            except BridgeError as err:
                log.warning("the sync lease of %s could not be renewed (%s); trying again", connection, err.detail)

    async def _release_lease(self, connection: str, lease: _Lease) -> None:
        if lease.lost:
            return
        try:
            await self._leases.release(lease.held)
        except BridgeError:
            log.info("the sync lease of %s could not be given back; it expires", connection)
