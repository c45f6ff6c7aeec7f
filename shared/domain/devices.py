"""Devices of the registry, their public keys and passkeys, and passkey reconciliation. Pure.

A device belongs to one imported user and proves itself with a P-256 key (a JWK with kty EC,
crv P-256, x and y of 32 bytes each, base64url without padding, and no private part). Rows live in
the `devices` table: partition = connection, row = device id.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import PasskeyPolicy

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class DeviceState(StrEnum):
    """A device's lifecycle."""

    ACTIVE = "active"
    REMOVING = "removing"  # removal accepted; its passkeys are being revoked
    REMOVED = "removed"


class PublicJwk(BaseModel):
    """A P-256 public key as a JWK (RFC 7517/7518)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kty: str
    crv: str
    x: str
    y: str

    @field_validator("kty")
    @classmethod
    def _ec(cls, value: str) -> str:
        if value != "EC":
            raise ValueError("kty must be 'EC'")
        return value

    @field_validator("crv")
    @classmethod
    def _p256(cls, value: str) -> str:
        if value != "P-256":
            raise ValueError("crv must be 'P-256'")
        return value

    @field_validator("x", "y")
    @classmethod
    def _coordinate(cls, value: str) -> str:
        if not _B64URL.match(value):
            raise ValueError("must be base64url without padding")
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64url") from None
        if len(raw) != 32:
            raise ValueError("must encode 32 bytes for P-256")
        return value

    @model_validator(mode="before")
    @classmethod
    def _public_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and "d" in data:
            raise ValueError("the JWK contains a private key ('d'); send the public key only")
        return data

    def as_dict(self) -> dict[str, str]:
        """The members needed to verify a signature."""
        return {"kty": self.kty, "crv": self.crv, "x": self.x, "y": self.y}


class DeviceRow(BaseModel):
    """One device of the registry."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Annotated[str, Field(pattern=DEVICE_ID)]
    user_id: Annotated[str, Field(alias="userId", min_length=1)]
    display_name: Annotated[str, Field(alias="displayName", min_length=1, max_length=256)]
    public_key: Annotated[PublicJwk, Field(alias="publicKey")]
    state: DeviceState = DeviceState.ACTIVE
    registered_at: Annotated[dt.datetime, Field(alias="registeredAt")]
    updated_at: Annotated[dt.datetime, Field(alias="updatedAt")]
    removal_operation: Annotated[str | None, Field(alias="removalOperation")] = None
    #: When a passkey registration failed under policy `optional` and the enrollment finished without one.
    passkey_skipped_at: Annotated[dt.datetime | None, Field(alias="passkeySkippedAt")] = None
    passkey_skip_reason: Annotated[str | None, Field(alias="passkeySkipReason", max_length=500)] = None

    def to_row(self) -> dict[str, Any]:
        """The stored form."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DevicePasskey(StrEnum):
    """Where a device's enrollment stands with its passkey (docs/passkeys.md, "Enrollment policy")."""

    PENDING = "pending"  # "pending passkey": none registered in Entra yet
    REGISTERED = "registered"  # a passkey of the device is registered in Entra
    SKIPPED = "skipped"  # "passkey skipped": policy optional, registration failed, enrolled without one


def passkey_status(device: DeviceRow, has_passkey: bool, policy: PasskeyPolicy) -> DevicePasskey:
    """A device's passkey enrollment under the connection's policy.

    A registered passkey wins; a skip counts only under `optional` (under `required` the device stays
    pending until its passkey is registered, whatever happened before the policy changed).
    """
    if has_passkey:
        return DevicePasskey.REGISTERED
    if device.passkey_skipped_at is not None and policy is PasskeyPolicy.OPTIONAL:
        return DevicePasskey.SKIPPED
    return DevicePasskey.PENDING


class PasskeyState(StrEnum):
    """A registered passkey as the registry last saw it in Entra."""

    ACTIVE = "active"
    DELETED_IN_ENTRA = "deleted_in_entra"  # someone removed it in Entra; kept as a record, never re-created


