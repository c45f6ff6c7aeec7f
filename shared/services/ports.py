"""Ports: what the use cases need from the outside world.

Adapters in `shared/adapters` implement these against the real SDKs; unit tests implement them with
in-memory fakes (`tests/fakes.py`). Services depend on these protocols only. Every method raises the
taxonomy of `shared.errors`, never an SDK exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from shared.domain.audit import Anchor, ChainKey
from shared.domain.enrollment import GroupRecord
from shared.domain.events import Event
from shared.domain.export import EntraGroup, EntraUser, Link, Sku
from shared.domain.mds import TrustAnchors
from shared.domain.scim import Kind, Stored
from shared.topology import Queue, Table

JsonObject = dict[str, Any]
ApiVersion = Literal["v1.0", "beta"]


class Clock(Protocol):
    """Time, injectable so policies can be tested."""

    def now(self) -> dt.datetime:
        """The current UTC time, timezone-aware."""
        ...


# ----------------------------------------------------------------------------- Graph


@dataclass(frozen=True)
class GraphResponse:
    """A Graph answer: status, parsed JSON body (None for 204), headers and Graph's request-id."""

    status: int
    body: JsonObject | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(frozen=True)
class BatchItem:
    """One request of a `$batch`; `id` is ours and must be unique in the call."""

    id: str
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    url: str  # relative to the API version root, e.g. "/users/{id}"
    body: JsonObject | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    depends_on: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """The final outcome of one batch item after the gateway's per-item retries."""

    id: str
    status: int
    body: JsonObject | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None


