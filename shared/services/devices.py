"""The device registry: register a user's device with its key, read it, and remove it.

Removal answers at once with an operation id; the `device-work` queue revokes, one by one, every
passkey the bridge registered for the device in Entra (a 404 counts as done), records progress
(DeviceOperations), moves the user's enrollment state and audits each step. Replays are harmless:
each passkey record is forgotten only after Entra confirmed, and a finished operation is not redone.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Connection, PasskeyPolicy
from shared.domain.devices import (
    DevicePasskey,
    DeviceRow,
    DeviceState,
    PasskeyRow,
    PasskeyState,
    PublicJwk,
    passkey_status,
)
from shared.domain.directory import Enrollment, UserRow
from shared.domain.events import Event, EventType, new_event
from shared.errors import BridgeError, Conflict, InvalidInput, NotFound, root_cause, translated, worth_retrying
from shared.messages import WorkMessage
from shared.services.audit_context import AuditContext
from shared.services.delivery import RegisteredDevice
from shared.services.directory import Directory
from shared.services.events import announce
from shared.services.ports import (
    AuditSink,
    Clock,
    DeviceOperations,
    DeviceRepository,
    EventOutbox,
    JsonObject,
    PasskeyDirectory,
    PasskeyRepository,
    Revocation,
    Versioned,
    WorkQueue,
)
from shared.topology import Queue

log = logging.getLogger(__name__)

ACTOR = "devices"
#: Runs of held enrollment events are named by this prefix and the event id.
ENROLLMENT_RUN = "enrollment-"
#: Runs of held passkey-registration events: this prefix and the id of the passkey.registered event.
PASSKEY_RUN = "passkey-"
#: A held enrollment or registration event younger than this may belong to a write still in progress.
ENROLLMENT_HOLD = dt.timedelta(minutes=5)
#: Devices listed by name in a connection's status; beyond that, only counted.
STATUS_LIST = 100


class DeviceRegistration(BaseModel):
    """Body of PUT connections/{c}/devices/{deviceId}."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    user: Annotated[str, Field(min_length=1, max_length=256, description="object id or UPN")]
    display_name: Annotated[str, Field(alias="displayName", min_length=1, max_length=256)]
    public_key: Annotated[PublicJwk, Field(alias="publicKey")]


@dataclass(frozen=True)
class PasskeyRef:
    """A passkey the bridge registered for a device."""

    method_id: str
    user_id: str
    device_id: str
    data: JsonObject

    @classmethod
    def of(cls, row: PasskeyRow) -> PasskeyRef:
        """The reference to a registered passkey; `data` is its record in JSON form."""
        return cls(row.method_id, row.user_id, row.device_id, row.to_row())


