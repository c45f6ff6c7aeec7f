"""In-memory fakes of the device-side repositories of shared.services.ports: devices, passkeys, device
operations, ceremonies, spent tokens, rotations and job problems.

Each keeps values, not rows, with a version that changes on every write, and answers like the Table
adapters do (the contract suites in tests/contracts run both).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any, Generic, TypeVar

from shared.adapters.ceremonies import TableCeremonies
from shared.adapters.devices import TableDeviceOperations, TableDevices, TablePasskeys
from shared.domain.devices import Ceremony, DeviceRow, PasskeyRow
from shared.domain.rotation import RotationRow, Status
from shared.errors import Conflict, InvalidInput
from shared.services.ports import EntityStore, JobProblem, JsonObject, Versioned

K = TypeVar("K")
V = TypeVar("V")
_versions = itertools.count(1)


class _Store(Generic[K, V]):
    """Values per (connection, key) with versions, and the optimistic writes every fake needs."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, K], Versioned[V]] = {}

    def get(self, connection: str, key: K) -> Versioned[V] | None:
        return self.rows.get((connection, key))

    def insert(self, connection: str, key: K, value: V) -> Versioned[V]:
        if (connection, key) in self.rows:
            raise Conflict(f"{key!r} exists in {connection!r}")
        return self.put(connection, key, value)

    def put(self, connection: str, key: K, value: V) -> Versioned[V]:
        stored = Versioned(value, str(next(_versions)))
        self.rows[(connection, key)] = stored
        return stored

    def update(self, connection: str, key: K, value: V, version: str | None) -> Versioned[V]:
        current = self.rows.get((connection, key))
        if version is None:
            return self.insert(connection, key, value)
        if current is None or current.version != version:
            raise Conflict(f"{key!r} of {connection!r} was changed by another writer")
        return self.put(connection, key, value)

    def delete(self, connection: str, key: K) -> None:
        self.rows.pop((connection, key), None)

    def of(self, connection: str) -> list[tuple[K, Versioned[V]]]:
        return sorted(((k, v) for (c, k), v in self.rows.items() if c == connection), key=lambda kv: str(kv[0]))


class FakeDevices:
    """DeviceRepository in memory."""

    def __init__(self) -> None:
        self.store: _Store[str, DeviceRow] = _Store()

    async def get(self, connection: str, device_id: str) -> Versioned[DeviceRow] | None:
        return self.store.get(connection, device_id)

    async def add(self, connection: str, device: DeviceRow) -> None:
        self.store.insert(connection, device.id, device)

    async def replace(self, connection: str, device: Versioned[DeviceRow]) -> None:
        self.store.update(connection, device.value.id, device.value, device.version)

    async def put(self, connection: str, device: DeviceRow) -> None:
        self.store.put(connection, device.id, device)

    async def all(self, connection: str) -> AsyncIterator[DeviceRow]:
        for _, found in self.store.of(connection):
            yield found.value


class FakePasskeys:
    """PasskeyRepository in memory."""

    def __init__(self) -> None:
        self.store: _Store[tuple[str, str], PasskeyRow] = _Store()

    async def get(self, connection: str, device_id: str, method_id: str) -> Versioned[PasskeyRow] | None:
        if not (device_id and method_id) or any(c in device_id + method_id for c in "/\\#?"):
            raise InvalidInput(f"{device_id!r}, {method_id!r} cannot name a passkey")
        return self.store.get(connection, (device_id, method_id))

    async def of_device(self, connection: str, device_id: str) -> list[PasskeyRow]:
        return [found.value for (device, _), found in self.store.of(connection) if device == device_id]

    async def all(self, connection: str) -> AsyncIterator[Versioned[PasskeyRow]]:
        for _, found in self.store.of(connection):
            yield found

    async def put(self, connection: str, passkey: PasskeyRow) -> None:
        self.store.put(connection, (passkey.device_id, passkey.method_id), passkey)

    async def replace(self, connection: str, passkey: Versioned[PasskeyRow]) -> None:
        row = passkey.value
        if passkey.version is None or self.store.get(connection, (row.device_id, row.method_id)) is None:
            raise Conflict(f"passkey {row.method_id!r} of device {row.device_id!r} is not stored")
        self.store.update(connection, (row.device_id, row.method_id), row, passkey.version)

    async def delete(self, connection: str, device_id: str, method_id: str) -> None:
        self.store.delete(connection, (device_id, method_id))


class FakeDeviceOperations:
    """DeviceOperations in memory."""

    def __init__(self) -> None:
        self.store: _Store[str, JsonObject] = _Store()

    async def start(self, connection: str, operation: str, progress: JsonObject) -> None:
        self.store.insert(connection, operation, dict(progress))

    async def get(self, connection: str, operation: str) -> JsonObject | None:
        found = self.store.get(connection, operation)
        return None if found is None else dict(found.value)

    async def update(self, connection: str, operation: str, changes: Mapping[str, Any]) -> JsonObject:
        found = self.store.get(connection, operation)
        progress = {**(found.value if found else {}), **changes}
        self.store.put(connection, operation, progress)
        return dict(progress)


