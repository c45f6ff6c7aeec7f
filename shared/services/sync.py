"""User and group sync: read the sync groups completely, plan, then apply under a lease.

Order of a run: take the connection's lease (one run at a time), read every sync group's transitive
users and the rotation group's members (any failed or incomplete page aborts the run before anything
is written), plan (shared.domain.sync), stop with an alert if removals exceed the threshold, then
write rows, carry out the removal behaviour, record the run in `syncstate` and audit it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from shared.config import Connection
from shared.domain import rotation as rotation_policy
from shared.domain.directory import UserRow, UserState
from shared.domain.sync import EntraUser, SyncPlan, plan
from shared.errors import BridgeError, Conflict, Stop
from shared.messages import WorkMessage
from shared.services.directory import Directory
from shared.services.ports import AuditSink, Clock, Entity, EntityStore, JsonObject, SecretStore, WorkQueue
from shared.topology import Queue, Table

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=10)
ACTOR = "sync"
WRITE_CONCURRENCY = 16
_EPOCH = "1970-01-01T00:00:00+00:00"

Progress = Callable[[str, int, int], None]


class DirectoryReader(Protocol):
    """What sync reads from Entra (implemented on GraphApi in shared/adapters/directory.py)."""

    resource_units: int

    async def group_id(self, name_or_id: str) -> str:
        """Object id of a group named by id or display name."""
        ...

    def transitive_users(self, group_id: str) -> AsyncIterator[JsonObject]:
        """Every user of a group, nested groups included."""
        ...

    async def transitive_user_ids(self, group_id: str) -> set[str]:
        """Ids of every user of a group, nested groups included."""
        ...


@dataclass
class SyncReport:
    """What one run did (also the `lastRun` row of `syncstate`)."""

    run_id: str
    connection: str
    started_at: str
    outcome: str = "running"  # completed | dry-run | blocked | aborted
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: int = 0
    resource_units: int = 0
    duration_seconds: float = 0.0
    alert: str | None = None
    planned: dict[str, list[str]] = field(default_factory=dict)

    def row(self) -> JsonObject:
        """The stored form."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class SyncService:
    """Runs syncs for connections."""

    def __init__(self, *, directory: Directory, entities: EntityStore, audit: AuditSink, queue: WorkQueue,
                 clock: Clock, secrets: SecretStore | None = None) -> None:
        self._directory = directory
        self._entities = entities
        self._audit = audit
        self._queue = queue
        self._clock = clock
        self._secrets = secrets

    # ------------------------------------------------------------------ planning runs

    async def request(self, conn: Connection, *, actor: str, correlation_id: str, dry_run: bool = False) -> str:
        """Queue a run now; returns its run id."""
        if not conn.features.sync.enabled:
            raise Conflict(f"sync is not enabled for connection {conn.name!r} (features.sync.enabled)")
        run_id = f"sync-{uuid.uuid4().hex[:12]}"
        message = WorkMessage(connection=conn.name, kind="sync", target=conn.name, idempotency_key=run_id,
                              correlation_id=correlation_id, args={"actor": actor, "dryRun": dry_run})
        await self._queue.send(Queue.SYNC, message.model_dump(mode="json", by_alias=True))
        await self._audit.record(connection=conn.name, actor=actor, action="sync.requested", target=conn.name,
                                 outcome="queued", correlation_id=correlation_id, detail={"runId": run_id})
        return run_id

    async def last_run(self, connection: str) -> JsonObject | None:
        """The `lastRun` record of a connection, if any."""
        found = await self._entities.get(Table.SYNCSTATE, connection, "lastRun")
        return dict(found.data) if found else None

    # ------------------------------------------------------------------ one run

    async def run(self, conn: Connection, reader: DirectoryReader, *, run_id: str, correlation_id: str,
                  dry_run: bool = False, progress: Progress | None = None) -> SyncReport:
        """One complete sync of `conn`."""
        started = time.monotonic()
        report = SyncReport(run_id=run_id, connection=conn.name, started_at=self._clock.now().isoformat())
        dry_run = dry_run or conn.dry_run
        lease_etag = await self._take_lease(conn.name, run_id)
        try:
            try:
                seen, rotation_members = await self._read(conn, reader, progress)
            except BridgeError as err:
                report.outcome = "aborted"
                report.alert = f"incomplete read, nothing removed: {err.detail}"
                report.errors += 1
                await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.aborted", target=conn.name,
                                         outcome="aborted", correlation_id=correlation_id,
                                         graph_request_id=err.request_id, detail={"runId": run_id,
                                                                                  "reason": err.detail})
                raise Stop(report.alert, request_id=err.request_id) from err
            existing = {row.id: row async for row in self._directory.all(conn.name)}
            changes = plan(existing, seen, rotation_members=frozenset(rotation_members),
                           removal=conn.features.sync.removal, threshold=conn.features.sync.removal_threshold,
                           now=self._clock.now())
            report.unchanged = changes.unchanged
            report.planned = {"add": [r.id for r in changes.add][:100], "update": [r.id for r in changes.update][:100],
                              "remove": [r.id for r in changes.remove][:100]}
            if changes.blocked:
                report.outcome, report.alert = "blocked", changes.blocked
                await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.blocked", target=conn.name,
                                         outcome="blocked", correlation_id=correlation_id,
                                         detail={"runId": run_id, "reason": changes.blocked})
                log.error("sync of %s blocked: %s", conn.name, changes.blocked)
            elif dry_run:
                report.outcome = "dry-run"
                report.added, report.updated, report.removed = len(changes.add), len(changes.update), \
                    len(changes.remove)
            else:
                await self._apply(conn, changes, report, correlation_id, progress)
                report.outcome = "completed"
        finally:
            report.resource_units = reader.resource_units
            report.duration_seconds = round(time.monotonic() - started, 3)
            if report.outcome != "dry-run":
                await self._entities.upsert(Table.SYNCSTATE, Entity(conn.name, "lastRun", report.row()))
            await self._release_lease(conn.name, lease_etag)
        await self._audit.record(connection=conn.name, actor=ACTOR, action="sync.completed", target=conn.name,
                                 outcome=report.outcome, correlation_id=correlation_id,
                                 detail={"runId": run_id, "added": report.added, "updated": report.updated,
                                         "removed": report.removed, "unchanged": report.unchanged})
        return report

    async def _read(self, conn: Connection, reader: DirectoryReader,
                    progress: Progress | None) -> tuple[dict[str, EntraUser], set[str]]:
        seen: dict[str, EntraUser] = {}
        for name in conn.features.sync.groups:
            group_id = await reader.group_id(name)
            async for item in reader.transitive_users(group_id):
                user = EntraUser.from_graph(item, group_id)
                seen[user.id] = seen[user.id].merged(user) if user.id in seen else user
                if progress and len(seen) % 500 == 0:
                    progress("read", len(seen), 0)
        if progress:
            progress("read", len(seen), len(seen))
        rotation_members: set[str] = set()
        rotation = conn.features.rotation
        if rotation.enabled and rotation.group:
            rotation_members = await reader.transitive_user_ids(await reader.group_id(rotation.group))
        return seen, rotation_members

    async def _apply(self, conn: Connection, changes: SyncPlan, report: SyncReport, correlation_id: str,
                     progress: Progress | None) -> None:
        rows = [*changes.add, *changes.update, *changes.remove]
        done = 0
        semaphore = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def write(row: UserRow) -> None:
            nonlocal done
            async with semaphore:
                try:
                    await self._directory.put(conn.name, row)
                except BridgeError as err:
                    report.errors += 1
                    log.warning("could not store user %s: %s", row.id, err.detail)
                    return
                done += 1
                if progress and done % 200 == 0:
                    progress("write", done, len(rows))

        await asyncio.gather(*(write(row) for row in rows))
        if progress:
            progress("write", len(rows), len(rows))
        report.added, report.updated = len(changes.add), len(changes.update)
        for row in changes.remove:
            await self._remove(conn, row, correlation_id)
        report.removed = len(changes.remove)

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
            # Passkeys the bridge registered for this user are revoked by the device service.
            detail["passkeysToRevoke"] = True
        await self._audit.record(connection=conn.name, actor=ACTOR, action="user.removed", target=row.id,
                                 outcome=row.state.value, correlation_id=correlation_id, detail=detail)

    # ------------------------------------------------------------------ the lease

    async def _take_lease(self, connection: str, run_id: str) -> str | None:
        now = self._clock.now()
        data = {"owner": run_id, "until": (now + LEASE).isoformat()}
        found = await self._entities.get(Table.LEASES, connection, "sync")
        if found is None:
            try:
                return (await self._entities.insert(Table.LEASES, Entity(connection, "sync", data))).etag
            except Conflict:
                raise Conflict(f"a sync of {connection!r} has just started; try again later") from None
        until = dt.datetime.fromisoformat(str(found.data.get("until") or _EPOCH))
        if found.data.get("owner") not in (None, "", run_id) and until > now:
            raise Conflict(f"a sync of {connection!r} ({found.data.get('owner')}) is running until "
                           f"{until:%H:%M:%S} UTC")
        return (await self._entities.update(Table.LEASES, Entity(connection, "sync", data, found.etag))).etag

    async def _release_lease(self, connection: str, etag: str | None) -> None:
        try:
            await self._entities.update(Table.LEASES, Entity(connection, "sync", {"owner": "", "until": _EPOCH}, etag))
        except BridgeError:
            log.info("the sync lease of %s was taken over; leaving it", connection)
