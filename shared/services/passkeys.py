"""Passkey enrollment for a registered device through Graph's FIDO2 provisioning API.

1. `options`: the connection's passkey policy is checked, Graph's creation options are fetched for the
   device's user, a ceremony (challenge, expiry, user, device) is stored, and the options are returned
   in WebAuthn JSON form (base64url) with the ceremony id.
2. `register`: the ceremony must exist, belong to the device, be unexpired and unused; the credential
   is verified locally (shared.domain.attestation) before Graph is called; the ceremony is consumed
   with an ETag check so two requests cannot both use it; then Graph registers the passkey, and the
   registry, the enrollment state and the audit log follow.

Graph: https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions and
https://learn.microsoft.com/graph/api/authentication-post-fido2methods.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Connection, PasskeyPolicy
from shared.domain import attestation
from shared.domain.devices import DeviceState
from shared.domain.directory import Enrollment
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.services.devices import DeviceService
from shared.services.directory import Directory
from shared.services.ports import AuditSink, Clock, Entity, EntityStore, GraphApi, JsonObject
from shared.topology import Table

ACTOR = "passkeys"
POLICY_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
POLICY_CACHE = dt.timedelta(minutes=5)


class PasskeyRegistration(BaseModel):
    """Body of POST .../devices/{deviceId}/passkeys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ceremony_id: Annotated[str, Field(alias="ceremonyId", min_length=1, max_length=64)]
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


