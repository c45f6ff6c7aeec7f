"""Ports: what the use cases need from the outside world.

Adapters in `shared/adapters` implement these against the real SDKs; unit tests implement them with
in-memory fakes (`tests/fakes.py`). Services depend on these protocols only. Every method raises the
taxonomy of `shared.errors`, never an SDK exception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from shared.domain import federation as federation_rules
from shared.domain import sync as sync_rules
from shared.domain.audit import Anchor, ChainKey
from shared.domain.devices import Ceremony, DeviceRow, PasskeyRow
from shared.domain.directory import UserRow
from shared.domain.enrollment import GroupRecord
from shared.domain.events import Event
from shared.domain.export import EntraGroup, EntraUser, Link, Sku
from shared.domain.mds import TrustAnchors
from shared.domain.rotation import RotationRow
from shared.domain.scim import Kind, Stored
from shared.domain.sync import GroupChange as GroupChange
from shared.domain.sync import GroupTree
from shared.domain.sync import MemberChange as MemberChange
from shared.domain.sync import UserChange as UserChange
from shared.topology import Queue, Table

JsonObject = dict[str, Any]
ApiVersion = Literal["v1.0", "beta"]
V = TypeVar("V")


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


# ----------------------------------------------------------------------------- Entra, as the services need it
#
# Implemented on Microsoft Graph in shared/adapters/graph/ (one module per Graph area). The values are the
# bridge's own: no service reads Graph's JSON ('@odata.*', '@removed', 'members@delta').

T = TypeVar("T")
#: A user as sync reads it from Entra (its `groups` filled in by sync).
SyncUser = sync_rules.EntraUser


@dataclass(frozen=True)
class DeltaRead(Generic[T]):
    """A complete delta round: every item of every page, and the deltaLink for the next round."""

    items: list[T]
    link: str


class DirectoryReader(Protocol):
    """What sync reads from Entra (shared/adapters/graph/users.py and groups.py)."""

    resource_units: int

    async def group_id(self, name_or_id: str) -> str:
        """Object id of a group named by id or display name."""
        ...

    def transitive_users(self, group_id: str) -> AsyncIterator[SyncUser]:
        """Every user of a group, nested groups included (their `groups` left empty)."""
        ...

    async def count_users(self, group_id: str) -> int | None:
        """About how many users a group has, nested groups included (an estimate that may lag recent
        changes); None when Entra gives no count."""
        ...

    async def groups_delta(self, ids: Sequence[str] | None = None, link: str | None = None) -> DeltaRead[GroupChange]:
        """A first groups/delta round for `ids` (with members), or the next round from `link`; Gone on 410."""
        ...

    async def users_delta_latest(self) -> str:
        """A users/delta link from now."""
        ...

    async def users_delta(self, link: str) -> DeltaRead[UserChange]:
        """Users changed or deleted since `link`; Gone on 410."""
        ...

    async def users(self, ids: Sequence[str]) -> list[SyncUser]:
        """The attributes of these users (absent ones left out)."""
        ...


@runtime_checkable
class GroupWriter(Protocol):
    """What the enrollment-state groups need from Entra (shared/adapters/graph/groups.py)."""

    async def find_groups(self, display_name: str) -> list[str]:
        """Ids of the groups with exactly this display name."""
        ...

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        """Create a security group; returns its id."""
        ...

    async def member_ids(self, group_id: str) -> set[str]:
        """Ids of the group's direct members."""
        ...

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        """Add users to a group."""
        ...

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Remove one member; absent counts as removed."""
        ...

    async def delete_group(self, group_id: str) -> None:
        """Delete a group; absent counts as deleted."""
        ...

    async def group(self, group_id: str) -> JsonObject | None:
        """The group's id, displayName, description and mailNickname; None when it does not exist."""
        ...


class PasswordDirectory(Protocol):
    """What rotation needs from Entra (shared/adapters/graph/passwords.py)."""

    async def reset(self, user_id: str, password: str) -> str | None:
        """Set the password; returns Graph's request-id. InvalidInput for a definite 400."""
        ...

    async def admin_roles(self, user_id: str) -> frozenset[str]:
        """Display names of the directory roles the user holds."""
        ...

    async def app_roles(self) -> frozenset[str]:
        """Display names of the directory roles the bridge's own identity holds."""
        ...

    async def tenant_name(self) -> str:
        """The organisation's display name (a banned term for passwords)."""
        ...


