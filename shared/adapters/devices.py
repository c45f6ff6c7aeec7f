"""The device registry in Table storage: devices, their passkeys, removal operations and spent device tokens.

Implements DeviceRepository, PasskeyRepository, DeviceOperations and SpentTokens of
shared.services.ports. Every table is partitioned by connection:

- `devices`: row = device id, the DeviceRow in its stored (camelCase) form.
- `passkeys`: row = `{deviceId}:{methodId}`, so a device's passkeys are one row-key range.
- `operations`: row = operation id; a problem member is kept as JSON text.
- `usedtokens`: row = `{deviceId}:{jti}`, with the time until which the token id is kept.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import ValidationError

from shared.domain.devices import DeviceRow, PasskeyRow
from shared.errors import Conflict
from shared.services.ports import Entity, EntityStore, JsonObject, Versioned
from shared.topology import Table

log = logging.getLogger(__name__)

_EPOCH = "1970-01-01T00:00:00+00:00"


def _device(entity: Entity) -> DeviceRow:
    return DeviceRow.model_validate({**entity.data, "id": entity.row_key})


class TableDevices:
    """Devices on the `devices` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, device_id: str) -> Versioned[DeviceRow] | None:
        """One device, or None."""
        found = await self._entities.get(Table.DEVICES, connection, device_id)
        return None if found is None else Versioned(_device(found), found.etag)

    async def add(self, connection: str, device: DeviceRow) -> None:
        """Register a new device; Conflict when the id is taken."""
        await self._entities.insert(Table.DEVICES, Entity(connection, device.id, device.to_row()))

    async def replace(self, connection: str, device: Versioned[DeviceRow]) -> None:
        """Write a device back; Conflict when it changed since it was read."""
        row = device.value
        entity = Entity(connection, row.id, row.to_row(), device.version)
        if device.version is None:
            await self._entities.insert(Table.DEVICES, entity)
        else:
            await self._entities.update(Table.DEVICES, entity)

    async def put(self, connection: str, device: DeviceRow) -> None:
        """Write a device whatever its stored state."""
        await self._entities.upsert(Table.DEVICES, Entity(connection, device.id, device.to_row()))

    async def all(self, connection: str) -> AsyncIterator[DeviceRow]:
        """Every device of the connection (a malformed row is logged and skipped)."""
        async for found in self._entities.query(Table.DEVICES, connection):
            try:
                yield _device(found)
            except ValidationError:
                log.warning("device row %s/%s is malformed; skipped", connection, found.row_key)


def _passkey_key(device_id: str, method_id: str) -> str:
    return f"{device_id}:{method_id}"


def _passkey(entity: Entity) -> PasskeyRow:
    device_id, _, method_id = entity.row_key.partition(":")
    # Rows of earlier versions may lack the ids the key holds.
    return PasskeyRow.model_validate({"deviceId": device_id, "methodId": method_id, **entity.data})


class TablePasskeys:
    """Registered passkeys on the `passkeys` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, device_id: str, method_id: str) -> Versioned[PasskeyRow] | None:
        """One passkey, or None; InvalidInput when the ids cannot form a row key."""
        found = await self._entities.get(Table.PASSKEYS, connection, _passkey_key(device_id, method_id))
        return None if found is None else Versioned(_passkey(found), found.etag)

    async def of_device(self, connection: str, device_id: str) -> list[PasskeyRow]:
        """The passkeys of one device (`;` is the character after `:`, so the range is the device's rows)."""
        return [_passkey(found) async for found in self._entities.query(
            Table.PASSKEYS, connection, row_key_from=f"{device_id}:", row_key_to=f"{device_id};")]

    async def all(self, connection: str) -> AsyncIterator[Versioned[PasskeyRow]]:
        """Every passkey of the connection."""
        async for found in self._entities.query(Table.PASSKEYS, connection):
            yield Versioned(_passkey(found), found.etag)

    async def put(self, connection: str, passkey: PasskeyRow) -> None:
        """Record a passkey (replacing the record of the same device and method)."""
        await self._entities.upsert(Table.PASSKEYS, Entity(connection, passkey.row_key, passkey.to_row()))

    async def replace(self, connection: str, passkey: Versioned[PasskeyRow]) -> None:
        """Write a passkey back; Conflict when it changed since it was read."""
        row = passkey.value
        await self._entities.update(Table.PASSKEYS, Entity(connection, row.row_key, row.to_row(), passkey.version))

    async def delete(self, connection: str, device_id: str, method_id: str) -> None:
        """Forget a passkey; absent counts as forgotten."""
        await self._entities.delete(Table.PASSKEYS, connection, _passkey_key(device_id, method_id))


def _progress(data: Mapping[str, Any]) -> JsonObject:
    progress = dict(data)
    if isinstance(progress.get("problem"), str):
        progress["problem"] = json.loads(progress["problem"])
    return progress


def _stored_progress(progress: Mapping[str, Any]) -> JsonObject:
    # A problem is a JSON object, and a Table property holds text: it is kept as JSON text.
    data = dict(progress)
    if isinstance(data.get("problem"), dict):
        data["problem"] = json.dumps(data["problem"], default=str)
    return data


class TableDeviceOperations:
    """Device operations on the `operations` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def start(self, connection: str, operation: str, progress: JsonObject) -> None:
        """Record a new operation; Conflict when the id is taken."""
        await self._entities.insert(Table.OPERATIONS, Entity(connection, operation, _stored_progress(progress)))

    async def get(self, connection: str, operation: str) -> JsonObject | None:
        """An operation's progress, or None."""
        found = await self._entities.get(Table.OPERATIONS, connection, operation)
        return None if found is None else _progress(found.data)

    async def update(self, connection: str, operation: str, changes: Mapping[str, Any]) -> JsonObject:
        """Merge `changes` into an operation's progress (created when absent); returns the whole progress."""
        found = await self._entities.get(Table.OPERATIONS, connection, operation)
        data = {**(found.data if found else {}), **_stored_progress(changes)}
        await self._entities.upsert(Table.OPERATIONS, Entity(connection, operation, data))
        return _progress(data)


class TableSpentTokens:
    """Spent device token ids on the `usedtokens` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def spend(self, connection: str, device_id: str, token_id: str, keep_until: dt.datetime) -> bool:
        """Remember a token id until `keep_until`; False when it was already spent."""
        entity = Entity(connection, f"{device_id}:{token_id}",
                        {"deviceId": device_id, "keepUntil": keep_until.isoformat()})
        try:
            await self._entities.insert(Table.USEDTOKENS, entity)
        except Conflict:
            return False
        return True

    async def forget(self, connection: str, before: dt.datetime) -> int:
        """Forget token ids kept until before the time; returns how many."""
        removed = 0
        async for found in self._entities.query(Table.USEDTOKENS, connection):
            keep_until = dt.datetime.fromisoformat(str(found.data.get("keepUntil", _EPOCH)))
            if keep_until < before:
                await self._entities.delete(Table.USEDTOKENS, connection, found.row_key, etag=found.etag)
                removed += 1
        return removed