class PasskeyService:
    """Creation options and registration of device-bound passkeys."""

    def __init__(self, *, devices: DeviceService, directory: Directory, entities: EntityStore, audit: AuditSink,
                 clock: Clock) -> None:
        self._devices = devices
        self._directory = directory
        self._entities = entities
        self._audit = audit
        self._clock = clock
        self._policy: dict[str, tuple[dt.datetime, JsonObject]] = {}

    async def _device_user(self, conn: Connection, device_id: str) -> tuple[Any, Any]:
        feature = conn.features.passkeys
        if not feature.enabled or feature.policy is PasskeyPolicy.DISABLED:
            raise Forbidden(f"passkeys are disabled for connection {conn.name!r} (features.passkeys)")
        device = await self._devices.get(conn.name, device_id)
        if device.state is not DeviceState.ACTIVE:
            raise Conflict(f"device {device_id!r} is {device.state.value}")
        user = await self._directory.get(conn.name, device.user_id)
        if user is None or not user.active:
            raise Conflict(f"the user of device {device_id!r} is not active in the bridge directory")
        return device, user

    async def options(self, conn: Connection, graph: GraphApi, device_id: str, *, correlation_id: str) -> JsonObject:
        """Creation options for the device's user, with a stored ceremony."""
        _, user = await self._device_user(conn, device_id)
        timeout = conn.features.passkeys.challenge_timeout_minutes
        if timeout == 5:
            body = await graph.get(f"/users/{user.id}/authentication/fido2Methods/creationOptions")
        else:
            # Only beta takes challengeTimeoutInMinutes (5 to 43,200).
            body = await graph.get(f"/users/{user.id}/authentication/fido2Methods/"
                                   f"creationOptions(challengeTimeoutInMinutes={timeout})", api="beta")
        public_key = dict(body.get("publicKey") or {})
        if "challenge" not in public_key:
            raise InvalidInput("Graph returned creation options without a challenge")
        public_key["challenge"] = repair_base64url(str(public_key["challenge"]))
        public_key["excludeCredentials"] = [{**c, "id": repair_base64url(str(c.get("id", "")))}
                                            for c in public_key.get("excludeCredentials") or []]
        expires = body.get("challengeTimeoutDateTime") or (self._clock.now() + dt.timedelta(minutes=timeout)
                                                            ).isoformat()
        ceremony = f"cer-{uuid.uuid4().hex}"
        await self._entities.insert(Table.CEREMONIES, Entity(conn.name, ceremony, {
            "challenge": public_key["challenge"], "expiresAt": str(expires), "userId": user.id,
            "deviceId": device_id, "used": False}))
        await self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.options", target=user.id,
                                 outcome="issued", correlation_id=correlation_id,
                                 detail={"device": device_id, "ceremony": ceremony})
        return {"ceremonyId": ceremony, "expiresAt": str(expires), "publicKey": public_key}

    async def _restrictions(self, conn: Connection, graph: GraphApi) -> tuple[attestation.KeyRestrictions, bool]:
        now = self._clock.now()
        cached = self._policy.get(conn.name)
        if cached is None or now - cached[0] > POLICY_CACHE:
            cached = (now, await graph.get(POLICY_PATH))
            self._policy[conn.name] = cached
        policy = cached[1]
        return attestation.KeyRestrictions.from_policy(policy), bool(policy.get("isAttestationEnforced"))

    async def register(self, conn: Connection, graph: GraphApi, device_id: str, body: PasskeyRegistration, *,
                       correlation_id: str) -> JsonObject:
        """Verify the credential locally, register it in Entra, record it."""
        _, user = await self._device_user(conn, device_id)
        found = await self._entities.get(Table.CEREMONIES, conn.name, body.ceremony_id)
        if found is None or found.data.get("deviceId") != device_id:
            raise NotFound(f"ceremony {body.ceremony_id!r} was not issued for device {device_id!r}")
        if found.data.get("used"):
            raise Conflict(f"ceremony {body.ceremony_id!r} has already been used; ask for new options")
        expires = dt.datetime.fromisoformat(str(found.data["expiresAt"]).replace("Z", "+00:00"))
        if expires <= self._clock.now():
            raise Conflict(f"ceremony {body.ceremony_id!r} expired at {expires.isoformat()}; ask for new options")
        restrictions, enforced = await self._restrictions(conn, graph)
        known = [str(p.data.get("credentialId")) async for p in self._entities.query(Table.PASSKEYS, conn.name)]
        challenge = base64.urlsafe_b64decode(str(found.data["challenge"]) + "=" * (-len(str(found.data["challenge"]))
                                                                                  % 4))
        try:
            verified = attestation.verify(body.credential, challenge=challenge,
                                          allowed_aaguids=conn.features.passkeys.allowed_aaguids,
                                          restrictions=restrictions, known_credential_ids=known,
                                          attestation_enforced=enforced)
        except attestation.AttestationRejected as err:
            await self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.rejected", target=user.id,
                                     outcome="rejected", correlation_id=correlation_id,
                                     detail={"device": device_id, "check": err.check, "reason": err.detail})
            raise InvalidInput(f"passkey rejected: {err.check}: {err.detail}", field=f"credential ({err.check})") \
                from None
        # Consume the ceremony before Graph so a second request with it cannot pass.
        await self._entities.update(Table.CEREMONIES, Entity(conn.name, body.ceremony_id,
                                                             {**found.data, "used": True}, found.etag))
        response = body.credential.get("response", {})
        created = await graph.send("POST", f"/users/{user.id}/authentication/fido2Methods", body={
            "displayName": body.display_name,
            "publicKeyCredential": {"id": body.credential.get("id"), "response": {
                "clientDataJSON": response.get("clientDataJSON"),
                "attestationObject": response.get("attestationObject")},
                "clientExtensionResults": body.credential.get("clientExtensionResults") or {}}})
        method = created.body or {}
        method_id = str(method.get("id") or "")
        if not method_id:
            raise InvalidInput("Graph registered the passkey but returned no method id")
        await self._entities.upsert(Table.PASSKEYS, Entity(conn.name, f"{device_id}:{method_id}", {
            "methodId": method_id, "userId": user.id, "deviceId": device_id, "credentialId": verified.credential_id,
            "aaguid": verified.aaguid, "displayName": body.display_name,
            "registeredAt": self._clock.now().isoformat()}))
        if user.enrollment is not Enrollment.PAIRED_WITH_ENTRA:
            await self._directory.put(conn.name, user.model_copy(update={"enrollment": Enrollment.PAIRED_WITH_ENTRA}))
        await self._audit.record(connection=conn.name, actor=ACTOR, action="passkey.registered", target=user.id,
                                 outcome="registered", correlation_id=correlation_id,
                                 graph_request_id=created.request_id,
                                 detail={"device": device_id, "method": method_id, "aaguid": verified.aaguid})
        return {"id": method_id, "deviceId": device_id, "aaguid": verified.aaguid, "displayName": body.display_name,
                "credentialId": verified.credential_id}
