"""The simulated tenant: directory objects, apps and their grants, passwords, passkeys, policy.

A tenant file (JSON) describes it; the running simulator keeps it in memory and writes it back to the
data folder shortly after each change, so it survives restarts. Other route modules may add fields:
unknown top-level keys are kept as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Changes kept for delta queries; older delta tokens answer 410 and callers resync.
MAX_CHANGES = 200_000


@dataclass
class User:
    """A user object."""

    id: str
    userPrincipalName: str
    displayName: str = ""
    mail: str | None = None
    accountEnabled: bool = True
    onPremisesSyncEnabled: bool | None = None
    usageLocation: str | None = None
    givenName: str | None = None
    surname: str | None = None
    assignedLicenses: list[dict[str, Any]] = field(default_factory=list)
    employeeId: str | None = None
    department: str | None = None

    def graph(self, select: list[str] | None = None) -> dict[str, Any]:
        """The Graph representation, optionally reduced to `$select` (id always included)."""
        body = asdict(self)
        if select:
            return {k: v for k, v in body.items() if k in select or k == "id"}
        # Graph returns licenses only when selected.
        body.pop("assignedLicenses", None)
        return {"@odata.type": "#microsoft.graph.user", **body}


@dataclass
class Group:
    """A group; members are object ids of users or groups."""

    id: str
    displayName: str
    mailNickname: str = ""
    securityEnabled: bool = True
    mailEnabled: bool = False
    groupTypes: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    createdDateTime: str = ""
    description: str | None = None
    mail: str | None = None
    visibility: str | None = None
    owners: list[str] = field(default_factory=list)


@dataclass
class App:
    """An app registration with its service principal, credentials and grants."""

    clientId: str
    servicePrincipalId: str
    displayName: str
    secrets: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)  # PEM certificates
    graphRoles: list[str] = field(default_factory=list)  # Graph application permissions granted
    managedIdentity: bool = False
    # App roles of other apps' APIs assigned to this app's service principal (appRoleAssignments):
    # the resource app's client id -> role values, put in the `roles` claim of tokens for that API.
    apiRoles: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Tenant:
    """Everything the simulator knows."""

    tenantId: str
    displayName: str
    domains: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)  # role display name -> principal ids
    apps: dict[str, App] = field(default_factory=dict)  # by client id
    passwords: dict[str, dict[str, str]] = field(default_factory=dict)  # user id -> {password, setAt}
    fido2: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user id -> methods
    challenges: dict[str, dict[str, Any]] = field(default_factory=dict)  # challenge -> {userId, expires}
    fido2Policy: dict[str, Any] = field(default_factory=dict)
    deletedUsers: dict[str, User] = field(default_factory=dict)
    #: Subscribed SKUs (Graph subscribedSku objects without the id, which is tenant id + skuId).
    skus: list[dict[str, Any]] = field(default_factory=list)
    #: Directory changes for delta queries: {seq, at, kind, id, added, removed}; see record().
    changeLog: list[dict[str, Any]] = field(default_factory=list)
    #: Delta tokens below this sequence number are gone (410): the log before it was dropped.
    deltaFloor: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ indexes

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        #: Bumped on every change, so derived views (transitive membership) are recomputed.
        self.version = 0
        self._transitive: dict[tuple[str, int], list[str]] = {}
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the lookups (UPN, group parents) after bulk changes."""
        self._by_upn = {u.userPrincipalName.lower(): u.id for u in self.users.values()}
        self._sp = {a.servicePrincipalId: a for a in self.apps.values()}

    def user(self, key: str) -> User | None:
        """A user by id or UPN."""
        if key in self.users:
            return self.users[key]
        uid = self._by_upn.get(key.lower())
        return self.users.get(uid) if uid else None

    def app_by_principal(self, principal_id: str) -> App | None:
        """The app whose service principal has this object id."""
        return self._sp.get(principal_id)

    def transitive_users(self, group_id: str) -> list[str]:
        """User ids in a group, nested groups included, in a stable order (cached until a change)."""
        key = (group_id, self.version)
        cached = self._transitive.get(key)
        if cached is None:
            if len(self._transitive) > 256:
                self._transitive.clear()
            cached = self._transitive[key] = self._compute_transitive(group_id)
        return cached

    def _compute_transitive(self, group_id: str) -> list[str]:
        seen_groups: set[str] = set()
        found: dict[str, None] = {}
        stack = [group_id]
        while stack:
            gid = stack.pop()
            if gid in seen_groups or gid not in self.groups:
                continue
            seen_groups.add(gid)
            for member in self.groups[gid].members:
                if member in self.users:
                    found[member] = None
                elif member in self.groups:
                    stack.append(member)
        return sorted(found)

    def transitive_groups_of(self, object_id: str) -> set[str]:
        """Group ids that contain the object, directly or through nesting."""
        parents: dict[str, list[str]] = {}
        for group in self.groups.values():
            for member in group.members:
                parents.setdefault(member, []).append(group.id)
        found: set[str] = set()
        stack = list(parents.get(object_id, []))
        while stack:
            gid = stack.pop()
            if gid not in found:
                found.add(gid)
                stack.extend(parents.get(gid, []))
        return found

    @property
    def sequence(self) -> int:
        """The sequence number of the latest recorded change (0 before any)."""
        return self.changeLog[-1]["seq"] if self.changeLog else self.deltaFloor

    def record(self, kind: str, object_id: str, *, added: list[str] | tuple[str, ...] = (),
               removed: list[str] | tuple[str, ...] = ()) -> None:
        """Log a change of a user or group (and member ids added/removed) for delta queries."""
        self.changeLog.append({"seq": self.sequence + 1, "at": time.time(), "kind": kind, "id": object_id,
                               "added": list(added), "removed": list(removed)})
        if len(self.changeLog) > MAX_CHANGES:
            drop = len(self.changeLog) - MAX_CHANGES
            self.deltaFloor = self.changeLog[drop - 1]["seq"]
            del self.changeLog[:drop]

    def changes_since(self, seq: int) -> list[dict[str, Any]]:
        """Changes after `seq`, oldest first."""
        first = self.changeLog[0]["seq"] if self.changeLog else self.sequence + 1
        return self.changeLog[max(0, seq + 1 - first):]

    def delete_user(self, user_id: str) -> User | None:
        """Soft-delete a user (to deleted items, out of every group); None when there is no such user."""
        user = self.users.pop(user_id, None)
        if user is None:
            return None
        self.deletedUsers[user.id] = user
        self.record("user", user.id)
        for group in self.groups.values():
            if user.id in group.members:
                group.members.remove(user.id)
                self.record("group", group.id, removed=[user.id])
        self.reindex()
        return user

    def roles_of(self, object_id: str) -> list[str]:
        """Directory roles held directly or through role-assignable groups."""
        holders = {object_id, *self.transitive_groups_of(object_id)}
        return sorted(name for name, members in self.roles.items() if holders & set(members))

    # ------------------------------------------------------------------ files

    def to_json(self) -> dict[str, Any]:
        """The tenant file form."""
        with self._lock:
            return {"tenantId": self.tenantId, "displayName": self.displayName, "domains": self.domains,
                    "users": [asdict(u) for u in self.users.values()],
                    "groups": [asdict(g) for g in self.groups.values()], "roles": self.roles,
                    "apps": [asdict(a) for a in self.apps.values()], "passwords": self.passwords,
                    "fido2": self.fido2, "challenges": self.challenges, "fido2Policy": self.fido2Policy,
                    "deletedUsers": [asdict(u) for u in self.deletedUsers.values()], "skus": self.skus,
                    "changeLog": self.changeLog, "deltaFloor": self.deltaFloor, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tenant:
        """Load a tenant file."""
        known = {"tenantId", "displayName", "domains", "users", "groups", "roles", "apps", "passwords", "fido2",
                 "challenges", "fido2Policy", "deletedUsers", "skus", "changeLog", "deltaFloor"}
        return cls(tenantId=data["tenantId"], displayName=data.get("displayName", "Contoso"),
                   domains=list(data.get("domains", [])),
                   users={u["id"]: User(**u) for u in data.get("users", [])},
                   groups={g["id"]: Group(**g) for g in data.get("groups", [])},
                   roles={k: list(v) for k, v in data.get("roles", {}).items()},
                   apps={a["clientId"]: App(**a) for a in data.get("apps", [])},
                   passwords=dict(data.get("passwords", {})), fido2=dict(data.get("fido2", {})),
                   challenges=dict(data.get("challenges", {})), fido2Policy=dict(data.get("fido2Policy", {})),
                   deletedUsers={u["id"]: User(**u) for u in data.get("deletedUsers", [])},
                   skus=list(data.get("skus", [])), changeLog=list(data.get("changeLog", [])),
                   deltaFloor=int(data.get("deltaFloor", 0)),
                   extra={k: v for k, v in data.items() if k not in known})

    @property
    def lock(self) -> threading.RLock:
        """Held while the state changes."""
        return self._lock


class Store:
    """The tenant plus its file in the data folder, written after changes."""

    def __init__(self, tenant: Tenant, data_dir: Path) -> None:
        self.tenant = tenant
        self.path = data_dir / "tenant.json"
        self.dirty = False

    @classmethod
    def open(cls, data_dir: Path, seed: Tenant) -> Store:
        """Resume from the data folder if it holds a tenant, else start from `seed`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "tenant.json"
        if path.exists():
            return cls(Tenant.from_json(json.loads(path.read_text(encoding="utf-8"))), data_dir)
        store = cls(seed, data_dir)
        store.save()
        return store

    def changed(self) -> None:
        """Mark the state as needing a write (and derived views as stale)."""
        self.dirty = True
        self.tenant.version += 1

    def save(self) -> None:
        """Write the tenant file atomically."""
        data = self.tenant.to_json()
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.path)
        self.dirty = False


def new_id() -> str:
    """A fresh object id."""
    return str(uuid.uuid4())


def now_iso() -> str:
    """The current UTC time in Graph's format."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