class FakeCeremonies:
    """CeremonyRepository in memory."""

    def __init__(self) -> None:
        self.store: _Store[str, Ceremony] = _Store()

    async def add(self, connection: str, ceremony: Ceremony) -> None:
        self.store.insert(connection, ceremony.id, ceremony)

    async def get(self, connection: str, ceremony_id: str) -> Versioned[Ceremony] | None:
        return self.store.get(connection, ceremony_id)

    async def consume(self, connection: str, ceremony: Versioned[Ceremony]) -> None:
        if ceremony.version is None or self.store.get(connection, ceremony.value.id) is None:
            raise Conflict(f"ceremony {ceremony.value.id!r} is not stored")
        self.store.update(connection, ceremony.value.id, ceremony.value.model_copy(update={"used": True}),
                          ceremony.version)

    async def purge(self, connection: str, expired_before: dt.datetime) -> int:
        stale = [key for key, found in self.store.of(connection) if found.value.expires_at < expired_before]
        for key in stale:
            self.store.delete(connection, key)
        return len(stale)


class FakeSpentTokens:
    """SpentTokens in memory."""

    def __init__(self) -> None:
        self.store: _Store[tuple[str, str], dt.datetime] = _Store()

    async def spend(self, connection: str, device_id: str, token_id: str, keep_until: dt.datetime) -> bool:
        try:
            self.store.insert(connection, (device_id, token_id), keep_until)
        except Conflict:
            return False
        return True

    async def forget(self, connection: str, before: dt.datetime) -> int:
        gone = [key for key, found in self.store.of(connection) if found.value < before]
        for key in gone:
            self.store.delete(connection, key)
        return len(gone)


class FakeRotations:
    """RotationRepository in memory."""

    def __init__(self) -> None:
        self.store: _Store[str, RotationRow] = _Store()

    async def get(self, connection: str, user_id: str) -> Versioned[RotationRow]:
        return self.store.get(connection, user_id) or Versioned(RotationRow(), None)

    async def rows(self, connection: str) -> dict[str, RotationRow]:
        return {user: found.value for user, found in self.store.of(connection)}

    async def claim(self, connection: str, user_id: str, seen: Versioned[RotationRow], rotation_id: str, *,
                    now: dt.datetime, until: dt.datetime) -> Versioned[RotationRow]:
        if seen.value.leased_to_other(rotation_id, now):
            raise Conflict(f"another rotation of user {user_id} holds the lease")
        claimed = seen.value.model_copy(update={"lease_owner": rotation_id, "lease_until": until,
                                                "last_rotation_id": rotation_id, "status": Status.IN_PROGRESS})
        return self.store.update(connection, user_id, claimed, seen.version)

    async def finish(self, connection: str, user_id: str, claimed: Versioned[RotationRow],
                     changes: Mapping[str, Any]) -> None:
        done = claimed.value.model_copy(update={**changes, "lease_owner": None, "lease_until": None})
        self.store.update(connection, user_id, done, claimed.version)

    async def fail(self, connection: str, user_id: str, rotation_id: str, reason: str, *, now: dt.datetime) -> bool:
        seen = await self.get(connection, user_id)
        if seen.value.leased_to_other(rotation_id, now):
            return False
        failed = seen.value.model_copy(update={"status": Status.FAILED, "reason": reason,
                                               "last_rotation_id": rotation_id, "lease_owner": None,
                                               "lease_until": None})
        self.store.update(connection, user_id, failed, seen.version)
        return True


class FakeJobProblems:
    """JobProblemLog in memory."""

    def __init__(self) -> None:
        self.store: _Store[str, JobProblem] = _Store()

    async def put(self, connection: str, problem: JobProblem) -> None:
        self.store.put(connection, problem.job, problem)

    async def drop(self, connection: str, job: str) -> None:
        self.store.delete(connection, job)

    async def all(self, connection: str) -> list[JobProblem]:
        return [found.value for _, found in self.store.of(connection)]




def device_repositories(entities: EntityStore) -> dict[str, Any]:
    """DeviceService's repositories: the Table adapters over one entity store (in memory or Azurite)."""
    return {"devices": TableDevices(entities), "passkeys": TablePasskeys(entities),
            "operations": TableDeviceOperations(entities)}


def passkey_repositories(entities: EntityStore) -> dict[str, Any]:
    """PasskeyService's repositories: the Table adapters over one entity store."""
    return {"ceremonies": TableCeremonies(entities), "passkeys": TablePasskeys(entities)}
