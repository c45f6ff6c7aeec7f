"""Devices of the registry and their public keys. Pure.

A device belongs to one imported user and proves itself with a P-256 key (a JWK with kty EC,
crv P-256, x and y of 32 bytes each, base64url without padding, and no private part). Rows live in
the `devices` table: partition = connection, row = device id.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    def to_row(self) -> dict[str, Any]:
        """The stored form."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