@dataclass(frozen=True)
class CreationOptions:
    """Entra's creation options for a passkey: the WebAuthn `publicKey` options, and when the challenge expires."""

    #: PublicKeyCredentialCreationOptions in WebAuthn's JSON form (https://www.w3.org/TR/webauthn-3/).
    public_key: JsonObject
    #: ISO 8601, as Entra gave it; None when it gave none.
    challenge_expires: str | None = None


@dataclass(frozen=True)
class Fido2Method:
    """A passkey (fido2AuthenticationMethod) registered in Entra."""

    id: str
    display_name: str | None = None
    aaguid: str | None = None
    model: str | None = None
    #: "attested" or "notAttested".
    attestation_level: str | None = None
    #: ISO 8601, as Entra gave it.
    created: str | None = None
    #: Graph's request-id of the call that returned it.
    request_id: str | None = None


@dataclass(frozen=True)
class Revocation:
    """What revoking one passkey in Entra came to."""

    outcome: str  # revoked | already-gone
    request_id: str | None


class PasskeyDirectory(Protocol):
    """Entra's FIDO2 provisioning API as devices and passkeys need it (shared/adapters/graph/fido2.py)."""

    async def creation_options(self, user_id: str, timeout_minutes: int = 5) -> CreationOptions:
        """Creation options for a user."""
        ...

    async def register(self, user_id: str, display_name: str, credential: JsonObject) -> Fido2Method:
        """Register an attested credential; returns the new method."""
        ...

    async def methods(self, user_id: str) -> list[Fido2Method]:
        """Every passkey method of the user."""
        ...

    async def revoke(self, user_id: str, method_id: str) -> Revocation:
        """Delete one method (already gone counts as revoked)."""
        ...

    async def policy(self) -> JsonObject:
        """The tenant's FIDO2 method configuration (state, isSelfServiceRegistrationAllowed, keyRestrictions...)."""
        ...


class DomainDirectory(Protocol):
    """Entra's domains and federation configuration (shared/adapters/graph/domains.py)."""

    async def domain(self, name: str) -> JsonObject | None:
        """The domain, or None when the tenant has no such domain."""
        ...

    async def domains(self) -> list[JsonObject]:
        """Every domain of the tenant."""
        ...

    async def federation(self, name: str) -> JsonObject | None:
        """The domain's internalDomainFederation, or None."""
        ...

    async def people_on_domain(self, name: str) -> tuple[list[str], int]:
        """UPNs of admin role holders on the domain, and the count of synced users on it."""
        ...

    async def app_access(self) -> federation_rules.AppAccess:
        """The bridge's application permissions and directory roles."""
        ...

    async def create_federation(self, name: str, body: JsonObject) -> GraphResponse:
        """Create the configuration."""
        ...

    async def update_federation(self, name: str, config_id: str, body: JsonObject) -> GraphResponse:
        """Update the configuration."""
        ...

    async def delete_federation(self, name: str, config_id: str) -> GraphResponse:
        """Delete the configuration."""
        ...


@dataclass(frozen=True)
class Organization:
    """The tenant's organization object, as a connection test shows it."""

    id: str
    display_name: str | None


@dataclass(frozen=True)
class DirectoryRole:
    """An activated directory role."""

    id: str
    display_name: str


class TenantDirectory(Protocol):
    """The organization and its directory roles, as the connection test reads them
    (shared/adapters/graph/organization.py)."""

    async def organization(self) -> Organization:
        """The tenant's organization."""
        ...

    async def directory_roles(self) -> list[DirectoryRole]:
        """Every activated directory role."""
        ...

    async def role_member_ids(self, role_id: str) -> set[str]:
        """Object ids of a role's direct members."""
        ...

    async def passkey_policy(self) -> JsonObject:
        """The tenant's FIDO2 method configuration."""
        ...


@dataclass(frozen=True)
class Subscription:
    """A change-notification subscription as Graph describes it."""

    id: str
    resource: str
    expires: dt.datetime
    notification_url: str


