"""Passkey enrollment for a registered device through Graph's FIDO2 provisioning API.

1. `options`: the connection's passkey policy is checked, Graph's creation options are fetched for the
   device's user, a ceremony (challenge, expiry, user, device) is stored, and the options are returned
   in WebAuthn JSON form (base64url) with the ceremony id.
2. `register`: the ceremony must exist, belong to the device, be unexpired and unused; the credential
   is verified locally (shared.domain.attestation) before Graph is called; the ceremony is consumed
   with an ETag check so two requests cannot both use it; then Graph registers the passkey, and the
   registry, the enrollment state and the audit log follow, the registration's events held around the
   state writes (docs/events.md).

3. `reconcile` (run after each completed sync): each user's fido2Methods in Entra against the
   registry; passkeys of removed devices or removed users still in Entra are revoked, passkeys deleted
   in Entra are marked, duplicates are flagged, and every fix is audited.

Entra is reached through the PasskeyDirectory port (shared/adapters/passkeys.py implements it on Graph).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Connection, PasskeyPolicy
from shared.domain import attestation
from shared.domain.devices import (
    DeviceRow,
    DeviceState,
    Fix,
    PasskeyRow,
    PasskeyState,
    Reconciliation,
    plan_reconciliation,
)
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.domain.events import EventType
from shared.errors import BridgeError, Conflict, Forbidden, InvalidInput, NotFound
from shared.services.audit_context import AuditContext
from shared.services.devices import PASSKEY_RUN, DeviceService, PasskeyDirectory
from shared.services.directory import Directory
from shared.services.ports import AuditSink, Clock, Entity, EntityStore, JsonObject, TrustAnchorSource
from shared.services.reconcile import Capability, Done, reconcile
from shared.topology import Table

log = logging.getLogger(__name__)

ACTOR = "passkeys"
READ_CONCURRENCY = 8
#: Oldest copy of the tenant's FIDO2 policy a registration is checked against (PASSKEY_POLICY_MAX_AGE_SECONDS).
POLICY_MAX_AGE = dt.timedelta(seconds=30)
#: How long a ceremony row is kept after it expired, so a late registration still hears "expired".
CEREMONY_KEPT = dt.timedelta(days=1)
T = TypeVar("T")


class PasskeyRegistration(BaseModel):
    """Body of POST .../devices/{deviceId}/passkeys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ceremony_id: Annotated[str, Field(alias="ceremonyId", min_length=1, max_length=160)]
    display_name: Annotated[str, Field(alias="displayName", min_length=1, max_length=200)]
    credential: dict[str, Any]


def repair_base64url(value: str) -> str:
    """Graph has returned credential ids in standard base64 with padding; WebAuthn JSON wants base64url."""
    text = value.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text)
                               else None)
    except (binascii.Error, ValueError):
        return text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def webauthn_json(value: Any) -> Any:
    """Graph's options without its `@odata.*` annotations, which no WebAuthn client expects."""
    if isinstance(value, dict):
        return {k: webauthn_json(v) for k, v in value.items() if not k.startswith("@odata.")}
    if isinstance(value, list):
        return [webauthn_json(v) for v in value]
    return value


def trust_word(trusted: bool | None) -> str:
    """How far an attestation chain was trusted, for the response and the audit record."""
    return "not-checked" if trusted is None else "trusted" if trusted else "untrusted"


def ceremony_id(user_id: str) -> str:
    """A new ceremony id; it names the user so that registration reads the user with the ceremony."""
    return f"cer-{uuid.uuid4().hex}-{user_id}"


def ceremony_user(ceremony: str) -> str | None:
    """The user a ceremony id names; None for an id not in that form (it then matches no ceremony)."""
    prefix, _, rest = ceremony.partition("-")
    token, _, user = rest.partition("-")
    return user if prefix == "cer" and len(token) == 32 and user else None


async def outcome(call: Awaitable[T]) -> T | Exception:
    """The call's result, or the error it raised: for a read whose failure matters only after other checks."""
    try:
        return await call
    except Exception as exc:  # handed back to the caller, who raises it in its turn
        return exc


