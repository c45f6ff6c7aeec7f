"""The simulated tenant: directory objects, apps and their grants, passwords, passkeys, policy.

A tenant file (JSON) describes it; the running simulator keeps it in memory and writes it back to the
data folder shortly after each change, so it survives restarts. Other route modules may add fields:
unknown top-level keys are kept as they are.

A tenant may hold a million users, so users are compact (slotted objects sharing equal strings, one
index entry each, updated in place) and the file is written user by user in chunks, never built whole
in memory.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

#: Changes kept for delta queries; older delta tokens answer 410 and callers resync.
MAX_CHANGES = 200_000
#: A user's fields, in the order of the tenant file and of Graph's answers.
USER_FIELDS = ("id", "userPrincipalName", "displayName", "mail", "accountEnabled", "onPremisesSyncEnabled",
               "usageLocation", "givenName", "surname", "assignedLicenses", "employeeId", "department")
#: Profile properties a user holds only when set (kept in one dict: most simulated users have none), with the
#: most characters Graph takes (https://learn.microsoft.com/graph/api/resources/user#properties).
PROFILE_FIELDS = {"jobTitle": 128, "businessPhones": 64, "mobilePhone": 64, "streetAddress": 1024, "city": 128,
                  "state": 128, "postalCode": 40, "country": 128, "companyName": 64}
#: Users (lines) per write when a tenant file is written.
WRITE_CHUNK = 5000
#: How Tenant.write lays out a tenant file: the first line ends with USERS_LINE, then one user per
#: line; DELETED_LINE starts the deleted users (load_tenant reads such a file a line at a time).
USERS_LINE = ', "users": [\n'
DELETED_LINE = '\n], "deletedUsers": [\n'


@dataclass(slots=True)
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
    #: PROFILE_FIELDS that are set, or None.
    profile: dict[str, Any] | None = None
    #: The object id of the user's manager, or None.
    manager: str | None = None

    def row(self) -> dict[str, Any]:
        """The tenant file form (asdict's, without its deep copy: the caller serialises it at once)."""
        row = {"id": self.id, "userPrincipalName": self.userPrincipalName, "displayName": self.displayName,
               "mail": self.mail, "accountEnabled": self.accountEnabled,
               "onPremisesSyncEnabled": self.onPremisesSyncEnabled, "usageLocation": self.usageLocation,
               "givenName": self.givenName, "surname": self.surname, "assignedLicenses": self.assignedLicenses}
        for name in ("employeeId", "department", "profile", "manager"):
            if getattr(self, name):
                row[name] = getattr(self, name)
        return row

    def get(self, name: str) -> Any:
        """A property by its Graph name (profile properties absent: null, businessPhones: [])."""
        if name in PROFILE_FIELDS:
            return (self.profile or {}).get(name, [] if name == "businessPhones" else None)
        return getattr(self, name)

    def graph(self, select: list[str] | None = None) -> dict[str, Any]:
        """The Graph representation, optionally reduced to `$select` (id always included)."""
        if select:
            return {k: self.get(k) for k in (*USER_FIELDS, *PROFILE_FIELDS) if k in select or k == "id"}
        # Graph returns licenses only when selected.
        return {"@odata.type": "#microsoft.graph.user", "id": self.id, "userPrincipalName": self.userPrincipalName,
                "displayName": self.displayName, "mail": self.mail, "accountEnabled": self.accountEnabled,
                "onPremisesSyncEnabled": self.onPremisesSyncEnabled, "usageLocation": self.usageLocation,
                "givenName": self.givenName, "surname": self.surname}

    @classmethod
    def load(cls, row: dict[str, Any], shared: dict[str, str]) -> User:
        """A user from its tenant file form; equal names are stored once (`shared`) and an e-mail
        equal to the UPN is the UPN's string, so a million users cost what differs between them."""
        user = cls(**row)
        if user.mail == user.userPrincipalName:
            user.mail = user.userPrincipalName
        for name in ("displayName", "givenName", "surname", "usageLocation"):
            value = getattr(user, name)
            if isinstance(value, str):
                setattr(user, name, shared.setdefault(value, value))
        return user


def _lower(text: str) -> str:
    """`text` in lower case, the same string object when it is already (no copy per user)."""
    return text if text.islower() else text.lower()


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
        self._by_upn = {_lower(u.userPrincipalName): u.id for u in self.users.values()}
        self._sp = {a.servicePrincipalId: a for a in self.apps.values()}

    def add_user(self, user: User) -> None:
        """Add (or restore) a user and index its UPN, without rebuilding the index."""
        self.users[user.id] = user
        self._by_upn[_lower(user.userPrincipalName)] = user.id

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
            # Lists of an earlier state are dropped: a million-user group's list is tens of megabytes.
            if len(self._transitive) > 256 or any(version != self.version for _, version in self._transitive):
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
        key = _lower(user.userPrincipalName)
        if self._by_upn.get(key) == user.id:
            del self._by_upn[key]
        return user

    def roles_of(self, object_id: str) -> list[str]:
        """Directory roles held directly or through role-assignable groups."""
        holders = {object_id, *self.transitive_groups_of(object_id)}
        return sorted(name for name, members in self.roles.items() if holders & set(members))

    # ------------------------------------------------------------------ files

    def to_json(self) -> dict[str, Any]:
        """The tenant file form."""
        with self._lock:
            return self._file_form([u.row() for u in self.users.values()],
                                   [u.row() for u in self.deletedUsers.values()])

    def _file_form(self, users: Any, deleted: Any) -> dict[str, Any]:
        return {"tenantId": self.tenantId, "displayName": self.displayName, "domains": self.domains,
                "users": users, "groups": [asdict(g) for g in self.groups.values()], "roles": self.roles,
                "apps": [asdict(a) for a in self.apps.values()], "passwords": self.passwords,
                "fido2": self.fido2, "challenges": self.challenges, "fido2Policy": self.fido2Policy,
                "deletedUsers": deleted, "skus": self.skus,
                "changeLog": self.changeLog, "deltaFloor": self.deltaFloor, **self.extra}

    def write(self, out: IO[str]) -> None:
        """Write the tenant file form to `out` as JSON laid out for streaming: the other fields on the
        first line, then one user per line (USERS_LINE, DELETED_LINE), so neither writing nor reading
        (load_tenant) holds a large tenant's whole file in memory."""
        with self._lock:
            head = self._file_form(None, None)
            del head["users"], head["deletedUsers"]
            out.write(json.dumps(head)[:-1] + USERS_LINE)
            _write_users(out, self.users.values())
            out.write(DELETED_LINE)
            _write_users(out, self.deletedUsers.values())
            out.write("\n]}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tenant:
        """Load a tenant file."""
        known = {"tenantId", "displayName", "domains", "users", "groups", "roles", "apps", "passwords", "fido2",
                 "challenges", "fido2Policy", "deletedUsers", "skus", "changeLog", "deltaFloor"}
        shared: dict[str, str] = {}
        return cls(tenantId=data["tenantId"], displayName=data.get("displayName", "Contoso"),
                   domains=list(data.get("domains", [])),
                   users={u["id"]: User.load(u, shared) for u in data.get("users", [])},
                   groups={g["id"]: Group(**g) for g in data.get("groups", [])},
                   roles={k: list(v) for k, v in data.get("roles", {}).items()},
                   apps={a["clientId"]: App(**a) for a in data.get("apps", [])},
                   passwords=dict(data.get("passwords", {})), fido2=dict(data.get("fido2", {})),
                   challenges=dict(data.get("challenges", {})), fido2Policy=dict(data.get("fido2Policy", {})),
                   deletedUsers={u["id"]: User.load(u, shared) for u in data.get("deletedUsers", [])},
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
        #: How long the last save took: the saver waits in proportion, so a large tenant is not
        #: written (with the state locked) more than a small share of the time.
        self.last_save_seconds = 0.0

    @classmethod
    def open(cls, data_dir: Path, seed: Tenant) -> Store:
        """Resume from the data folder if it holds a tenant, else start from `seed`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "tenant.json"
        if path.exists():
            return cls(load_tenant(path), data_dir)
        store = cls(seed, data_dir)
        store.save()
        return store

    def changed(self) -> None:
        """Mark the state as needing a write (and derived views as stale)."""
        self.dirty = True
        self.tenant.version += 1

    def save(self) -> None:
        """Write the tenant file atomically."""
        started = time.perf_counter()
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            self.tenant.write(out)
        tmp.replace(self.path)
        self.dirty = False
        self.last_save_seconds = time.perf_counter() - started


def _write_users(out: IO[str], users: Iterable[User]) -> None:
    """Users' file forms, one a line, separated by commas; written a chunk of lines at a time."""
    encode = json.JSONEncoder().encode
    chunk: list[str] = []
    first = True
    for user in users:
        chunk.append(encode(user.row()))
        if len(chunk) == WRITE_CHUNK:
            out.write(("" if first else ",\n") + ",\n".join(chunk))
            chunk, first = [], False
    if chunk:
        out.write(("" if first else ",\n") + ",\n".join(chunk))


def load_tenant(path: Path) -> Tenant:
    """A tenant file. One laid out by Tenant.write is read a user (a line) at a time, so a large
    tenant's parsed file is never held whole; any other JSON tenant file is read at once. The cyclic
    garbage collector pauses meanwhile: a million users are a million objects that live as long as
    the simulator, and collecting while they are made only costs time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with path.open("rb") as raw:
            first = raw.readline()
            if not (first.startswith(b"{") and first.endswith(USERS_LINE.encode())):
                return _share_ids(Tenant.from_json(json.loads(first + raw.read())))
            tenant = Tenant.from_json(json.loads(first[:-len(USERS_LINE)] + b"}"))
            shared: dict[str, str] = {}
            into, deleted_line = tenant.users, DELETED_LINE.lstrip("\n").encode()
            for line in raw:
                if not line.strip():
                    continue
                if line.startswith(b"]"):
                    if not line.startswith(deleted_line):
                        break
                    into = tenant.deletedUsers
                    continue
                user = User.load(json.loads(line.rstrip(b",\r\n")), shared)
                into[user.id] = user
            tenant.reindex()
            return _share_ids(tenant)
    finally:
        if enabled:
            gc.enable()


def _share_ids(tenant: Tenant) -> Tenant:
    """Group members that are users refer to the user's own id string, not a copy of it."""
    for group in tenant.groups.values():
        group.members = [user.id if (user := tenant.users.get(m)) is not None else m for m in group.members]
    return tenant


def new_id() -> str:
    """A fresh object id."""
    return str(uuid.uuid4())


def now_iso() -> str:
    """The current UTC time in Graph's format."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
