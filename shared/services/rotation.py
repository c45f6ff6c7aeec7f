"""Password rotation: plan who is due, rotate one user safely, and read what a device may receive.

Invariant 1 (docs/architecture.md, Invariants) shapes `rotate`: Key Vault holds every password before Graph may
set it; Graph's definite rejections mark the version failed; an unknown outcome leaves it pending
("possibly current") until a later rotation succeeds. One rotation per user at a time, enforced by a
lease kept in the user's rotation state (RotationRepository); a replayed message with the same rotation id
changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from shared.config import Connection
from shared.domain import rotation as policy
from shared.domain.events import EventType, new_event
from shared.domain.passwords import PasswordPolicy, banned_terms, generate
from shared.domain.rotation import RotationRow, Status
from shared.errors import (
    Ambiguous,
    BridgeError,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Throttled,
    Transient,
    translated,
)
from shared.messages import WorkMessage
from shared.services.audit_context import AuditContext
from shared.services.events import announce
from shared.services.ports import (
    AuditSink,
    Clock,
    EventOutbox,
    PasswordDirectory,
    RotationRepository,
    SecretStore,
    SecretVersion,
    WorkQueue,
)
from shared.topology import Queue

__all__ = ["DeliveredPassword", "Outcome", "PasswordDirectory", "RotationRow", "RotationService",
           "RotationSummary", "Status", "SubjectSource"]

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=5)
MAX_DEFINITE_REJECTIONS = 3
#: How often one message may be put back for throttling or a held lease before it counts as failed.
MAX_DEFERRALS = 20
ACTOR = "rotation"


class SubjectSource(Protocol):
    """The bridge directory as rotation reads it (the users the sync feature imported)."""

    async def get(self, connection: str, user_id: str) -> policy.RotationSubject | None:
        """One user, or None when the bridge does not know it."""
        ...

    def all(self, connection: str) -> AsyncIterator[policy.RotationSubject]:
        """Every user of the connection."""
        ...


@dataclass(frozen=True)
class RotationSummary:
    """A connection's rotation counts, and the users held back per refusal reason."""

    counts: dict[str, int]
    refused_reasons: dict[str, int]


@dataclass(frozen=True)
class Outcome:
    """What one call of `rotate` did."""

    user_id: str
    status: Status
    version: str | None = None
    reason: str | None = None
    replay: bool = False


@dataclass(frozen=True)
class DeliveredPassword:
    """A password handed to a device, with the candidates Entra might hold instead."""

    password: str | None
    version: str | None
    rotated_at: str | None
    possibly_current: list[tuple[str, str]]  # (version, password), newest first


def _versions(found: list[SecretVersion]) -> list[policy.VersionInfo]:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return [policy.VersionInfo(version=v.version, state=v.state, created_on=v.created_on or epoch,
                               enabled=v.enabled) for v in found]


