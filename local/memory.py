"""In-memory stand-ins of the storage, vault, queue and audit ports (shared/services/ports.py).

They keep each port's contract (ETags, Conflict, NotFound, ordering, limits), not a call script, so a
service run on them behaves as on the real adapters; `tests/contracts` runs the same suite on both.
Benchmarks use them for what a bench does not measure; unit tests import them through `tests.fakes`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.adapters.tables import check_key, check_property
from shared.adapters.vault import check_name, check_tags, check_value
from shared.domain.audit import reject_secret_keys
from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import Entity, JsonObject, PoisonMessage, SecretVersion
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
    """Table storage in memory, with ETags, Conflict and the service's key and value rules.

    Rows keep JSON values as the Table adapter does: None properties are not stored, lists and objects
    come back as copies, keys with `/ \\ # ?` or control characters and values no row can hold are refused
    with InvalidInput (shared/adapters/tables.py).
    """

    def __init__(self) -> None:
        self.tables: dict[Table, dict[tuple[str, str], Entity]] = {}
        self._etags = itertools.count(1)

    def _table(self, table: Table) -> dict[tuple[str, str], Entity]:
        return self.tables.setdefault(table, {})

    def _stamp(self, entity: Entity) -> Entity:
        check_key("PartitionKey", entity.partition_key)
        check_key("RowKey", entity.row_key)
        return replace(entity, data=_row_data(entity), etag=f'W/"{next(self._etags)}"')

    @staticmethod
    def _copy(entity: Entity) -> Entity:
        return replace(entity, data=json.loads(json.dumps(entity.data)))

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        found = self._table(table).get((partition_key, row_key))
        return self._copy(found) if found else None

    async def insert(self, table: Table, entity: Entity) -> Entity:
        key = (entity.partition_key, entity.row_key)
        stored = self._stamp(entity)
        if key in self._table(table):
            raise Conflict(f"{table}/{key} exists")
        self._table(table)[key] = stored
        return self._copy(stored)

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        stored = self._stamp(entity)
        self._table(table)[(entity.partition_key, entity.row_key)] = stored
        return self._copy(stored)

    async def update(self, table: Table, entity: Entity) -> Entity:
        key = (entity.partition_key, entity.row_key)
        stored = self._stamp(entity)
        current = self._table(table).get(key)
        if current is None:
            raise NotFound(f"{table}/{key} does not exist")
        if entity.etag is not None and entity.etag != current.etag:
            raise Conflict(f"{table}/{key} was changed by another writer")
        self._table(table)[key] = stored
        return self._copy(stored)

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        current = self._table(table).get((partition_key, row_key))
        if current is None:
            return
        if etag is not None and etag != current.etag:
            raise Conflict(f"{table}/{(partition_key, row_key)} was changed by another writer")
        del self._table(table)[(partition_key, row_key)]

    async def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
                    row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        check_key("PartitionKey", partition_key)
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
            yield self._copy(row)

    async def query_partitions(self, table: Table, first: str, last: str, *,
                               limit: int | None = None) -> AsyncIterator[Entity]:
        keys = sorted(k for k in self._table(table) if first <= k[0] < last)
        for key in keys[:limit]:
            yield self._copy(self._table(table)[key])


class FakeBatchEntityStore(FakeEntityStore):
    """The in-memory store with entity-group transactions (shared.services.ports.BatchEntityStore)."""

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        """Every row is checked before any is written, as the adapter builds the whole request first; a row key
        given twice keeps its last version. `exists`: rows known to be stored (True: Conflict-free update,
        NotFound when gone) or known to be new (False: Conflict when present), the group failing whole."""
        stamped = [self._stamp(e) for e in entities]
        for entity in stamped:
            known = (exists or {}).get(entity.row_key)
            stored = (entity.partition_key, entity.row_key) in self._table(table)
            if known is True and not stored:
                raise NotFound(f"row {entity.partition_key}/{entity.row_key} does not exist")
            if known is False and stored:
                raise Conflict(f"row {entity.partition_key}/{entity.row_key} already exists")
        for entity in stamped:
            self._table(table)[(entity.partition_key, entity.row_key)] = entity


def _row_data(entity: Entity) -> JsonObject:
    """The properties a row keeps, refused as the Table adapter refuses them (shared/adapters/tables.py)."""
    kept: JsonObject = {}
    for key, value in entity.data.items():
        if check_property(key, value) is not None:
            kept[key] = json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value
    return kept


@dataclass
class _Queued:
    id: str
    body: JsonObject
    delay: float
    inserted_on: dt.datetime
    dequeue_count: int = 0


class FakeWorkQueue:
    """Storage queues in memory: what was enqueued per queue (with its delay), the 64 KiB limit, and the
    poison queues the host fills (`poisoned`), which the PoisonQueues methods read, replay and drop."""

    def __init__(self) -> None:
        self.sent: dict[Queue, list[tuple[JsonObject, float]]] = {}
        self.poison: dict[Queue, list[_Queued]] = {}

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        text = json.dumps(message, separators=(",", ":"))
        if (len(text.encode()) + 2) // 3 * 4 > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"a message for {queue.value} is {len(text)} bytes before base64; the queue holds "
                               f"{MAX_MESSAGE_BYTES} bytes after encoding", field="message")
        self.sent.setdefault(queue, []).append((json.loads(text), delay_seconds))

    def messages(self, queue: Queue) -> list[JsonObject]:
        """Every message sent to `queue`, delayed ones too, oldest first."""
        return [m for m, _ in self.sent.get(queue, [])]

    def visible(self, queue: Queue) -> list[JsonObject]:
        """The messages sent without a delay, oldest first."""
        return [m for m, delay in self.sent.get(queue, []) if delay <= 0]

    def poisoned(self, queue: Queue, message: JsonObject, *, dequeue_count: int = 5) -> str:
        """Put a message on `queue`'s poison queue as the host does after its last delivery; returns its id."""
        queued = _Queued(uuid.uuid4().hex, json.loads(json.dumps(message)), 0, dt.datetime.now(dt.UTC),
                         dequeue_count)
        self.poison.setdefault(queue, []).append(queued)
        return queued.id

    @staticmethod
    def _poison_message(queued: _Queued) -> PoisonMessage:
        return PoisonMessage(id=queued.id, inserted_on=queued.inserted_on, dequeue_count=queued.dequeue_count,
                             body=json.loads(json.dumps(queued.body)), text=json.dumps(queued.body))

    async def poison_messages(self, queue: Queue) -> tuple[list[PoisonMessage], int]:
        found = self.poison.get(queue, [])
        return [self._poison_message(q) for q in found[:PEEK_MAX]], len(found)

    async def take_poison(self, queue: Queue, ids: set[str] | None, *, replay: bool) -> list[PoisonMessage]:
        found = self.poison.get(queue, [])
        chosen = [q for q in found if ids is None or q.id in ids]
        self.poison[queue] = [q for q in found if q not in chosen]
        if replay:
            self.sent.setdefault(queue, []).extend((q.body, 0) for q in chosen)
        return [self._poison_message(q) for q in chosen]