class SubscriptionApi(Protocol):
    """Graph's change-notification subscriptions (shared/adapters/graph/subscriptions.py)."""

    async def create(self, *, resource: str, change_type: str, notification_url: str, lifecycle_url: str,
                     expires: dt.datetime, client_state: str) -> Subscription:
        """A new subscription; Graph validates the URLs first."""
        ...

    async def renew(self, subscription_id: str, expires: dt.datetime) -> Subscription:
        """Move the expiry; NotFound when gone."""
        ...

    async def reauthorize(self, subscription_id: str) -> None:
        """Reauthorize; NotFound when gone."""
        ...

    async def delete(self, subscription_id: str) -> None:
        """Remove (gone counts as removed)."""
        ...

    async def list(self) -> list[Subscription]:
        """The app's subscriptions."""
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

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        """Create or replace rows, in all-or-nothing groups of up to TRANSACTION_ROWS rows of one partition.

        `exists` tells, by row key, rows known to exist (True: replaced, NotFound if gone) or known to be
        new (False: inserted, Conflict if present); the others are inserted or replaced.
        A failed group raises; the groups written before it stay written.
        """
        ...


# ------------------------------------------------------------------ Repositories: devices, ceremonies, rotations


@dataclass(frozen=True)
class Versioned(Generic[V]):
    """A stored value with the version it was read at (None: not stored yet).

    Writing it back with that version fails with Conflict when another writer changed it in between.
    """

    value: V
    version: str | None


class DeviceRepository(Protocol):
    """The device registry of every connection (shared/adapters/devices.py)."""

    async def get(self, connection: str, device_id: str) -> Versioned[DeviceRow] | None:
        """One device, or None."""
        ...

    async def add(self, connection: str, device: DeviceRow) -> None:
        """Register a new device; Conflict when the id is taken."""
        ...

    async def replace(self, connection: str, device: Versioned[DeviceRow]) -> None:
        """Write a device back; Conflict when it changed since it was read."""
        ...

    async def put(self, connection: str, device: DeviceRow) -> None:
        """Write a device whatever its stored state."""
        ...

    def all(self, connection: str) -> AsyncIterator[DeviceRow]:
        """Every device of the connection (a malformed one is logged and skipped)."""
        ...


class PasskeyRepository(Protocol):
    """The passkeys the bridge registered in Entra, per device (shared/adapters/devices.py)."""

    async def get(self, connection: str, device_id: str, method_id: str) -> Versioned[PasskeyRow] | None:
        """One passkey, or None; InvalidInput when the ids cannot name a stored passkey."""
        ...

    async def of_device(self, connection: str, device_id: str) -> list[PasskeyRow]:
        """The passkeys of one device."""
        ...

    def all(self, connection: str) -> AsyncIterator[Versioned[PasskeyRow]]:
        """Every passkey of the connection."""
        ...

    async def put(self, connection: str, passkey: PasskeyRow) -> None:
        """Record a passkey (replacing the record of the same device and method)."""
        ...

    async def replace(self, connection: str, passkey: Versioned[PasskeyRow]) -> None:
        """Write a passkey back; Conflict when it changed since it was read."""
        ...

    async def delete(self, connection: str, device_id: str, method_id: str) -> None:
        """Forget a passkey; absent counts as forgotten."""
        ...


class DeviceOperations(Protocol):
    """Progress of long device operations (removals), read by their operation id (shared/adapters/devices.py)."""

    async def start(self, connection: str, operation: str, progress: JsonObject) -> None:
        """Record a new operation; Conflict when the id is taken."""
        ...

    async def get(self, connection: str, operation: str) -> JsonObject | None:
        """An operation's progress, or None."""
        ...

    async def update(self, connection: str, operation: str, changes: Mapping[str, Any]) -> JsonObject:
        """Merge `changes` into an operation's progress (created when absent); returns the whole progress."""
        ...


class CeremonyRepository(Protocol):
    """Passkey registration ceremonies (shared/adapters/ceremonies.py)."""

    async def add(self, connection: str, ceremony: Ceremony) -> None:
        """Keep a new ceremony; Conflict when the id is taken."""
        ...

    async def get(self, connection: str, ceremony_id: str) -> Versioned[Ceremony] | None:
        """One ceremony, or None (also for an id or a record that cannot be a ceremony)."""
        ...

    async def consume(self, connection: str, ceremony: Versioned[Ceremony]) -> None:
        """Mark a ceremony used; Conflict when it changed since it was read (another request used it)."""
        ...

    async def purge(self, connection: str, expired_before: dt.datetime) -> int:
        """Forget ceremonies that expired before the time (and unreadable ones); returns how many were found.

        A ceremony changed since it was listed is kept."""
        ...