class RotationService:
    """Plans and performs rotations for the connections it is given."""

    def __init__(self, *, secrets: SecretStore, rotations: RotationRepository, audit: AuditSink, queue: WorkQueue,
                 clock: Clock, subjects: SubjectSource, events: EventOutbox | None = None) -> None:
        self._secrets = secrets
        self._events = events
        self._rotations = rotations
        self._audit = audit
        self._queue = queue
        self._clock = clock
        self._subjects = subjects

    # ------------------------------------------------------------------ state

    async def status_row(self, connection: str, user_id: str) -> tuple[RotationRow, str | None]:
        """The user's rotation state and its version (an empty state when none is stored)."""
        found = await self._rotations.get(connection, user_id)
        return found.value, found.version

    # ------------------------------------------------------------------ planning

    async def plan(self, conn: Connection, *, correlation_id: str) -> int:
        """Enqueue every due, eligible-looking user of `conn`; returns how many were enqueued."""
        feature = conn.features.rotation
        if not feature.enabled:
            return 0
        now = self._clock.now()
        excluded = {e.lower() for e in feature.excluded_users}
        count = 0
        async for subject in self._subjects.all(conn.name):
            if not (subject.active and subject.in_rotation_group):
                continue
            if subject.user_id.lower() in excluded or subject.upn.lower() in excluded:
                continue
            row = (await self._rotations.get(conn.name, subject.user_id)).value
            if not policy.is_due(row.last_rotated_at, interval_days=feature.interval_days, now=now):
                continue
            # One id per user and due day: two timer runs the same day enqueue the same rotation.
            rotation_id = f"sched-{subject.user_id}-{now:%Y%m%d}"
            message = WorkMessage(connection=conn.name, kind="rotate", target=subject.user_id,
                                  idempotency_key=rotation_id, correlation_id=correlation_id)
            await self._queue.send(Queue.ROTATION, message.model_dump(mode="json", by_alias=True))
            count += 1
        return count

    async def request(self, conn: Connection, user_id: str, *, actor: str, correlation_id: str) -> str:
        """Queue a manual rotation unless one ran within the connection's minimum interval."""
        if not conn.features.rotation.enabled:
            raise Conflict(f"rotation is not enabled for connection {conn.name!r} (features.rotation.enabled)")
        if await self._subjects.get(conn.name, user_id) is None:
            raise NotFound(f"user {user_id} is not in the bridge directory of {conn.name!r}")
        row = (await self._rotations.get(conn.name, user_id)).value
        wait = policy.too_soon(row.last_rotated_at, min_interval_minutes=conn.features.rotation.min_interval_minutes,
                               now=self._clock.now())
        if wait is not None:
            raise Conflict(f"user {user_id} was rotated less than {conn.features.rotation.min_interval_minutes} "
                           f"minutes ago; try again in {int(wait.total_seconds()) + 1} s "
                           "(features.rotation.minIntervalMinutes)")
        rotation_id = f"manual-{correlation_id}"
        message = WorkMessage(connection=conn.name, kind="rotate", target=user_id, idempotency_key=rotation_id,
                              correlation_id=correlation_id, args={"actor": actor})
        await self._queue.send(Queue.ROTATION, message.model_dump(mode="json", by_alias=True))
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("rotation.requested", user_id, "queued", rotationId=rotation_id)
        return rotation_id

    # ------------------------------------------------------------------ queue work

    async def handle(self, conn: Connection, directory: PasswordDirectory, message: WorkMessage, *,
                     dequeue_count: int, max_dequeue_count: int) -> Outcome | None:
        """Process one `rotation-work` message the way the queue function needs it.

        Every attempt is audited before any other step, so a message that ends in the poison queue
        always has a record. Throttling and a lease held by another rotation put the message back with
        a delay instead of spending one of the host's attempts. Other failures are raised for the host
        to retry; on the last attempt the rotation is first recorded as failed with its reason.
        Returns None when the message was put back.
        """
        rotation_id = message.idempotency_key
        user_id = message.target
        deferrals = int(message.args.get("deferrals", 0))
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=message.correlation_id)
        await audit.record("rotation.attempt", user_id, "started", rotationId=rotation_id, attempt=dequeue_count,
                           deferrals=deferrals)
        try:
            return await self.rotate(conn, directory, user_id, rotation_id=rotation_id,
                                     correlation_id=message.correlation_id)
        except (Throttled, Conflict) as err:
            if deferrals >= MAX_DEFERRALS:
                await self._give_up(conn, message, err, f"put back {deferrals} times")
                return Outcome(user_id, Status.FAILED, reason=err.detail)
            delay = err.retry_after if isinstance(err, Throttled) else LEASE.total_seconds() / 5
            again = message.model_copy(update={"args": {**message.args, "deferrals": deferrals + 1}})
            await self._queue.send(Queue.ROTATION, again.model_dump(mode="json", by_alias=True),
                                   delay_seconds=max(1.0, delay))
            await audit.record("rotation.deferred", user_id, err.slug, rotationId=rotation_id,
                               delaySeconds=round(max(1.0, delay), 3), reason=err.detail)
            return None
        except BridgeError as err:
            if not err.retryable:
                await self._give_up(conn, message, err, "not retryable")
                return Outcome(user_id, Status.FAILED, reason=err.detail)
            if dequeue_count >= max_dequeue_count:
                await self._give_up(conn, message, err, f"attempt {dequeue_count} of {max_dequeue_count}")
            raise
        except Exception as exc:
            log.exception("rotation %s of %s failed unexpectedly", rotation_id, user_id)
            unexpected = translated(exc)
            await self._give_up(conn, message, unexpected, "not retryable")
            return Outcome(user_id, Status.FAILED, reason=unexpected.detail)

    async def _give_up(self, conn: Connection, message: WorkMessage, err: BridgeError, why: str) -> None:
        reason = f"{err.title}: {err.detail} ({why})"
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=message.correlation_id)
        await audit.record("rotation.failed", message.target, "failed", graph_request_id=err.request_id,
                           rotationId=message.idempotency_key, reason=reason)
        # A pending version stays "possibly current" in Key Vault; the state only records the failure. When
        # another rotation holds the lease, nothing is written: its own outcome will be recorded there.
        try:
            await self._rotations.fail(conn.name, message.target, message.idempotency_key, reason,
                                       now=self._clock.now())
        except Conflict:
            log.info("rotation row of %s changed while recording a failure; keeping the newer row", message.target)

    async def counts(self, conn: Connection) -> dict[str, int]:
        """Per-connection status counts: due, rotated, possibly current, failed, refused, in progress.

        A user whose last rotation was refused (excluded, privileged, synced without writeback) is counted
        as refused, never as due: the timer's next run would be refused again until the operator acts.
        """
        return (await self.summary(conn)).counts

    async def summary(self, conn: Connection) -> RotationSummary:
        """The counts of `counts`, and how many users each refusal reason holds back."""
        result = {"due": 0, **{s.value: 0 for s in Status}}
        reasons: dict[str, int] = {}
        feature = conn.features.rotation
        now = self._clock.now()
        excluded = {e.lower() for e in feature.excluded_users}
        rows = await self._rotations.rows(conn.name)
        for row in rows.values():
            if row.status is not None:
                result[row.status.value] += 1
            if row.status is Status.REFUSED:
                reason = row.reason or "refused"
                reasons[reason] = reasons.get(reason, 0) + 1
        if feature.enabled:
            async for subject in self._subjects.all(conn.name):
                if not (subject.active and subject.in_rotation_group):
                    continue
                if subject.user_id.lower() in excluded or subject.upn.lower() in excluded:
                    continue
                held = rows.get(subject.user_id)
                if held is not None and held.status is Status.REFUSED:
                    continue
                if policy.is_due(held.last_rotated_at if held else None, interval_days=feature.interval_days, now=now):
                    result["due"] += 1
        return RotationSummary(result, reasons)

    # ------------------------------------------------------------------ one rotation

    async def rotate(self, conn: Connection, directory: PasswordDirectory, user_id: str, *, rotation_id: str,
                     correlation_id: str) -> Outcome:
        """Rotate one user's password under a lease; see the module docstring for the protocol."""
        now = self._clock.now()
        seen = await self._rotations.get(conn.name, user_id)
        row = seen.value
        if row.last_rotation_id == rotation_id and row.status in (Status.ROTATED, Status.REFUSED, Status.FAILED):
            if row.status is Status.ROTATED and row.last_version:
                # A replay records the event again: a worker stopped after the row and before the event.
                await self._announce(conn.name, user_id, rotation_id, row.last_version)
            return Outcome(user_id, row.status, row.last_version, row.reason, replay=True)
        # Conflict here: another rotation holds the lease, or another worker took it first.
        claimed = await self._rotations.claim(conn.name, user_id, seen, rotation_id, now=now, until=now + LEASE)
        try:
            outcome = await self._rotate_locked(conn, directory, user_id, rotation_id, correlation_id)
        except BridgeError as err:
            if isinstance(err, Throttled):
                status = Status.IN_PROGRESS  # nothing was written to Entra; the message comes back later
            elif isinstance(err, Transient):
                status = Status.POSSIBLY_CURRENT  # a pending version may be what Entra now holds
            else:
                status = Status.FAILED
            await self._rotations.finish(conn.name, user_id, claimed, {
                "status": status, "reason": err.detail, "attempts": claimed.value.attempts + 1})
            raise
        update: dict[str, object] = {"status": outcome.status, "reason": outcome.reason, "attempts": 0}
        if outcome.status is Status.ROTATED:
            update |= {"last_rotated_at": self._clock.now(), "last_version": outcome.version}
        await self._rotations.finish(conn.name, user_id, claimed, update)
        if outcome.status is Status.ROTATED and outcome.version:
            await self._announce(conn.name, user_id, rotation_id, outcome.version)
        return outcome

    async def _announce(self, connection: str, user_id: str, rotation_id: str, version: str) -> None:
        """password.rotated: ids and the Key Vault version only, so the device fetches the password now."""
        await announce(self._events, new_event(EventType.PASSWORD_ROTATED, connection=connection, subject=user_id,
                                               change=version, time=self._clock.now(), userId=user_id,
                                               rotationId=rotation_id, secretVersion=version))

    async def _rotate_locked(self, conn: Connection, directory: PasswordDirectory, user_id: str, rotation_id: str,
                             correlation_id: str) -> Outcome:
        feature = conn.features.rotation
        subject = await self._subjects.get(conn.name, user_id)
        if subject is None:
            raise NotFound(f"user {user_id} is not in the bridge directory of {conn.name!r}")
        admin_roles = await directory.admin_roles(user_id)
        subject = policy.RotationSubject(**{**subject.__dict__, "admin_roles": admin_roles})
        refused = policy.refusal(subject, excluded=feature.excluded_users, writeback_path=feature.writeback_path,
                                 app_roles=await directory.app_roles())
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        if refused is not None:
            await audit.record("rotation.refused", user_id, "refused", reason=refused.value, rotationId=rotation_id)
            return Outcome(user_id, Status.REFUSED, reason=refused.value)

        name = policy.secret_name(conn.name, user_id)
        banned = banned_terms([subject.display_name, subject.upn, await directory.tenant_name()])
        last_rejection = ""
        for _ in range(MAX_DEFINITE_REJECTIONS):
            password = generate(PasswordPolicy(length=feature.password_length), banned=banned)
            tags = {policy.STATE_TAG: policy.PENDING, policy.ROTATION_TAG: rotation_id,
                    policy.ROTATED_AT_TAG: self._clock.now().isoformat(), policy.USER_TAG: user_id}
            pending = await self._secrets.put(name, password, tags=tags, content_type="password")
            await audit.record("vault.put", user_id, "pending", vault_version=pending.version, secret=name,
                               rotationId=rotation_id)
            try:
                request_id = await directory.reset(user_id, password)
            except InvalidInput as err:
                # Graph definitely refused this password: it can never be current.
                await self._mark(name, pending, policy.FAILED, enabled=False)
                await audit.record("graph.password.reset", user_id, "rejected", graph_request_id=err.request_id,
                                   vault_version=pending.version, reason=err.detail)
                last_rejection = err.detail
                continue
            except (Throttled, PermissionDenied) as err:
                # Neither was applied: a 429 or 403 is answered before any change is made.
                await self._mark(name, pending, policy.FAILED, enabled=False)
                await audit.record("graph.password.reset", user_id, err.slug, graph_request_id=err.request_id,
                                   vault_version=pending.version, reason=err.detail)
                raise
            except (Ambiguous, Transient) as err:
                await audit.record("graph.password.reset", user_id, "unknown", graph_request_id=err.request_id,
                                   vault_version=pending.version, reason=err.detail, versionState="possibly current")
                raise
            # One record audits the Graph write and the promotion (it carries Graph's request id).
            await self._promote(name, pending.version, keep=feature.keep_superseded)
            await audit.record("rotation.completed", user_id, "rotated", graph_request_id=request_id,
                               vault_version=pending.version, rotationId=rotation_id)
            return Outcome(user_id, Status.ROTATED, version=pending.version)
        reason = f"Graph rejected {MAX_DEFINITE_REJECTIONS} generated passwords: {last_rejection}"
        await audit.record("rotation.failed", user_id, "failed", reason=reason)
        return Outcome(user_id, Status.FAILED, reason=reason)

    async def _mark(self, name: str, version: SecretVersion, state: str, *, enabled: bool | None = None) -> None:
        await self._secrets.set_tags(name, version.version, {**version.tags, policy.STATE_TAG: state}, enabled=enabled)

    async def _promote(self, name: str, new_version: str, *, keep: int) -> None:
        found = await self._secrets.versions(name)
        by_version = {v.version: v for v in found}
        # The new version first: from here on a reader finds it current even if we stop midway.
        for change in policy.after_success(_versions(found), new_version, keep_superseded=keep):
            await self._mark(name, by_version[change.version], change.state, enabled=change.enabled)

    # ------------------------------------------------------------------ delivery

    async def read_for_device(self, conn: Connection, user_id: str) -> DeliveredPassword:
        """The current password and any possibly-current ones for a user (values included)."""
        name = policy.secret_name(conn.name, user_id)
        found = await self._secrets.versions(name)
        seen = policy.view(_versions(found))
        if seen.current is None and not seen.possibly_current:
            raise NotFound(f"no managed password exists yet for user {user_id}")
        tags: Mapping[str, str] = {}
        password = version = None
        if seen.current is not None:
            current = await self._secrets.get(name, seen.current.version)
            password, version, tags = current.value, current.version, current.tags
        candidates = [(v.version, (await self._secrets.get(name, v.version)).value or "")
                      for v in seen.possibly_current]
        return DeliveredPassword(password=password, version=version, rotated_at=tags.get(policy.ROTATED_AT_TAG),
                                 possibly_current=candidates)