def raised(result: T | BaseException) -> T:
    """A value from asyncio.gather(..., return_exceptions=True), raising it when it is an exception."""
    if isinstance(result, BaseException):
        raise result
    return result


async def settle(*calls: Awaitable[Any]) -> list[Any]:
    """Run independent calls together and wait for all of them; then raise the first failure in argument order.

    Unlike a bare asyncio.gather, no call is left running when another fails, and which error the
    caller sees does not depend on which round trip happened to finish first.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@dataclass
class ReconcileReport:
    """What one reconciliation found and did."""

    users: int = 0
    passkeys: int = 0
    revoked: int = 0
    marked_deleted: int = 0
    duplicates: int = 0
    unreadable_users: list[str] = field(default_factory=list)
    ceremonies_purged: int = 0

    def as_dict(self) -> JsonObject:
        """JSON form (camelCase, like every other body)."""
        data = asdict(self)
        return {"users": data["users"], "passkeys": data["passkeys"], "revoked": data["revoked"],
                "markedDeleted": data["marked_deleted"], "duplicates": data["duplicates"],
                "unreadableUsers": data["unreadable_users"], "ceremoniesPurged": data["ceremonies_purged"]}


class PasskeyService:
    """Creation options, registration and reconciliation of device-bound passkeys."""

    def __init__(self, *, devices: DeviceService, directory: Directory, entities: EntityStore, audit: AuditSink,
                 clock: Clock, policy_max_age: dt.timedelta = POLICY_MAX_AGE,
                 trust: TrustAnchorSource | None = None) -> None:
        self._devices = devices
        self._directory = directory
        self._entities = entities
        self._audit = audit
        self._clock = clock
        self._policy: dict[str, tuple[dt.datetime, JsonObject]] = {}
        self._policy_max_age = policy_max_age
        self._trust = trust

    @staticmethod
    def _check_enabled(conn: Connection) -> None:
        feature = conn.features.passkeys
        if not feature.enabled or feature.policy is PasskeyPolicy.DISABLED:
            raise Forbidden(f"passkeys are disabled for connection {conn.name!r} (features.passkeys.enabled, "
                            "features.passkeys.policy)")

    @staticmethod
    def _check_device(device: DeviceRow, device_id: str) -> None:
        if device.state is not DeviceState.ACTIVE:
            raise Conflict(f"device {device_id!r} is {device.state.value}")

    @staticmethod
    def _check_user(user: UserRow | None, device_id: str) -> UserRow:
        if user is None or not user.active:
            raise Conflict(f"the user of device {device_id!r} is not active in the bridge directory")
        return user

    async def _tenant_policy(self, conn: Connection, entra: PasskeyDirectory, *, fresh: bool = False) -> JsonObject:
        # A Graph read per registration is saved by a short cache; short, because a key restriction set in
        # the tenant must stop the next registrations here, not in Graph (docs/passkeys.md).
        now = self._clock.now()
        cached = self._policy.get(conn.name)
        if fresh or cached is None or now - cached[0] >= self._policy_max_age:
            cached = (now, await entra.policy())
            self._policy[conn.name] = cached
        return cached[1]

    async def _check_tenant_policy(self, conn: Connection, entra: PasskeyDirectory) -> JsonObject:
        return self._require_enabled_policy(await self._tenant_policy(conn, entra))

    @staticmethod
    def _require_enabled_policy(policy: JsonObject) -> JsonObject:
        # Entra refuses provisioning when the passkey (FIDO2) method is off or self-service setup is not
        # allowed (https://learn.microsoft.com/entra/identity/authentication/how-to-enable-passkey-fido2).
        if policy.get("state") != "enabled":
            raise Conflict("the tenant's passkey (FIDO2) authentication method is disabled: enable it under "
                           "Authentication methods > Passkey (FIDO2) (policy 'state')")
        if policy.get("isSelfServiceRegistrationAllowed") is False:
            raise Conflict("the tenant's passkey policy does not allow self-service setup, which Graph's "
                           "provisioning API requires: turn on 'Allow self-service set up' "
                           "(isSelfServiceRegistrationAllowed)")
        return policy

    async def options(self, conn: Connection, entra: PasskeyDirectory, device_id: str, *,
                      correlation_id: str) -> JsonObject:
        """Creation options for the device's user, with a stored ceremony."""
        self._check_enabled(conn)
        device = await self._devices.get(conn.name, device_id)
        self._check_device(device, device_id)
        timeout = conn.features.passkeys.challenge_timeout_minutes

        async def from_entra() -> JsonObject:
            await self._check_tenant_policy(conn, entra)
            return await entra.creation_options(device.user_id, timeout)

        # The user's row and the device's passkeys are read while Entra prepares the options (reads on
        # each side, nothing written); an inactive user is refused whatever Entra answered.
        user_read, own_read, entra_read = await asyncio.gather(
            self._directory.get(conn.name, device.user_id), self._devices.passkeys(conn.name, device_id),
            from_entra(), return_exceptions=True)
        user = self._check_user(raised(user_read), device_id)
        body, own = raised(entra_read), raised(own_read)
        public_key = webauthn_json(dict(body.get("publicKey") or {}))
        if not public_key.get("challenge"):
            raise InvalidInput("Graph returned creation options without a challenge")
        public_key["challenge"] = repair_base64url(str(public_key["challenge"]))
        if isinstance(public_key.get("user"), dict) and public_key["user"].get("id"):
            public_key["user"]["id"] = repair_base64url(str(public_key["user"]["id"]))
        public_key["excludeCredentials"] = [{**c, "id": repair_base64url(str(c.get("id", "")))}
                                            for c in public_key.get("excludeCredentials") or []]
        expires = str(body.get("challengeTimeoutDateTime") or
                      (self._clock.now() + dt.timedelta(minutes=timeout)).isoformat())
        # The credentials a registration must not repeat: the user's in Entra (excludeCredentials) and the
        # device's in the registry, kept with the ceremony so that registering reads none of them again.
        excluded = dict.fromkeys([c["id"] for c in public_key["excludeCredentials"]] +
                                 [str(p.data.get("credentialId")) for p in own if p.data.get("credentialId")])
        ceremony = ceremony_id(user.id)
        detail = {"device": device_id, "ceremony": ceremony}
        stored, audited = await asyncio.gather(
            self._entities.insert(Table.CEREMONIES, Entity(conn.name, ceremony, {
                "challenge": public_key["challenge"], "expiresAt": expires, "userId": user.id, "deviceId": device_id,
                "excluded": ",".join(excluded), "used": False})),
            self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.options", target=user.id,
                               outcome="issued", correlation_id=correlation_id, detail=detail),
            return_exceptions=True)
        if isinstance(stored, BaseException):
            # The ceremony row and its record are written together; when the row failed, the record that
            # says it was issued is followed by one that says it was not (the ceremony cannot be used).
            if not isinstance(audited, BaseException):
                await self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.options", target=user.id,
                                         outcome="failed", correlation_id=correlation_id,
                                         detail={**detail, "reason": type(stored).__name__})
            raise stored
        if isinstance(audited, BaseException):
            raise audited
        return {"ceremonyId": ceremony, "expiresAt": expires, "policy": conn.features.passkeys.policy.value,
                "publicKey": public_key}

    async def register(self, conn: Connection, entra: PasskeyDirectory, device_id: str, body: PasskeyRegistration, *,
                       correlation_id: str) -> JsonObject:
        """Verify the credential locally, register it in Entra, record it."""
        self._check_enabled(conn)
        # The device, the ceremony and the user the ceremony names are independent reads: one round trip.
        # The user is re-read only if the device has changed hands since the options.
        named = ceremony_user(body.ceremony_id)
        device, found, user_read, policy_read = await settle(
            self._devices.get(conn.name, device_id),
            self._entities.get(Table.CEREMONIES, conn.name, body.ceremony_id),
            outcome(self._directory.get(conn.name, named)) if named else asyncio.sleep(0),
            outcome(self._tenant_policy(conn, entra)))
        self._check_device(device, device_id)
        if device.user_id != named:
            user_read = await self._directory.get(conn.name, device.user_id)
        if isinstance(user_read, BaseException):
            raise user_read
        user = self._check_user(user_read, device_id)
        if found is None or found.data.get("deviceId") != device_id:
            raise NotFound(f"ceremony {body.ceremony_id!r} was not issued for device {device_id!r}")
        if found.data.get("used"):
            raise Conflict(f"ceremony {body.ceremony_id!r} has already been used; ask for new options")
        if found.data.get("userId") != user.id:
            raise Conflict(f"ceremony {body.ceremony_id!r} was issued to another user of this device; ask for new "
                           "options")
        expires = dt.datetime.fromisoformat(str(found.data["expiresAt"]).replace("Z", "+00:00"))
        if expires <= self._clock.now():
            raise Conflict(f"ceremony {body.ceremony_id!r} expired at {expires.isoformat()}; ask for new options")
        if isinstance(policy_read, BaseException):
            raise policy_read
        policy = self._require_enabled_policy(policy_read)
        # The user's credentials in Entra and the device's in the registry, as the options saw them; a
        # credential registered since then went through its own ceremony, and Entra refuses a repeat.
        known = [c for c in str(found.data.get("excluded") or "").split(",") if c]
        challenge = str(found.data["challenge"])
        raw_challenge = base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4))

        async def check(current: JsonObject) -> attestation.VerifiedCredential:
            enforced = bool(current.get("isAttestationEnforced"))
            # The metadata is read only when the tenant enforces attestation (it is kept in the process).
            anchors = await self._trust.anchors() if enforced and self._trust is not None else None
            return attestation.verify(body.credential, challenge=raw_challenge,
                                      allowed_aaguids=conn.features.passkeys.allowed_aaguids,
                                      restrictions=attestation.KeyRestrictions.from_policy(current),
                                      known_credential_ids=known, attestation_enforced=enforced, trust=anchors)

        try:
            verified = await check(policy)
        except attestation.AttestationRejected as err:
            await self._refuse(conn, user.id, device_id, err.check, err.detail, correlation_id=correlation_id)
        # Consume the ceremony before Graph so a second request with it cannot pass (the ETag decides).
        await self._entities.update(Table.CEREMONIES, Entity(conn.name, body.ceremony_id,
                                                             {**found.data, "used": True}, found.etag))
        try:
            created = await entra.register(user.id, body.display_name, body.credential)
        except InvalidInput as refused:
            # Entra refused the key: most likely the tenant's policy changed since our copy was read. Read it
            # again (the next registration is then checked against it here) and say which check failed, in
            # the same problem as the bridge's own refusal.
            try:
                await check(self._require_enabled_policy(await self._tenant_policy(conn, entra, fresh=True)))
            except attestation.AttestationRejected as err:
                await self._refuse(conn, user.id, device_id, err.check, err.detail, correlation_id=correlation_id,
                                   request_id=refused.request_id, by="entra")
            await self._refuse(conn, user.id, device_id, "credential", f"Entra refused it: {refused.detail}",
                               correlation_id=correlation_id, request_id=refused.request_id, by="entra")
        method = created.body or {}
        method_id = str(method.get("id") or "")
        if not method_id:
            raise InvalidInput("Graph registered the passkey but returned no method id")
        row = PasskeyRow(method_id=method_id, user_id=user.id, device_id=device_id,
                         credential_id=verified.credential_id, aaguid=verified.aaguid,
                         display_name=body.display_name, registered_at=self._clock.now())
        # Entra holds the passkey now. The registration's events are held before the registry row and the
        # enrollment state are written and released once both are (docs/events.md, "Exactly what happened,
        # once"); the audit record is written alongside, even when a row fails.
        events = [self._devices.passkey_event(EventType.PASSKEY_REGISTERED, conn.name, user.id, device_id, method_id)]
        moved = user.enrollment is not Enrollment.PAIRED_WITH_ENTRA
        if moved:
            events.append(self._devices.enrollment_event(conn.name, user.id, user.enrollment,
                                                         Enrollment.PAIRED_WITH_ENTRA, cause=f"registered:{method_id}"))

        async def write() -> None:
            rows: list[Awaitable[Any]] = [self._entities.upsert(Table.PASSKEYS,
                                                                Entity(conn.name, row.row_key, row.to_row()))]
            if moved:
                rows.append(self._directory.put(conn.name, user.model_copy(update={"enrollment":
                                                                                   Enrollment.PAIRED_WITH_ENTRA})))
            await settle(*rows)

        await settle(
            self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.registered", target=user.id,
                               outcome="registered", correlation_id=correlation_id,
                               graph_request_id=created.request_id,
                               detail={"device": device_id, "method": method_id, "aaguid": verified.aaguid,
                                       "attestation": verified.attestation_type,
                                       "attestationTrust": trust_word(verified.trusted)}),
            self._devices.with_events(conn.name, f"{PASSKEY_RUN}{events[0].id}", events, write))
        return {"id": method_id, "deviceId": device_id, "aaguid": verified.aaguid, "displayName": body.display_name,
                "credentialId": verified.credential_id, "attestation": verified.attestation_type,
                "attestationTrust": trust_word(verified.trusted),
                "model": method.get("model"), "createdDateTime": method.get("createdDateTime")}

    async def _refuse(self, conn: Connection, user_id: str, device_id: str, check: str, reason: str, *,
                      correlation_id: str, request_id: str | None = None, by: str = "bridge") -> NoReturn:
        """Audit a refused registration and raise its problem: the same for the bridge's and Entra's refusals."""
        detail = {"device": device_id, "check": check, "reason": reason}
        if by != "bridge":
            detail["refusedBy"] = by
        await self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.rejected", target=user_id,
                                 outcome="rejected", correlation_id=correlation_id, graph_request_id=request_id,
                                 detail=detail)
        raise InvalidInput(f"passkey rejected: {check}: {reason}",
                           field="credential" if check == "credential" else f"credential ({check})",
                           request_id=request_id)

    async def purge_ceremonies(self, connection: str) -> int:
        """Delete ceremony rows that expired more than CEREMONY_KEPT ago, used or not; returns how many.

        A ceremony is good for minutes, but each options request leaves a row; without this the table
        would grow with every enrollment ever started.
        """
        cutoff = self._clock.now() - CEREMONY_KEPT
        stale = []
        async for found in self._entities.query(Table.CEREMONIES, connection):
            try:
                expires = dt.datetime.fromisoformat(str(found.data.get("expiresAt")).replace("Z", "+00:00"))
            except ValueError:
                log.warning("ceremony %s/%s has no readable expiry; deleted", connection, found.row_key)
                stale.append(found)
                continue
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.UTC)
            if expires < cutoff:
                stale.append(found)
        for found in stale:
            # The ETag keeps a ceremony that is being consumed right now (it cannot be, once expired).
            try:
                await self._entities.delete(Table.CEREMONIES, connection, found.row_key, etag=found.etag)
            except Conflict:
                continue
        return len(stale)

    async def reconcile(self, conn: Connection, entra: PasskeyDirectory, *, correlation_id: str) -> ReconcileReport:
        """Bring the registry and Entra's fido2Methods together for the users that have registered passkeys
        (and drop long-expired ceremonies on the way), on the reconcile engine: each fix audited on its own."""
        report = ReconcileReport(ceremonies_purged=await self.purge_ceremonies(conn.name))
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        fixes = _PasskeyFixes(self, conn, entra, report, cause=f"reconcile:{correlation_id}")
        await reconcile(fixes, audit)
        if not report.passkeys:
            return report
        await audit.record("passkeys.reconciled", conn.name, "partial" if report.unreadable_users else "completed",
                           **report.as_dict())
        return report

    async def _read_registry(self, conn: Connection, entra: PasskeyDirectory,
                             report: ReconcileReport) -> _Registry | None:
        """The registry's passkeys, each of their users' fido2Methods, the devices' states and the retired users;
        None when no passkey is registered. A user whose methods cannot be read is left out (and reported), so
        the plan leaves their passkeys alone."""
        rows = [(e, PasskeyRow.model_validate(e.data)) async for e in self._entities.query(Table.PASSKEYS, conn.name)]
        report.passkeys = len(rows)
        if not rows:
            return None
        users = sorted({row.user_id for _, row in rows})
        report.users = len(users)
        in_entra: dict[str, set[str]] = {}
        semaphore = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(user_id: str) -> None:
            async with semaphore:
                try:
                    in_entra[user_id] = {str(m.get("id")) for m in await entra.methods(user_id)}
                except NotFound:
                    in_entra[user_id] = set()  # the user is gone from Entra, and so are the methods
                except BridgeError as err:
                    report.unreadable_users.append(user_id)
                    log.warning("passkeys of %s not reconciled: %s", user_id, err.detail)

        await asyncio.gather(*(read(u) for u in users))
        devices = {e.row_key: DeviceState(str(e.data.get("state", "active")))
                   async for e in self._entities.query(Table.DEVICES, conn.name)}
        retired = [u.id async for u in self._directory.all(conn.name) if u.state is UserState.REMOVED]
        return _Registry([row for _, row in rows], {row.row_key: entity for entity, row in rows}, in_entra, devices,
                         retired)

    async def _fix(self, conn: Connection, entra: PasskeyDirectory, item: Reconciliation, entity: Entity,
                   report: ReconcileReport) -> Done:
        """Carry out one planned fix."""
        passkey = item.passkey
        if item.fix is Fix.REVOKE:
            revocation = await entra.revoke(passkey.user_id, passkey.method_id)
            await self._devices.announce_passkey(EventType.PASSKEY_REVOKED, conn.name, passkey.user_id,
                                                 passkey.device_id, passkey.method_id)
            await self._entities.delete(Table.PASSKEYS, conn.name, passkey.row_key)
            report.revoked += 1
            return Done(revocation.outcome, graph_request_id=revocation.request_id)
        if item.fix is Fix.MARK_DELETED:
            # Entra already lost it: recorded first, so a stop before the mark is recorded again next time.
            await self._devices.announce_passkey(EventType.PASSKEY_DELETED_IN_ENTRA, conn.name, passkey.user_id,
                                                 passkey.device_id, passkey.method_id)
            marked = passkey.model_copy(update={"state": PasskeyState.DELETED_IN_ENTRA})
            await self._entities.update(Table.PASSKEYS, Entity(conn.name, passkey.row_key, marked.to_row(),
                                                               entity.etag))
            report.marked_deleted += 1
            return Done("marked")
        flagged = passkey.model_copy(update={"duplicate": True})
        await self._entities.update(Table.PASSKEYS, Entity(conn.name, passkey.row_key, flagged.to_row(), entity.etag))
        report.duplicates += 1
        return Done("flagged")