class SpentTokens(Protocol):
    """Device token ids already accepted once (shared/adapters/devices.py)."""

    async def spend(self, connection: str, device_id: str, token_id: str, keep_until: dt.datetime) -> bool:
        """Remember a token id until `keep_until`; False when it was already spent."""
        ...

    async def forget(self, connection: str, before: dt.datetime) -> int:
        """Forget token ids kept until before the time; returns how many."""
        ...


class RotationRepository(Protocol):
    """Each user's rotation state, with the lease of the one rotation that may run (shared/adapters/rotations.py).

    The lease lives in the user's row, so taking it and recording the outcome are writes of that row.
    """

    async def get(self, connection: str, user_id: str) -> Versioned[RotationRow]:
        """The user's state (an empty row when none is stored, or when the stored one is malformed)."""
        ...

    async def rows(self, connection: str) -> dict[str, RotationRow]:
        """Every stored state of the connection, per user id (malformed ones left out)."""
        ...

    async def claim(self, connection: str, user_id: str, seen: Versioned[RotationRow], rotation_id: str, *,
                    now: dt.datetime, until: dt.datetime) -> Versioned[RotationRow]:
        """Take the user's lease for `rotation_id` until `until`, marking it in progress; Conflict when another
        rotation holds an unexpired lease or the row changed since `seen` was read."""
        ...

    async def finish(self, connection: str, user_id: str, claimed: Versioned[RotationRow],
                     changes: Mapping[str, Any]) -> None:
        """Record the outcome (`changes` to the row) and let the lease go; Conflict when the row changed since
        it was claimed."""
        ...

    async def fail(self, connection: str, user_id: str, rotation_id: str, reason: str, *, now: dt.datetime) -> bool:
        """Record a rotation as failed and let its lease go; False (nothing written) when another rotation holds
        an unexpired lease. Conflict when the row changed while recording."""
        ...


@dataclass(frozen=True)
class JobProblem:
    """The last failure of a timer or queue job: when, under which correlation id, and its problem members."""

    job: str
    at: str
    correlation_id: str
    problem: JsonObject


class JobProblemLog(Protocol):
    """Each connection's current job problems (shared/adapters/problems.py)."""

    async def put(self, connection: str, problem: JobProblem) -> None:
        """Keep a job's problem (replacing its previous one)."""
        ...

    async def drop(self, connection: str, job: str) -> None:
        """Forget a job's problem; absent counts as forgotten."""
        ...

    async def all(self, connection: str) -> list[JobProblem]:
        """Every current problem of the connection's jobs."""
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


# ----------------------------------------------------------------------------- Repositories: directory and sync


@dataclass(frozen=True)
class Lease:
    """A lease held: who holds what until when, and the version it was written with (for renew and release)."""

    scope: str
    key: str
    owner: str
    until: dt.datetime
    etag: str | None = None


class Leases(Protocol):
    """Exclusive, expiring leases, one per (scope, key): a sync run of a connection, a connection's event
    publisher. Every change is guarded by the version it was read with, so two takers never both win."""

    async def take(self, scope: str, key: str, owner: str, seconds: float) -> Lease | None:
        """Take the lease for `seconds` when it is free, expired or already `owner`'s (then it is extended);
        None when another owner holds it."""
        ...

    async def holder(self, scope: str, key: str) -> Lease | None:
        """Who holds the lease now (an expired or released lease counts as free: None)."""
        ...

    async def renew(self, lease: Lease, seconds: float) -> Lease:
        """Extend a lease still held as `lease`; Conflict when it was taken over or dropped since."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give a lease back if it is still held as `lease` (else nothing changes)."""
        ...


class UserRepository(Protocol):
    """The bridge directory: one row per user of a connection (shared/adapters/users.py).

    Writes are grouped by `batch_key`: rows of the same key, at most `batch_rows` of them, are written by
    one all-or-nothing `put_many`.
    """

    #: The most rows one all-or-nothing `put_many` takes.
    batch_rows: int

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        ...

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        """Some users by object id (absent ones left out), read side by side."""
        ...

    def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of the connection, once, in a stable order, holding only a part of them at a time."""
        ...

    async def is_empty(self, connection: str) -> bool:
        """Whether the connection has no user."""
        ...

    async def lay_out(self, connection: str, expected_users: int | None) -> int:
        """Fix how the connection's rows are spread, if that is not stored yet: for about `expected_users`
        users when it has none, else as its rows are. Returns the number of write groups' keys (partitions)."""
        ...

    async def count(self, connection: str) -> int:
        """How many users the connection has."""
        ...

    def batch_key(self, connection: str, user_id: str) -> str:
        """Which write group a user's row belongs to (after `lay_out` or a read of the connection)."""
        ...

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        ...

    async def put_many(self, connection: str, rows: Sequence[UserRow], *, new: Collection[str] | None = None) -> None:
        """Create or replace rows; the rows of one `batch_key`, up to `batch_rows`, all or none. A failure
        raises; groups written before it stay written. With `new` (the ids known not to be stored; every other
        row is known to be stored), a row found otherwise fails its group with Conflict or NotFound."""
        ...

    async def delete(self, connection: str, user_id: str) -> None:
        """Forget a user; absent counts as deleted."""
        ...