class GraphApi(Protocol):
    """One connection's door to Microsoft Graph.

    Paths are relative to the version root ("/users/delta"). Writes are refused (and logged as
    planned) in dry-run. Throttling is honoured inside; errors arrive as the taxonomy, keeping Graph's
    request-id.
    """

    #: Graph's root URL, without a trailing slash: the cloud's Graph host, or the local simulator's.
    base: str

    async def get(self, path: str, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> JsonObject:
        """GET one resource; NotFound for 404."""
        ...

    def pages(self, path: str, *, params: Mapping[str, str] | None = None,
              headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> AsyncIterator[JsonObject]:
        """Yield every page (the whole JSON page, with `value` and `@odata.*Link`) following nextLink.

        A page without `value`, or a failed page, raises Stop: the read is incomplete.
        """
        ...

    async def send(self, method: Literal["POST", "PATCH", "PUT", "DELETE"], path: str, *,
                   body: JsonObject | None = None, params: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> GraphResponse:
        """A write. A lost response raises Ambiguous; in dry-run nothing is sent."""
        ...

    async def batch(self, items: Sequence[BatchItem], *, api: ApiVersion = "v1.0") -> list[BatchResult]:
        """Send items in batches of 20, retrying throttled and transient items on their own."""
        ...

    def absolute_url(self, path: str, *, api: ApiVersion = "v1.0") -> str:
        """`path` as an absolute URL on this connection's Graph host (for `@odata.bind` and `@odata.id`)."""
        ...


# ----------------------------------------------------------------------------- FIDO metadata


class TrustAnchorSource(Protocol):
    """The verified FIDO Metadata Service blob that attestation chains are checked against."""

    async def anchors(self) -> TrustAnchors:
        """The current trust anchors; Transient when there are none to be had."""
        ...


# ----------------------------------------------------------------------------- Key Vault


class SecretState(StrEnum):
    """Lifecycle tag of a managed password version (docs/architecture.md, Runtime topology)."""

    PENDING = "pending"
    CURRENT = "current"
    SUPERSEDED = "superseded"
    FAILED = "failed"


@dataclass(frozen=True)
class SecretVersion:
    """A version of a secret: its id and tags; `value` only when asked for."""

    name: str
    version: str
    tags: Mapping[str, str]
    enabled: bool
    created_on: dt.datetime | None
    value: str | None = field(default=None, repr=False)

    @property
    def state(self) -> str | None:
        """The version's `state` tag."""
        return self.tags.get("state")


class SecretStore(Protocol):
    """Key Vault as the services need it."""

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        """Write a new version with tags; returns it without the value."""
        ...

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        """Read a version (latest when None) with its value; NotFound when absent."""
        ...

    async def set_tags(self, name: str, version: str, tags: Mapping[str, str], *,
                       enabled: bool | None = None) -> SecretVersion:
        """Replace a version's tags (and optionally enable or disable it)."""
        ...

    async def versions(self, name: str) -> list[SecretVersion]:
        """Every version's properties, newest first, without values."""
        ...

    async def delete(self, name: str) -> None:
        """Soft-delete the secret (recoverable until purged); NotFound counts as done."""
        ...


# ----------------------------------------------------------------------------- Tables and queues


@dataclass(frozen=True)
class Entity:
    """A stored row: keys, properties and the ETag it was read with."""

    partition_key: str
    row_key: str
    data: JsonObject
    etag: str | None = None


class EntityStore(Protocol):
    """Table storage with optimistic concurrency."""

    async def get(self, table: Table, partition_key: str, row_key: str) -> Entity | None:
        """One row, or None."""
        ...

    async def insert(self, table: Table, entity: Entity) -> Entity:
        """Create a row; Conflict if it exists. Returns it with its new ETag."""
        ...

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        """Create or replace a row without a concurrency check."""
        ...

    async def update(self, table: Table, entity: Entity) -> Entity:
        """Replace a row if its ETag still matches `entity.etag`; Conflict otherwise."""
        ...

    async def delete(self, table: Table, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
        """Delete a row (when the ETag matches, if given); absent rows count as deleted."""
        ...

    def query(self, table: Table, partition_key: str, *, row_key_from: str | None = None,
              row_key_to: str | None = None, limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of one partition in row-key order, optionally within [from, to)."""
        ...

    def query_partitions(self, table: Table, first: str, last: str, *,
                         limit: int | None = None) -> AsyncIterator[Entity]:
        """Rows of every partition whose key is within [first, last), in partition then row-key order."""
        ...


#: Rows in one entity-group transaction, all of one partition
#: (https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
TRANSACTION_ROWS = 100


@runtime_checkable
class BatchEntityStore(Protocol):
    """An EntityStore that can also write many rows of one partition in few requests."""

    async def upsert_many(self, table: Table, entities: Sequence[Entity]) -> None:
        """Create or replace rows, in all-or-nothing groups of up to TRANSACTION_ROWS rows of one partition.

        A failed group raises; the groups written before it stay written.
        """
        ...


class WorkQueue(Protocol):
    """A work queue: messages are JSON documents, sent base64-encoded."""

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        """Enqueue one message, visible after `delay_seconds`."""
        ...


@dataclass(frozen=True)
class PoisonMessage:
    """A message the host moved to a poison queue after its last allowed delivery."""

    id: str
    inserted_on: dt.datetime | None
    dequeue_count: int
    #: The JSON document the message carries, or None when it is not one (the raw text is then shown).
    body: JsonObject | None
    text: str


class PoisonQueues(Protocol):
    """The poison queues `<queue>-poison`: read, send back to their queue, or drop."""

    async def poison_messages(self, queue: Queue) -> tuple[list[PoisonMessage], int]:
        """The first 32 messages (a peek: nothing changes) and the approximate count of all."""
        ...

    async def take_poison(self, queue: Queue, ids: set[str] | None, *, replay: bool) -> list[PoisonMessage]:
        """Remove the messages `ids` (all when None) from the poison queue, first sending each back to `queue`
        unchanged when `replay`; returns the messages handled. Messages not chosen stay where they are."""
        ...


class GroupRecords(Protocol):
    """The enrollment-state groups a connection uses, by object id, owned or adopted (shared/adapters/ownership.py)."""

    async def records(self, connection: str) -> list[GroupRecord]:
        """Every recorded group of the connection."""
        ...

    async def put(self, connection: str, record: GroupRecord) -> None:
        """Record a group (replacing the record of the same object id)."""
        ...

    async def forget(self, connection: str, group_id: str) -> None:
        """Drop a group's record; absent counts as dropped."""
        ...


# ----------------------------------------------------------------------------- Audit


class AuditSink(Protocol):
    """Append-only, hash-chained audit records (docs/architecture.md, invariants 5 and 8)."""

    async def record(self, *, connection: str, actor: str, action: str, target: str, outcome: str,
                     correlation_id: str, graph_request_id: str | None = None,
                     vault_version: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Append one record. `detail` must not contain a secret."""
        ...

    async def flush(self) -> None:
        """Anchor every chain head written since the last anchor (at the end of a run)."""
        ...


class AuditKeys(Protocol):
    """The keys of the audit chain's MACs (docs/audit.md); rotation adds a key, old ones still verify."""

    async def current(self) -> ChainKey:
        """The key new records are signed with (created on first use)."""
        ...

    async def find(self, key_id: str) -> ChainKey | None:
        """The key with this id, or None when there is no such key."""
        ...


class AuditAnchors(Protocol):
    """Chain heads kept outside Table storage, one anchor per connection and UTC day, every version kept."""

    async def latest(self, connection: str, day: dt.date) -> Anchor | None:
        """The newest anchor of a connection's day, or None."""
        ...

    async def history(self, connection: str, day: dt.date) -> list[Anchor]:
        """Every anchor ever written for a connection's day, oldest first."""
        ...

    async def write(self, anchor: Anchor) -> None:
        """Add an anchor (a new version; earlier ones stay)."""
        ...


# ----------------------------------------------------------------------------- Events to the provider


@dataclass(frozen=True)
class FeedItem:
    """One published event in a connection's change feed, at its place in the feed."""

    sequence: int
    event: Event


@dataclass(frozen=True)
class Pending:
    """An event waiting to be published, with the ticket that removes it from the pending list."""

    event: Event
    ticket: str


class EventOutbox(Protocol):
    """Where services record the events of their changes, and the publisher finds them (docs/events.md).

    An event is recorded once per id: recording the same id again (a replayed change) changes nothing.
    """

    async def record(self, events: Sequence[Event]) -> int:
        """Record events for publishing; returns how many were new (the others were already recorded)."""
        ...

    async def hold(self, connection: str, run: str, events: Sequence[Event]) -> None:
        """Record events of a change not yet made, kept back until `release` names the run."""
        ...

    async def held(self, connection: str) -> dict[str, list[Event]]:
        """The held events of runs that were never released, per run."""
        ...

    async def release(self, connection: str, run: str, ids: Collection[str] | None = None, *,
                      held: Sequence[Event] | None = None) -> None:
        """Make a run's held events publishable (only `ids` when given; the others are dropped); `held`, when
        the caller gives the events it held under `run`, saves reading them back."""
        ...


class EventLog(Protocol):
    """The outbox as the publisher and the change feed see it."""

    async def lease(self, connection: str, owner: str, seconds: float) -> bool:
        """Take (or extend) the connection's publishing lease; False when another owner holds it."""
        ...

    async def unlease(self, connection: str, owner: str) -> None:
        """Give the lease back."""
        ...

    async def pending(self, connection: str, limit: int) -> list[Pending]:
        """The oldest recorded events not yet published, in the order they were recorded."""
        ...

    async def sequence(self, connection: str, events: Sequence[Event]) -> list[FeedItem]:
        """Give each event its place in the feed (kept when it has one already) and write it to the feed."""
        ...

    async def published(self, connection: str, tickets: Sequence[str]) -> None:
        """Events published: they leave the pending list."""
        ...

    async def feed(self, connection: str, after: int, top: int) -> list[FeedItem]:
        """Up to `top` feed items with a sequence above `after`, in order."""
        ...

    async def purge(self, connection: str, before: dt.datetime) -> int:
        """Forget published events and feed items older than `before`; returns how many feed items went."""
        ...


class EventSink(Protocol):
    """The Event Grid topic."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish a batch; Throttled, Transient, PermissionDenied or Configuration on failure."""
        ...


# ----------------------------------------------------------------------------- Export (docs/export.md)


@dataclass(frozen=True)
class ExportChange:
    """A SCIM change received and not yet applied to Entra."""

    id: str
    kind: Kind
    scim_id: str
    operation: str
    request_id: str
    received: str


class ScimRepository(Protocol):
    """The SCIM service's resources, their links to Entra objects and the pending changes (shared/adapters/scim.py)."""

    async def get(self, connection: str, kind: Kind, resource_id: str) -> Stored | None:
        """One resource, or None."""
        ...

    def all(self, connection: str, kind: Kind) -> AsyncIterator[Stored]:
        """Every resource of a kind."""
        ...

    async def create(self, connection: str, stored: Stored, unique: str) -> None:
        """Store a new resource whose unique name (userName, displayName) is `unique`; Conflict when taken."""
        ...

    async def replace(self, connection: str, stored: Stored, *, old_unique: str, unique: str) -> None:
        """Replace a resource whose stored version is `stored.version - 1`; Conflict when it moved or the
        new unique name is taken."""
        ...

    async def delete(self, connection: str, kind: Kind, resource_id: str, unique: str) -> None:
        """Delete a resource and its unique name."""
        ...

    async def link(self, connection: str, kind: Kind, scim_id: str) -> Link | None:
        """The resource's link to Entra, or None."""
        ...

    async def put_link(self, connection: str, link: Link) -> None:
        """Keep a link."""
        ...

    async def links(self, connection: str) -> list[Link]:
        """Every link of the connection."""
        ...

    async def add_change(self, connection: str, change: ExportChange) -> None:
        """Keep a received change until it is applied."""
        ...

    async def changes(self, connection: str) -> list[ExportChange]:
        """Pending changes, oldest first."""
        ...

    async def drop_change(self, connection: str, change_id: str) -> None:
        """Forget an applied change."""
        ...


@dataclass(frozen=True)
class Written:
    """An Entra write's result: the object's id (for creates) and Graph's request id."""

    id: str | None
    request_id: str | None


class ExportDirectory(Protocol):
    """Entra as the export engine reads and writes it (shared/adapters/export.py)."""

    async def verified_domains(self) -> list[str]:
        """The tenant's verified domain names."""
        ...

    async def skus(self) -> list[Sku]:
        """The subscribed SKUs with their free seats."""
        ...

    async def user(self, user_id: str) -> EntraUser | None:
        """A user by id, or None."""
        ...

    async def find_user(self, attribute: str, value: str) -> EntraUser | None:
        """The user whose `attribute` (userPrincipalName, mail, employeeId) equals `value`, or None."""
        ...

    async def create_user(self, body: JsonObject) -> Written:
        """Create a user."""
        ...

    async def update_user(self, user_id: str, body: JsonObject) -> Written:
        """Update a user's properties."""
        ...

    async def delete_user(self, user_id: str) -> Written:
        """Delete a user."""
        ...

    async def assign_license(self, user_id: str, sku_id: str) -> Written:
        """Assign a license."""
        ...

    async def groups_named(self, display_name: str) -> list[EntraGroup]:
        """Every group of this displayName."""
        ...

    async def group(self, group_id: str) -> EntraGroup | None:
        """A group by id, or None."""
        ...

    async def create_group(self, body: JsonObject, *, owners: tuple[str, ...] = ()) -> Written:
        """Create a group, with these object ids as its owners."""
        ...

    async def update_group(self, group_id: str, body: JsonObject) -> Written:
        """Update a group's properties (displayName, description)."""
        ...

    async def owner_ids(self, group_id: str) -> set[str]:
        """The group's owners' object ids."""
        ...

    async def add_owner(self, group_id: str, owner_id: str) -> Written:
        """Add an owner (a user or service principal)."""
        ...

    async def manager_id(self, user_id: str) -> str | None:
        """The object id of the user's manager, or None."""
        ...

    async def set_manager(self, user_id: str, manager_id: str) -> Written:
        """Make a user the manager of another."""
        ...

    async def remove_manager(self, user_id: str) -> Written:
        """Clear a user's manager."""
        ...

    async def delete_group(self, group_id: str) -> Written:
        """Delete a group."""
        ...

    async def member_ids(self, group_id: str) -> set[str]:
        """Direct members' object ids."""
        ...

    async def add_member(self, group_id: str, member_id: str) -> Written:
        """Add a direct member."""
        ...

    async def remove_member(self, group_id: str, member_id: str) -> Written:
        """Remove a direct member."""
        ...