@dataclass(frozen=True)
class _Registry:
    """What passkey reconciliation reads: the registry's rows (and their stored entities), each readable user's
    method ids in Entra, the devices' states and the users removed from the bridge."""

    passkeys: list[PasskeyRow]
    entities: dict[str, Entity]
    in_entra: dict[str, set[str]]
    devices: dict[str, DeviceState]
    retired: list[str]


class _PasskeyFixes(Capability[_Registry, Reconciliation]):
    """Passkey reconciliation on the reconcile engine: one read, the pure plan of shared.domain.devices, one
    audit record per fix, then the enrollment state of each user whose passkeys changed."""

    audit_prefix = "passkey."

    def __init__(self, service: PasskeyService, conn: Connection, entra: PasskeyDirectory, report: ReconcileReport,
                 *, cause: str) -> None:
        self._service = service
        self._conn = conn
        self._entra = entra
        self._report = report
        self._cause = cause
        self._entities: dict[str, Entity] = {}

    async def read(self) -> AsyncIterator[_Registry]:
        registry = await self._service._read_registry(self._conn, self._entra, self._report)
        if registry is not None:
            self._entities = registry.entities
            yield registry

    def plan(self, batch: _Registry) -> Sequence[Reconciliation]:
        return plan_reconciliation(batch.passkeys, batch.in_entra, batch.devices, batch.retired)

    async def apply(self, action: Reconciliation) -> Done:
        return await self._service._fix(self._conn, self._entra, action, self._entities[action.passkey.row_key],
                                        self._report)

    def describe(self, action: Reconciliation) -> JsonObject:
        return {"device": action.passkey.device_id, "method": action.passkey.method_id, "reason": action.reason}

    async def end(self, batch: _Registry, actions: Sequence[Reconciliation]) -> None:
        for user_id in sorted({a.passkey.user_id for a in actions}):
            await self._service._devices.update_enrollment(self._conn.name, user_id, cause=self._cause)