@dataclass
class DeltaState:
    """Where an incremental sync run starts from: the delta links, the group tree and the directory's size."""

    sync_roots: list[str]
    rotation_root: str | None
    users_link: str
    group_links: list[dict[str, Any]]  # [{"ids": [...], "link": "..."}]
    tree: GroupTree
    #: Users of the connection in the directory, and users in scope: kept by each run, so an incremental
    #: run knows the directory's size (the removal threshold is relative to it) without reading it.
    rows: int | None = None
    in_scope: int | None = None
    #: Changes whenever the state is stored: a process that stored this version may keep the tree it holds.
    version: str = ""


@dataclass(frozen=True)
class EnrollmentDelta:
    """The groups/delta link that follows the enrollment-state groups `ids` (changes made by others)."""

    ids: list[str]
    link: str


class SyncStateRepository(Protocol):
    """What sync keeps between runs of a connection (shared/adapters/syncstate.py)."""

    async def delta(self, connection: str) -> DeltaState | None:
        """The stored delta links and group tree, or None (the next run is a full one)."""
        ...

    async def save_delta(self, connection: str, state: DeltaState, *, changed: Collection[str],
                         gone: Collection[str], full: bool) -> None:
        """Store `state`: of its tree only the `changed` groups (every group when `full`, dropping the rest),
        forgetting the `gone` ones. Sets `state.version`; the tree must not change afterwards."""
        ...

    async def forget_delta(self, connection: str) -> None:
        """Drop the delta links: the next run reads everything again."""
        ...

    async def last_run(self, connection: str, *, dry_run: bool = False) -> JsonObject | None:
        """The last recorded run (camelCase members, nested values as JSON values), or None."""
        ...

    async def put_run(self, connection: str, report: JsonObject, *, dry_run: bool = False) -> None:
        """Record a run's report (the form `last_run` returns)."""
        ...

    async def enrollment_delta(self, connection: str) -> EnrollmentDelta | None:
        """The kept link of the enrollment-state groups, or None."""
        ...

    async def put_enrollment_delta(self, connection: str, delta: EnrollmentDelta) -> None:
        """Keep the link of the enrollment-state groups."""
        ...

    async def enrollment_pending(self, connection: str) -> bool:
        """Whether an update of the enrollment-state groups failed since the last complete one."""
        ...

    async def set_enrollment_pending(self, connection: str, run_id: str | None) -> None:
        """Mark that an update failed (`run_id`), or clear the mark (None)."""
        ...


class FederationWatch(Protocol):
    """What the federation watch found of each domain of a connection (shared/adapters/federation_watch.py)."""

    async def rows(self, connection: str) -> list[JsonObject]:
        """Every watched domain's record, by domain name."""
        ...

    async def get(self, connection: str, domain: str) -> JsonObject | None:
        """One domain's record, or None."""
        ...

    async def put(self, connection: str, domain: str, record: JsonObject) -> None:
        """Create or replace a domain's record."""
        ...

    async def forget(self, connection: str, domain: str) -> None:
        """Drop a domain's record; absent counts as dropped."""
        ...


class SubscriptionRecords(Protocol):
    """The Graph change-notification subscriptions recorded per connection, by key: `groups`, `users`
    (shared/adapters/subscription_records.py)."""

    async def get(self, connection: str, key: str) -> JsonObject | None:
        """One subscription's record, or None."""
        ...

    async def put(self, connection: str, key: str, record: JsonObject) -> None:
        """Create or replace a subscription's record."""
        ...

    async def forget(self, connection: str, key: str) -> None:
        """Drop a subscription's record; absent counts as dropped."""
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
    """Entra as the export engine reads and writes it (shared/adapters/graph/export.py)."""

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
