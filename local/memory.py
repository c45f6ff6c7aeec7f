"""In-memory stand-ins of the storage, vault, queue and audit ports (shared/services/ports.py).

They keep each port's contract (ETags, Conflict, NotFound, ordering, limits), not a call script, so a
service run on them behaves as on the real adapters; `tests/contracts` runs the same suite on both.
Benchmarks use them for what a bench does not measure; unit tests import them through `tests.fakes`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.errors import Conflict, NotFound
from shared.services.ports import Entity, JsonObject, SecretVersion
from shared.topology import Queue, Table


@dataclass
class FakeClock:
    """A clock that moves only when told."""

    current: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += dt.timedelta(**delta)


class FakeEntityStore:
    """Table storage in memory, with ETags and Conflict like the real service."""

    def __init__(self) -> None:
        self.tables: dict[Table, dict[tuple[str, str], Entity]] = {}
        self._etags = itertools.count(1)

    def _table(self, table: Table) -> dict[tuple[str, str], Entity]:
        return self.tables.setdefault(table, {})

    def _stamp(self, entity: Entity) -> Entity:
        return replace(entity, data=dict(entity.data), etag=f'W/"{next(self._etags)}"')

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        found = self._table(table).get((partition_key, row_key))
        return replace(found, data=dict(found.data)) if found else None

    async def insert(self, table: Table, entity: Entity) -> Entity:
        key = (entity.partition_key, entity.row_key)
        if key in self._table(table):
            raise Conflict(f"{table}/{key} exists")
        stored = self._stamp(entity)
        self._table(table)[key] = stored
        return stored

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        stored = self._stamp(entity)
        self._table(table)[(entity.partition_key, entity.row_key)] = stored
        return stored

    async def update(self, table: Table, entity: Entity) -> Entity:
        key = (entity.partition_key, entity.row_key)
        current = self._table(table).get(key)
        if current is None:
            raise NotFound(f"{table}/{key} does not exist")
        if entity.etag is not None and entity.etag != current.etag:
            raise Conflict(f"{table}/{key} was changed by another writer")
        stored = self._stamp(entity)
        self._table(table)[key] = stored
        return stored

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        current = self._table(table).get((partition_key, row_key))
        if current is None:
            return
        if etag is not None and etag != current.etag:
            raise Conflict(f"{table}/{(partition_key, row_key)} was changed by another writer")
        del self._table(table)[(partition_key, row_key)]

    async def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
                    row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        rows = sorted((e for (pk, _), e in self._table(table).items() if pk == partition_key),
                      key=lambda e: e.row_key)
        count = 0
        for row in rows:
            if row_key_from is not None and row.row_key < row_key_from:
                continue
            if row_key_to is not None and row.row_key >= row_key_to:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield replace(row, data=dict(row.data))

    async def query_partitions(self, table: Table, first: str, last: str, *,
                               limit: int | None = None) -> AsyncIterator[Entity]:
        keys = sorted(k for k in self._table(table) if first <= k[0] < last)
        for key in keys[:limit]:
            yield replace(self._table(table)[key], data=dict(self._table(table)[key].data))


class FakeWorkQueue:
    """Records what was enqueued, per queue."""

    def __init__(self) -> None:
        self.sent: dict[Queue, list[tuple[JsonObject, float]]] = {}

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        self.sent.setdefault(queue, []).append((dict(message), delay_seconds))

    def messages(self, queue: Queue) -> list[JsonObject]:
        return [m for m, _ in self.sent.get(queue, [])]


class FakeSecretStore:
    """Key Vault secrets in memory: versions newest first, tags, enabled flag, soft delete."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.secrets: dict[str, list[SecretVersion]] = {}
        self.deleted: dict[str, list[SecretVersion]] = {}

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        if name in self.deleted:
            raise Conflict(f"secret {name} is deleted but not purged")
        version = SecretVersion(name=name, version=uuid.uuid4().hex, tags=dict(tags), enabled=True,
                                created_on=self.clock.now(), value=value)
        self.secrets.setdefault(name, []).insert(0, version)
        return replace(version, value=None)

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        for candidate in self.secrets.get(name, []):
            if version is None or candidate.version == version:
                if not candidate.enabled:
                    raise Conflict(f"secret {name} version {candidate.version} is disabled")
                return candidate
        raise NotFound(f"secret {name} {version or '(latest)'} not found")

    async def set_tags(self, name: str, version: str, tags: Mapping[str, str], *,
                       enabled: bool | None = None) -> SecretVersion:
        versions = self.secrets.get(name, [])
        for i, candidate in enumerate(versions):
            if candidate.version == version:
                updated = replace(candidate, tags=dict(tags),
                                  enabled=candidate.enabled if enabled is None else enabled)
                versions[i] = updated
                return replace(updated, value=None)
        raise NotFound(f"secret {name} version {version} not found")

    async def versions(self, name: str) -> list[SecretVersion]:
        return [replace(v, value=None) for v in self.secrets.get(name, [])]

    async def delete(self, name: str) -> None:
        if name in self.secrets:
            self.deleted[name] = self.secrets.pop(name)


@dataclass
class AuditEntry:
    """One record the fake audit sink received."""

    connection: str
    actor: str
    action: str
    target: str
    outcome: str
    correlation_id: str
    graph_request_id: str | None
    vault_version: str | None
    detail: dict[str, Any]


class FakeAuditSink:
    """Keeps audit records in order."""

    def __init__(self) -> None:
        self.records: list[AuditEntry] = []
        self.flushes = 0

    async def record(self, *, connection: str, actor: str, action: str, target: str, outcome: str,
                     correlation_id: str, graph_request_id: str | None = None,
                     vault_version: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        self.records.append(AuditEntry(connection, actor, action, target, outcome, correlation_id,
                                       graph_request_id, vault_version, dict(detail or {})))

    async def flush(self) -> None:
        self.flushes += 1

    def actions(self) -> list[str]:
        return [r.action for r in self.records]