class DeviceService:
    """Registers, reads and removes devices."""

    def __init__(self, *, directory: Directory, devices: DeviceRepository, passkeys: PasskeyRepository,
                 operations: DeviceOperations, audit: AuditSink, queue: WorkQueue, clock: Clock,
                 events: EventOutbox | None = None) -> None:
        self._directory = directory
        self._events = events
        self._registry = devices
        self._passkeys = passkeys
        self._operations = operations
        self._audit = audit
        self._queue = queue
        self._clock = clock

    async def get(self, connection: str, device_id: str) -> DeviceRow:
        """A device; NotFound when the registry does not know it."""
        return (await self._found(connection, device_id)).value

    async def _found(self, connection: str, device_id: str) -> Versioned[DeviceRow]:
        found = await self._registry.get(connection, device_id)
        if found is None:
            raise NotFound(f"device {device_id!r} is not registered in connection {connection!r}")
        return found

    async def registered_device(self, connection: str, device_id: str) -> RegisteredDevice | None:
        """The device and its key for request signatures (the DeviceKeys port of delivery)."""
        try:
            row = await self.get(connection, device_id)
        except NotFound:
            return None
        return RegisteredDevice(device_id, row.user_id, row.state is DeviceState.ACTIVE, row.public_key.as_dict())

    async def register(self, conn: Connection, device_id: str, body: DeviceRegistration, *, actor: str,
                       correlation_id: str) -> tuple[DeviceRow, bool]:
        """Register or update a device of an imported, active user; returns it and whether it is new."""
        user = await self._directory.find(conn.name, body.user)
        if user is None:
            raise NotFound(f"user {body.user!r} is not imported in connection {conn.name!r}; sync it first")
        if not user.active:
            raise Conflict(f"user {user.upn} is {user.state.value} in the bridge directory; only active users "
                           "may register devices")
        now = self._clock.now()
        existing = await self._registry.get(conn.name, device_id)
        if existing is not None:
            old = existing.value
            if old.user_id != user.id:
                raise Conflict(f"device {device_id!r} belongs to another user; remove it first")
            if old.state is not DeviceState.ACTIVE:
                raise Conflict(f"device {device_id!r} is being removed ({old.state.value}); use a new device id")
        row = DeviceRow(id=device_id, user_id=user.id, display_name=body.display_name, public_key=body.public_key,
                        registered_at=now if existing is None else existing.value.registered_at, updated_at=now)
        if existing is None:
            await self._registry.add(conn.name, row)
        else:
            await self._registry.replace(conn.name, Versioned(row, existing.version))
        if existing is None and user.enrollment is Enrollment.NOT_ENROLLED:
            await self._move_enrollment(conn.name, user, Enrollment.PAIRED_WITH_PROVIDER, cause=f"device:{device_id}")
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("device.registered" if existing is None
                                 else "device.updated", user.id, "ok", device=device_id)
        return row, existing is None

    async def states(self, connection: str) -> dict[str, DeviceState]:
        """Every registered device's state, by device id."""
        return {device.id: device.state async for device in self._registry.all(connection)}

    async def passkeys(self, connection: str, device_id: str) -> list[PasskeyRef]:
        """Passkeys the bridge registered for a device."""
        return [PasskeyRef.of(row) for row in await self._passkeys.of_device(connection, device_id)]

    async def has_passkey(self, connection: str, device_id: str) -> bool:
        """Whether a passkey the bridge registered for the device is live in Entra (as reconciliation saw it)."""
        return any(p.data.get("state", PasskeyState.ACTIVE.value) == PasskeyState.ACTIVE.value
                   for p in await self.passkeys(connection, device_id))

    @staticmethod
    def passkey_status(conn: Connection, device: DeviceRow, passkeys: list[PasskeyRef]) -> DevicePasskey:
        """The device's passkey enrollment (pending, registered, skipped) under the connection's policy."""
        live = any(p.data.get("state", PasskeyState.ACTIVE.value) == PasskeyState.ACTIVE.value for p in passkeys)
        return passkey_status(device, live, conn.features.passkeys.policy)

    async def run_removal(self, conn: Connection, entra: Callable[[Connection], Awaitable[PasskeyDirectory]],
                          message: WorkMessage, *, last_delivery: bool) -> JsonObject:
        """The device-work job: `complete_removal` on the connection's passkey directory. A failure shows on
        the operation (`failed` once the host will not deliver the message again) and is raised."""
        try:
            result = await self.complete_removal(conn, await entra(conn), message)
        except Exception as exc:
            err = translated(exc)
            await self.removal_failed(conn.name, message.idempotency_key, err,
                                      final=last_delivery or not worth_retrying(err))
            raise
        log.info("device %s removed: %s passkeys revoked", message.target, result.get("done"))
        return result

    async def view(self, conn: Connection, device_id: str) -> JsonObject:
        """A device with its passkey enrollment and the passkeys the bridge registered for it."""
        row = await self.get(conn.name, device_id)
        refs = await self.passkeys(conn.name, row.id)
        passkeys = [{"id": p.method_id, **{k: v for k, v in p.data.items() if k != "methodId"}} for p in refs]
        return {**row.to_row(), "passkey": self.passkey_status(conn, row, refs).value, "passkeys": passkeys}

    async def skip_passkey(self, conn: Connection, device_id: str, *, reason: str, actor: str,
                           correlation_id: str) -> DeviceRow:
        """Policy `optional`: record that the device's enrollment finished without a passkey ("passkey skipped")."""
        found = await self._found(conn.name, device_id)
        row = found.value
        skipped = row.model_copy(update={"passkey_skipped_at": self._clock.now(), "passkey_skip_reason": reason[:500],
                                         "updated_at": self._clock.now()})
        await self._registry.replace(conn.name, Versioned(skipped, found.version))
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("device.passkeySkipped", row.user_id, "skipped", device=device_id, reason=reason[:500])
        return skipped

    async def passkey_enrollment(self, conn: Connection) -> JsonObject | None:
        """For the connection's status: its passkey policy and how many devices stand where, naming the
        devices pending their passkey (None when passkeys are off)."""
        feature = conn.features.passkeys
        if not feature.enabled or feature.policy is PasskeyPolicy.DISABLED:
            return None
        live: set[str] = set()
        async for passkey in self._passkeys.all(conn.name):
            if passkey.value.state is PasskeyState.ACTIVE:
                live.add(passkey.value.device_id)
        counts = {status.value: 0 for status in DevicePasskey}
        pending: list[JsonObject] = []
        async for row in self._registry.all(conn.name):
            if row.state is not DeviceState.ACTIVE:
                continue
            status = passkey_status(row, row.id in live, feature.policy)
            counts[status.value] += 1
            if status is DevicePasskey.PENDING and len(pending) < STATUS_LIST:
                pending.append({"deviceId": row.id, "userId": row.user_id, "registeredAt": row.registered_at})
        return {"policy": feature.policy.value, "withholdPasswordsUntilPasskey":
                feature.policy is PasskeyPolicy.REQUIRED and feature.withhold_passwords_until_passkey,
                "devices": counts, "pendingPasskey": pending}

    async def remove(self, conn: Connection, device_id: str, *, actor: str, correlation_id: str) -> str:
        """Accept removal of a device; returns the operation id whose progress can be read."""
        found = await self._found(conn.name, device_id)
        row = found.value
        if row.removal_operation:
            return row.removal_operation  # asked twice: the same operation
        operation = f"op-{uuid.uuid4().hex[:16]}"
        passkeys = await self.passkeys(conn.name, device_id)
        await self._operations.start(conn.name, operation, {
            "kind": "device.remove", "target": device_id, "status": "queued", "total": len(passkeys), "done": 0,
            "createdAt": self._clock.now().isoformat()})
        updated = row.model_copy(update={"state": DeviceState.REMOVING, "removal_operation": operation,
                                         "updated_at": self._clock.now()})
        await self._registry.replace(conn.name, Versioned(updated, found.version))
        message = WorkMessage(connection=conn.name, kind="device.remove", target=device_id,
                              idempotency_key=operation, correlation_id=correlation_id, args={"actor": actor})
        await self._queue.send(Queue.DEVICE, message.model_dump(mode="json", by_alias=True))
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("device.removal.requested", row.user_id, "queued", device=device_id, operation=operation,
                           passkeys=len(passkeys))
        return operation

    async def operation(self, connection: str, operation: str) -> JsonObject:
        """An operation's progress."""
        found = await self._operations.get(connection, operation)
        if found is None:
            raise NotFound(f"operation {operation!r} does not exist in connection {connection!r}")
        return {"id": operation, **found}

    async def removal_failed(self, connection: str, operation: str, err: BridgeError, *, final: bool) -> None:
        """Record why a device removal failed: `failed` with its problem when no retry follows, else still running."""
        problem = root_cause(err).problem()
        if final:
            await self._progress(connection, operation, status="failed", problem=problem)
        else:
            await self._progress(connection, operation, status="running", lastError=err.detail)

    async def revoke_passkey(self, conn: Connection, entra: PasskeyDirectory, device_id: str, method_id: str, *,
                             actor: str, correlation_id: str) -> Revocation:
        """Revoke one passkey of a device in Entra, then forget it and move the user's enrollment state."""
        found = await self._passkeys.get(conn.name, device_id, method_id)
        if found is None:
            raise NotFound(f"passkey {method_id!r} is not registered for device {device_id!r}")
        user_id = found.value.user_id
        revocation = await entra.revoke(user_id, method_id)
        # Recorded before the record goes: a retry finds it, revokes again (a no-op) and records the same id.
        await self.announce_passkey(EventType.PASSKEY_REVOKED, conn.name, user_id, device_id, method_id)
        await self._passkeys.delete(conn.name, device_id, method_id)
        await self._update_enrollment(conn.name, user_id, cause=f"revoked:{method_id}")
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("passkey.revoked", user_id, revocation.outcome, graph_request_id=revocation.request_id,
                           device=device_id, method=method_id)
        return revocation

    async def complete_removal(self, conn: Connection, entra: PasskeyDirectory, message: WorkMessage) -> JsonObject:
        """Revoke each passkey of the device in Entra, then mark the device removed (device-work)."""
        device_id, operation = message.target, message.idempotency_key
        progress = await self.operation(conn.name, operation)
        if progress.get("status") == "completed":
            # A redelivery records the event again (same id): the first delivery may have stopped before it.
            await self._announce_removed(conn.name, await self.get(conn.name, device_id), operation)
            return progress
        row = await self.get(conn.name, device_id)
        passkeys = await self.passkeys(conn.name, device_id)
        # A delivery stopped between deleting a passkey's row and recording progress left `done` one short:
        # the rows still held say how many of the operation's passkeys are gone (none is added while removing).
        done = max(int(progress.get("done", 0)), int(progress.get("total", 0)) - len(passkeys))
        await self._progress(conn.name, operation, status="running")
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=message.correlation_id)
        for passkey in passkeys:
            revocation = await entra.revoke(passkey.user_id, passkey.method_id)
            await self.announce_passkey(EventType.PASSKEY_REVOKED, conn.name, passkey.user_id, device_id,
                                        passkey.method_id)
            await audit.record("passkey.revoked", passkey.user_id, revocation.outcome,
                               graph_request_id=revocation.request_id, device=device_id, method=passkey.method_id)
            await self._passkeys.delete(conn.name, device_id, passkey.method_id)
            done += 1
            await self._progress(conn.name, operation, done=done)
        removed = row.model_copy(update={"state": DeviceState.REMOVED, "updated_at": self._clock.now()})
        await self._registry.put(conn.name, removed)
        await self._announce_removed(conn.name, row, operation)
        await self._update_enrollment(conn.name, row.user_id, cause=f"removed:{operation}")
        await audit.record("device.removed", row.user_id, "removed", device=device_id, operation=operation,
                           passkeysRevoked=done)
        return await self._progress(conn.name, operation, status="completed", done=done)

    async def update_enrollment(self, connection: str, user_id: str, *, cause: str = "") -> None:
        """Set the user's enrollment state from the devices and passkeys the registry holds."""
        await self._update_enrollment(connection, user_id, cause=cause)

    def passkey_event(self, kind: EventType, connection: str, user_id: str, device_id: str, method_id: str) -> Event:
        """passkey.registered, .revoked or .deletedInEntra of one passkey (its method id is the change)."""
        return new_event(kind, connection=connection, subject=user_id, change=method_id, time=self._clock.now(),
                         userId=user_id, deviceId=device_id, passkeyId=method_id)

    async def announce_passkey(self, kind: EventType, connection: str, user_id: str, device_id: str,
                               method_id: str) -> None:
        """Record one passkey event."""
        await announce(self._events, self.passkey_event(kind, connection, user_id, device_id, method_id))

    def enrollment_event(self, connection: str, user_id: str, before: Enrollment, after: Enrollment, *,
                         cause: str) -> Event:
        """enrollment.changed; `cause` (the change that moved it) keeps a later identical move distinct."""
        return new_event(EventType.ENROLLMENT_CHANGED, connection=connection, subject=user_id,
                         change=f"{before.value}>{after.value}:{cause}", time=self._clock.now(), userId=user_id,
                         enrollment=after.value, previous=before.value)

    async def _move_enrollment(self, connection: str, user: UserRow, after: Enrollment, *, cause: str) -> None:
        """Write the user's new enrollment state with its event held around the write (docs/events.md)."""
        event = self.enrollment_event(connection, user.id, user.enrollment, after, cause=cause)
        run = f"{ENROLLMENT_RUN}{event.id}"
        if self._events is not None:
            await self._events.hold(connection, run, [event])
        await self._directory.put(connection, user.model_copy(update={"enrollment": after}))
        if self._events is not None:
            await self._events.release(connection, run)

    async def with_events(self, connection: str, run: str, events: Sequence[Event],
                          write: Callable[[], Awaitable[None]]) -> None:
        """Make a state change with its events held around it (docs/events.md): held under `run` before
        `write`, released once it succeeded. A stop or a failure in between leaves them held, for
        `recover_enrollment_events` to judge by what was stored."""
        if self._events is not None:
            await self._events.hold(connection, run, events)
        await write()
        if self._events is not None:
            await self._events.release(connection, run, held=events)

    async def recover_enrollment_events(self, connection: str) -> int:
        """Release the enrollment and passkey-registration events held by a process that stopped around its
        writes, when the stored rows show the change they announce; drop the others. Only holds older than
        ENROLLMENT_HOLD are judged, so a write in progress is left alone. Returns how many were released."""
        if self._events is None:
            return 0
        released = 0
        cutoff = self._clock.now() - ENROLLMENT_HOLD
        for run, held in (await self._events.held(connection)).items():
            if not run.startswith((ENROLLMENT_RUN, PASSKEY_RUN)) or any(e.time > cutoff for e in held):
                continue
            proven = {event.id for event in held if await self._stored(connection, event)}
            await self._events.release(connection, run, proven)
            released += len(proven)
        return released

    async def _stored(self, connection: str, event: Event) -> bool:
        """Whether the stored rows show the change a held event announces."""
        if event.type is EventType.ENROLLMENT_CHANGED:
            user = await self._directory.get(connection, event.subject)
            return user is not None and user.enrollment.value == event.data.get("enrollment")
        if event.type is EventType.PASSKEY_REGISTERED:
            # The record the registration wrote.
            try:
                row = await self._passkeys.get(connection, str(event.data.get("deviceId")),
                                               str(event.data.get("passkeyId")))
            except InvalidInput:
                return False  # not ids the registry could have recorded
            return row is not None
        return False

    async def _announce_removed(self, connection: str, row: DeviceRow, operation: str) -> None:
        await announce(self._events, new_event(EventType.DEVICE_REMOVED, connection=connection, subject=row.id,
                                               change=operation, time=self._clock.now(), deviceId=row.id,
                                               userId=row.user_id, operationId=operation))

    async def _update_enrollment(self, connection: str, user_id: str, *, cause: str = "") -> None:
        user = await self._directory.get(connection, user_id)
        if user is None:
            return
        has_passkey = has_device = False
        async for device in self._registry.all(connection):
            if device.user_id == user_id and device.state is DeviceState.ACTIVE:
                has_device = True
                has_passkey = has_passkey or any(p.state is PasskeyState.ACTIVE
                                                 for p in await self._passkeys.of_device(connection, device.id))
        state = Enrollment.PAIRED_WITH_ENTRA if has_passkey else (
            Enrollment.PAIRED_WITH_PROVIDER if has_device else Enrollment.NOT_ENROLLED)
        if user.enrollment is not state:
            await self._move_enrollment(connection, user, state, cause=cause or self._clock.now().isoformat())

    async def _progress(self, connection: str, operation: str, **changes: Any) -> JsonObject:
        progress = await self._operations.update(connection, operation,
                                                 {**changes, "updatedAt": self._clock.now().isoformat()})
        return {"id": operation, **progress}
