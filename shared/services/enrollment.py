"""A device's enrollment under the connection's passkey policy (docs/passkeys.md, "Enrollment policy").

- `optional`: a provider may finish a device's enrollment without a passkey. When the passkey itself is
  refused (the bridge's checks before Graph, or Graph's refusal of the key), the answer is the
  `passkey-skipped` problem, which a provider may skip, and the device is recorded as "passkey skipped".
  Anything else (an unknown or used ceremony, an inactive device, a transient failure) is answered as
  before and changes nothing.
- `required`: every failure is answered as before; the device stays "pending passkey" until a passkey is
  registered in Entra, is listed in the connection's status, and, with
  `features.passkeys.withholdPasswordsUntilPasskey`, gets no password (shared/services/delivery.py).
"""

from __future__ import annotations

import logging

from shared.config import Connection, PasskeyPolicy
from shared.errors import BridgeError, Conflict, InvalidInput, PasskeySkipped, Transient
from shared.services.devices import DeviceService
from shared.services.passkeys import PasskeyRegistration, PasskeyService
from shared.services.ports import CreationOptions, Fido2Method, JsonObject, PasskeyDirectory, Revocation

log = logging.getLogger(__name__)

ACTOR = "passkeys"


class _Watched:
    """A PasskeyDirectory that remembers the error Graph answered to the registration itself."""

    def __init__(self, entra: PasskeyDirectory) -> None:
        self._entra = entra
        self.refused: BridgeError | None = None

    async def creation_options(self, user_id: str, timeout_minutes: int = 5) -> CreationOptions:
        return await self._entra.creation_options(user_id, timeout_minutes)

    async def register(self, user_id: str, display_name: str, credential: JsonObject) -> Fido2Method:
        try:
            return await self._entra.register(user_id, display_name, credential)
        except BridgeError as err:
            self.refused = err
            raise

    async def methods(self, user_id: str) -> list[Fido2Method]:
        return await self._entra.methods(user_id)

    async def revoke(self, user_id: str, method_id: str) -> Revocation:
        return await self._entra.revoke(user_id, method_id)

    async def policy(self) -> JsonObject:
        return await self._entra.policy()


def refused_passkey(err: BridgeError, graph_refusal: BridgeError | None) -> bool:
    """Whether a registration failed because the passkey was refused (what `optional` lets a provider skip).

    The bridge's own refusal names the credential (`field` "credential (...)"); Graph's refusal of the key
    is a 400 or 409 to the registration request, as raised or translated by the passkey service. Transient
    failures, and failures about the request (ceremony, device, user), are not refusals of the passkey.
    """
    if isinstance(err, Transient):
        return False
    if isinstance(err, InvalidInput) and (err.field or "").startswith("credential"):
        return True
    if graph_refusal is None or isinstance(graph_refusal, Transient):
        return False
    if err is not graph_refusal and err.__cause__ is not graph_refusal:
        return False
    return isinstance(graph_refusal, InvalidInput | Conflict)


class DeviceEnrollment:
    """Passkey registration with the policy's outcome for the device."""

    def __init__(self, *, passkeys: PasskeyService, devices: DeviceService) -> None:
        self._passkeys = passkeys
        self._devices = devices

    async def register(self, conn: Connection, entra: PasskeyDirectory, device_id: str, body: PasskeyRegistration, *,
                       correlation_id: str) -> JsonObject:
        """Register the device's passkey; under `optional`, a refused passkey finishes the enrollment without
        it (PasskeySkipped)."""
        watched = _Watched(entra)
        try:
            created = await self._passkeys.register(conn, watched, device_id, body, correlation_id=correlation_id)
        except BridgeError as err:
            if conn.features.passkeys.policy is not PasskeyPolicy.OPTIONAL or not refused_passkey(err, watched.refused):
                raise
            if await self._devices.has_passkey(conn.name, device_id):
                # Another passkey of the device is registered: its enrollment is finished already.
                raise PasskeySkipped(f"{err.detail}; the passkey policy is optional and device {device_id!r} already "
                                     "has a passkey registered in Entra", cause=err, device_id=device_id,
                                     passkey="registered") from err
            await self._devices.skip_passkey(conn, device_id, reason=f"{err.type_uri}: {err.detail}", actor=ACTOR,
                                             correlation_id=correlation_id)
            log.info("device %s of %s enrolled without a passkey: %s", device_id, conn.name, err.detail)
            raise PasskeySkipped(f"{err.detail}; the passkey policy is optional, so device {device_id!r} is enrolled "
                                 "without a passkey ('passkey skipped'): the provider may carry on, or register a "
                                 "passkey later", cause=err, device_id=device_id) from err
        return {**created, "passkey": "registered"}
