"""In-memory fakes of the ports in shared.services.ports, for pure service tests.

They implement the port's contract (ETags, Conflict, NotFound, ordering), not a call script, so a
service tested against them behaves the same against the real adapters.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.domain.export import USER_PROPERTIES, EntraGroup, EntraUser, Sku
from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import Entity, JsonObject, SecretVersion, Written
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


class FakeExportDirectory:
    """Entra for the export engine, with Graph's refusals (unverified UPN domain, duplicate UPN, license without
    usageLocation or free seat, a group in itself) and every write counted."""

    def __init__(self, *, domains: tuple[str, ...] = ("contoso.example",), seats: int = 10) -> None:
        self.domains = list(domains)
        self.sku = Sku("sku-e3", "ENTERPRISEPACK", seats)
        self.users: dict[str, EntraUser] = {}
        self.groups: dict[str, EntraGroup] = {}
        self.members: dict[str, set[str]] = {}
        self.passwords: dict[str, str] = {}
        self.created: dict[str, JsonObject] = {}
        self.managers: dict[str, str] = {}
        self.owners: dict[str, set[str]] = {}
        self.writes: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def _written(self, action: str, target: str, object_id: str | None = None) -> Written:
        self.writes.append((action, target))
        return Written(object_id, f"req-{len(self.writes)}")

    async def verified_domains(self) -> list[str]:
        return list(self.domains)

    async def skus(self) -> list[Sku]:
        used = sum(1 for u in self.users.values() if self.sku.sku_id in u.licenses)
        return [replace(self.sku, free=self.sku.free - used)]

    async def user(self, user_id: str) -> EntraUser | None:
        return self.users.get(user_id)

    async def find_user(self, attribute: str, value: str) -> EntraUser | None:
        names = {"userPrincipalName": "user_principal_name", "mail": "mail", "employeeId": "employee_id"}
        field_name = names[attribute]
        return next((u for u in self.users.values() if str(getattr(u, field_name) or "").lower() == value.lower()),
                    None)

    def add_user(self, upn: str, **extra: Any) -> EntraUser:
        user = EntraUser(id=f"u{next(self._ids)}", user_principal_name=upn, **extra)
        self.users[user.id] = user
        return user

    def add_group(self, name: str, **extra: Any) -> EntraGroup:
        group = EntraGroup(id=f"g{next(self._ids)}", display_name=name, **extra)
        self.groups[group.id] = group
        self.members[group.id] = set()
        return group

    async def create_user(self, body: JsonObject) -> Written:
        upn = str(body["userPrincipalName"])
        if upn.rsplit("@", 1)[-1] not in self.domains:
            raise InvalidInput("The domain portion of the userPrincipalName property is invalid.")
        if await self.find_user("userPrincipalName", upn):
            raise InvalidInput("Another object with the same value for property userPrincipalName already exists.")
        if not isinstance(body.get("passwordProfile"), dict) or not body["passwordProfile"].get("password"):
            raise InvalidInput("Invalid value specified for property 'passwordProfile' of resource 'User'.")
        user = self.add_user(upn, account_enabled=bool(body["accountEnabled"]),
                             usage_location=body.get("usageLocation"), display_name=body.get("displayName"),
                             employee_id=body.get("employeeId"), mail=body.get("mail"),
                             properties={k: body.get(k) for k in USER_PROPERTIES})
        self.passwords[user.id] = str(body["passwordProfile"]["password"])
        self.created[user.id] = {k: v for k, v in body.items() if k != "passwordProfile"} | {
            "passwordProfile": {k: v for k, v in body["passwordProfile"].items() if k != "password"}}
        return self._written("user.create", user.id, user.id)

    async def update_user(self, user_id: str, body: JsonObject) -> Written:
        user = self.users[user_id]
        names = {"accountEnabled": "account_enabled", "usageLocation": "usage_location", "displayName": "display_name",
                 "mail": "mail", "employeeId": "employee_id"}
        properties = {**user.properties, **{k: v for k, v in body.items() if k in USER_PROPERTIES}}
        self.users[user_id] = replace(user, properties=properties,
                                      **{names[k]: v for k, v in body.items() if k in names})
        return self._written("user.update", user_id)

    async def manager_id(self, user_id: str) -> str | None:
        return self.managers.get(user_id)

    async def set_manager(self, user_id: str, manager_id: str) -> Written:
        if manager_id not in self.users or manager_id == user_id:
            raise InvalidInput(f"manager {manager_id} is not another user")
        self.managers[user_id] = manager_id
        return self._written("user.setManager", user_id)

    async def remove_manager(self, user_id: str) -> Written:
        if self.managers.pop(user_id, None) is None:
            raise NotFound("Resource 'manager' does not exist")
        return self._written("user.removeManager", user_id)

    async def delete_user(self, user_id: str) -> Written:
        self.users.pop(user_id, None)
        return self._written("user.delete", user_id)

    async def assign_license(self, user_id: str, sku_id: str) -> Written:
        user = self.users[user_id]
        if not user.usage_location:
            raise InvalidInput("License assignment cannot be done for user with invalid usage location.")
        if (await self.skus())[0].free <= 0:
            raise InvalidInput("License assignment failed because there are no available licenses.")
        self.users[user_id] = replace(user, licenses=(*user.licenses, sku_id))
        return self._written("user.assignLicense", user_id)

    async def groups_named(self, display_name: str) -> list[EntraGroup]:
        return [g for g in self.groups.values() if g.display_name.lower() == display_name.lower()]

    async def group(self, group_id: str) -> EntraGroup | None:
        return self.groups.get(group_id)

    async def create_group(self, body: JsonObject, *, owners: tuple[str, ...] = ()) -> Written:
        if len(owners) > 20:
            raise InvalidInput("At most 20 owners can be added in one request.")
        group = self.add_group(str(body["displayName"]), mail_nickname=body.get("mailNickname"),
                               mail_enabled=bool(body.get("mailEnabled")),
                               security_enabled=bool(body.get("securityEnabled")),
                               group_types=tuple(body.get("groupTypes") or ()), description=body.get("description"))
        self.owners[group.id] = set(owners)
        return self._written("group.create", group.id, group.id)

    async def update_group(self, group_id: str, body: JsonObject) -> Written:
        names = {"displayName": "display_name", "description": "description"}
        self.groups[group_id] = replace(self.groups[group_id], **{names[k]: v for k, v in body.items()})
        return self._written("group.update", group_id)

    async def owner_ids(self, group_id: str) -> set[str]:
        return set(self.owners.get(group_id, set()))

    async def add_owner(self, group_id: str, owner_id: str) -> Written:
        self.owners.setdefault(group_id, set()).add(owner_id)
        return self._written("group.addOwner", group_id)

    async def delete_group(self, group_id: str) -> Written:
        self.groups.pop(group_id, None)
        self.members.pop(group_id, None)
        return self._written("group.delete", group_id)

    async def member_ids(self, group_id: str) -> set[str]:
        return set(self.members[group_id])

    async def add_member(self, group_id: str, member_id: str) -> Written:
        if member_id == group_id:
            raise InvalidInput("A group cannot be a member of itself.")
        self.members[group_id].add(member_id)
        return self._written("group.addMember", group_id)

    async def remove_member(self, group_id: str, member_id: str) -> Written:
        if member_id not in self.members[group_id]:
            raise NotFound(f"{member_id} is not a member")
        self.members[group_id].discard(member_id)
        return self._written("group.removeMember", group_id)
