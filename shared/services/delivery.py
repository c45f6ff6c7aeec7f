"""Hand a user's rotated password to one of the user's devices.

The device proves itself with a short-lived ES256 JWT signed by the key it registered (checked in
`shared.domain.device_auth`); each token id is accepted once, remembered (SpentTokens) until the token
could no longer pass the time checks. Only an active device of an active user in the rotation group
receives anything, and every delivery is audited without the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.config import Connection, PasskeyPolicy
from shared.domain import device_auth
from shared.errors import Forbidden, PasskeyPending, Unauthenticated
from shared.services.audit_context import AuditContext
from shared.services.ports import AuditSink, Clock, SpentTokens
from shared.services.rotation import DeliveredPassword, RotationService, SubjectSource

ACTOR_PREFIX = "device:"


@dataclass(frozen=True)
class RegisteredDevice:
    """What delivery needs of a device in the registry."""

    device_id: str
    user_id: str
    active: bool
    public_jwk: Mapping[str, Any]


class DeviceKeys(Protocol):
    """The device registry as delivery reads it."""

    async def registered_device(self, connection: str, device_id: str) -> RegisteredDevice | None:
        """The device and its public key, or None when the registry does not know it."""
        ...

    async def has_passkey(self, connection: str, device_id: str) -> bool:
        """Whether the device's passkey is registered in Entra."""
        ...


class PasswordDelivery:
    """Authenticates a device and returns the password its user's Entra account now has."""

    def __init__(self, *, devices: DeviceKeys, subjects: SubjectSource, rotation: RotationService,
                 spent: SpentTokens, audit: AuditSink, clock: Clock) -> None:
        self._devices = devices
        self._subjects = subjects
        self._rotation = rotation
        self._spent = spent
        self._audit = audit
        self._clock = clock

    async def deliver(self, conn: Connection, device_id: str, *, authorization: str | None, url: str,
                      correlation_id: str) -> DeliveredPassword:
        """Verify the device's token for `url` and return the current and possibly-current passwords."""
        device, claims = await self._authenticate(conn, device_id, authorization, url, correlation_id)
        await self._spend(conn.name, claims)
        refusal = await self._refusal(conn, device)
        audit = AuditContext(self._audit, connection=conn.name, actor=f"{ACTOR_PREFIX}{device_id}",
                             correlation_id=correlation_id)
        if refusal:
            await audit.record("password.delivery", device.user_id, "forbidden", reason=refusal, device=device_id)
            raise Forbidden(refusal)
        await self._withheld(conn, device, correlation_id)
        delivered = await self._rotation.read_for_device(conn, device.user_id)
        await audit.record("password.delivered", device.user_id, "delivered", vault_version=delivered.version,
                           device=device_id, possiblyCurrent=[v for v, _ in delivered.possibly_current])
        return delivered

    async def _authenticate(self, conn: Connection, device_id: str, authorization: str | None, url: str,
                            correlation_id: str) -> tuple[RegisteredDevice, device_auth.DeviceToken]:
        device = await self._devices.registered_device(conn.name, device_id)
        audit = AuditContext(self._audit, connection=conn.name, actor=f"{ACTOR_PREFIX}{device_id}",
                             correlation_id=correlation_id)
        try:
            token = device_auth.bearer(authorization)
            if device is None:
                # Same answer as a bad signature: an unknown id tells a caller nothing.
                raise device_auth.DeviceAuthError("token signature does not match the device's registered key")
            return device, device_auth.verify(token, jwk=dict(device.public_jwk), device_id=device_id,
                                              audience=url, now=self._clock.now())
        except device_auth.DeviceAuthError as err:
            await audit.record("password.delivery", device_id, "unauthenticated", reason=str(err))
            raise Unauthenticated(str(err)) from None

    async def _spend(self, connection: str, claims: device_auth.DeviceToken) -> None:
        # Remember the token id for as long as the token could still pass the time checks.
        keep_until = claims.expires_at + device_auth.MAX_SKEW
        if not await self._spent.spend(connection, claims.device_id, claims.jti, keep_until):
            raise Unauthenticated("token has already been used: sign a new one with a fresh jti") from None

    async def _withheld(self, conn: Connection, device: RegisteredDevice, correlation_id: str) -> None:
        """Policy `required` with withholdPasswordsUntilPasskey: nothing for a device pending its passkey."""
        feature = conn.features.passkeys
        withholding = feature.enabled and feature.policy is PasskeyPolicy.REQUIRED and \
            feature.withhold_passwords_until_passkey
        if not withholding or await self._devices.has_passkey(conn.name, device.device_id):
            return
        audit = AuditContext(self._audit, connection=conn.name, actor=f"{ACTOR_PREFIX}{device.device_id}",
                             correlation_id=correlation_id)
        await audit.record("password.delivery", device.user_id, "withheld", reason="passkey pending",
                           device=device.device_id)
        raise PasskeyPending(f"device {device.device_id!r} has no passkey registered in Entra yet, and passkeys are "
                             "required with passwords withheld until then (features.passkeys.policy 'required', "
                             "features.passkeys.withholdPasswordsUntilPasskey): register its passkey first",
                             setting="features.passkeys.withholdPasswordsUntilPasskey", device_id=device.device_id)

    async def _refusal(self, conn: Connection, device: RegisteredDevice) -> str | None:
        if not conn.features.rotation.enabled:
            return f"rotation is not enabled for connection {conn.name!r} (features.rotation.enabled)"
        if not device.active:
            return "the device is not active in the registry"
        subject = await self._subjects.get(conn.name, device.user_id)
        if subject is None or not subject.active:
            return "the device's user is not active in the bridge directory"
        if not subject.in_rotation_group:
            return "the device's user is not in the rotation group"
        return None

    async def forget_spent_tokens(self, connection: str, *, now: dt.datetime | None = None) -> int:
        """Delete remembered token ids that can no longer be replayed; returns how many."""
        return await self._spent.forget(connection, now or self._clock.now())