class PasskeyRow(BaseModel):
    """A passkey the bridge registered for a device: `passkeys` table, row `{deviceId}:{methodId}`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    method_id: Annotated[str, Field(alias="methodId", min_length=1)]
    user_id: Annotated[str, Field(alias="userId", min_length=1)]
    device_id: Annotated[str, Field(alias="deviceId", pattern=DEVICE_ID)]
    credential_id: Annotated[str, Field(alias="credentialId")] = ""
    aaguid: str = ""
    display_name: Annotated[str, Field(alias="displayName")] = ""
    registered_at: Annotated[dt.datetime | None, Field(alias="registeredAt")] = None
    state: PasskeyState = PasskeyState.ACTIVE
    duplicate: bool = False

    @property
    def row_key(self) -> str:
        """Row key in the `passkeys` table."""
        return f"{self.device_id}:{self.method_id}"

    def to_row(self) -> dict[str, Any]:
        """The stored form."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Fix(StrEnum):
    """What reconciliation does about one registered passkey."""

    REVOKE = "revoke"  # still in Entra although its device (or its user) is gone from the bridge
    MARK_DELETED = "mark-deleted"  # gone from Entra although the registry holds it
    FLAG_DUPLICATE = "flag-duplicate"  # another live passkey of the same device or credential


@dataclass(frozen=True)
class Reconciliation:
    """One planned fix and why."""

    fix: Fix
    passkey: PasskeyRow
    reason: str

    @property
    def kind(self) -> str:
        """What the fix does, as its audit action names it (`passkey.` + kind)."""
        return {Fix.REVOKE: "revoked", Fix.MARK_DELETED: "deleted_in_entra", Fix.FLAG_DUPLICATE: "duplicate"}[self.fix]

    @property
    def target(self) -> str:
        """The passkey's user."""
        return self.passkey.user_id

    @property
    def removals(self) -> int:
        """A revocation removes a passkey from Entra; marking and flagging remove nothing."""
        return 1 if self.fix is Fix.REVOKE else 0


def plan_reconciliation(passkeys: Sequence[PasskeyRow], in_entra: Mapping[str, Collection[str]],
                        device_states: Mapping[str, DeviceState],
                        retired_users: Collection[str] = ()) -> list[Reconciliation]:
    """Compare the registry with Entra's fido2Methods (user id -> method ids) and list the fixes.

    Users missing from `in_entra` were not read completely and are left alone: a partial read never
    marks or revokes anything.
    """
    fixes: list[Reconciliation] = []
    live: dict[str, list[PasskeyRow]] = {}
    by_credential: dict[str, list[PasskeyRow]] = {}
    retired = set(retired_users)
    for passkey in passkeys:
        methods = in_entra.get(passkey.user_id)
        if methods is None:
            continue
        present = passkey.method_id in methods
        device = device_states.get(passkey.device_id, DeviceState.REMOVED)
        if present and (device is DeviceState.REMOVED or passkey.user_id in retired):
            why = (f"device {passkey.device_id} is removed" if device is DeviceState.REMOVED
                   else f"user {passkey.user_id} was removed from the bridge")
            fixes.append(Reconciliation(Fix.REVOKE, passkey, why))
        elif not present and passkey.state is PasskeyState.ACTIVE:
            fixes.append(Reconciliation(Fix.MARK_DELETED, passkey, "the method no longer exists in Entra"))
        elif present and device is DeviceState.ACTIVE:
            live.setdefault(passkey.device_id, []).append(passkey)
            if passkey.credential_id:
                by_credential.setdefault(passkey.credential_id, []).append(passkey)
    flagged: set[str] = set()
    for groups, what in ((live, "device"), (by_credential, "credential")):
        for key, rows in groups.items():
            if len(rows) < 2:
                continue
            for row in rows:
                if not row.duplicate and row.row_key not in flagged:
                    flagged.add(row.row_key)
                    fixes.append(Reconciliation(Fix.FLAG_DUPLICATE, row,
                                                f"{len(rows)} live passkeys share {what} {key}"))
    return fixes