#: Messages one peek returns at most (https://learn.microsoft.com/rest/api/storageservices/peek-messages).
PEEK_MAX = 32
#: A queue message holds 64 KiB (https://learn.microsoft.com/azure/storage/queues/storage-queues-introduction).
MAX_MESSAGE_BYTES = 64 * 1024


class FakeSecretStore:
    """Key Vault secrets in memory: versions newest first, tags, enabled flag, soft delete."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.secrets: dict[str, list[SecretVersion]] = {}
        self.deleted: dict[str, list[SecretVersion]] = {}

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        check_name(name)
        tags = check_tags(tags)
        check_value(name, value)
        if name in self.deleted:
            raise Conflict(f"secret {name} is deleted but not purged")
        version = SecretVersion(name=name, version=uuid.uuid4().hex, tags=dict(tags), enabled=True,
                                created_on=self.clock.now(), value=value)
        self.secrets.setdefault(name, []).insert(0, version)
        return replace(version, value=None)

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        check_name(name)
        for candidate in self.secrets.get(name, []):
            if version is None or candidate.version == version:
                if not candidate.enabled:
                    raise Conflict(f"secret {name} version {candidate.version} is disabled")
                return candidate
        raise NotFound(f"secret {name} {version or '(latest)'} not found")

    async def set_tags(self, name: str, version: str, tags: Mapping[str, str], *,
                       enabled: bool | None = None) -> SecretVersion:
        check_name(name)
        tags = check_tags(tags)
        versions = self.secrets.get(name, [])
        for i, candidate in enumerate(versions):
            if candidate.version == version:
                updated = replace(candidate, tags=dict(tags),
                                  enabled=candidate.enabled if enabled is None else enabled)
                versions[i] = updated
                return replace(updated, value=None)
        raise NotFound(f"secret {name} version {version} not found")

    async def versions(self, name: str) -> list[SecretVersion]:
        check_name(name)
        return [replace(v, value=None) for v in self.secrets.get(name, [])]

    async def delete(self, name: str) -> None:
        check_name(name)
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
    """Keeps audit records in order; a detail member named like a secret is refused, as the Table sink does."""

    def __init__(self) -> None:
        self.records: list[AuditEntry] = []
        self.flushes = 0

    async def record(self, *, connection: str, actor: str, action: str, target: str, outcome: str,
                     correlation_id: str, graph_request_id: str | None = None,
                     vault_version: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        kept = json.loads(json.dumps(dict(detail or {})))
        reject_secret_keys(kept)  # as the Table sink refuses it (invariant 2)
        self.records.append(AuditEntry(connection, actor, action, target, outcome, correlation_id,
                                       graph_request_id, vault_version, kept))

    async def flush(self) -> None:
        self.flushes += 1

    def actions(self) -> list[str]:
        return [r.action for r in self.records]
