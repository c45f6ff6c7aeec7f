"""One in-memory Entra tenant behind every Graph-side port of shared/services/ports.py.

`MemoryTenant` holds users, groups and their members, passkeys and the FIDO2 policy, domains and their
federation configuration, directory roles, SKUs and licences, and change-notification subscriptions. Each
port is a view onto that one tenant (`tenant.directory()`, `tenant.passkeys()`, ...), so a test that adds a
member through `GroupWriter` sees it in the next `groups_delta` round, as against Graph.

The views answer with the ports' typed values and raise the bridge's errors where the Graph adapters do
(tests/contracts/test_graph_*.py run the same checks on both). Faults are set per call, named
"<view>.<method>" (e.g. "passkeys.register"): `tenant.faults.fail(...)`, `.throttle(...)`, `.unknown(...)`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.adapters.graph.groups import the_group
from shared.domain.export import USER_PROPERTIES, EntraGroup, EntraUser, Sku
from shared.domain.federation import AppAccess
from shared.domain.sync import USER_FIELDS, GroupChange, MemberChange, UserChange
from shared.errors import (
    Ambiguous,
    BridgeError,
    Configuration,
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Throttled,
)
from shared.services.ports import (
    Clock,
    CreationOptions,
    DeltaRead,
    DirectoryRole,
    Fido2Method,
    GraphResponse,
    JsonObject,
    Organization,
    Revocation,
    Subscription,
    SyncUser,
    Written,
)

__all__ = ["GraphFaults", "MemoryTenant"]

#: What a fresh tenant's FIDO2 policy says (fido2AuthenticationMethodConfiguration, without annotations).
OPEN_POLICY: JsonObject = {"id": "Fido2", "state": "enabled", "isSelfServiceRegistrationAllowed": True,
                           "isAttestationEnforced": False,
                           "keyRestrictions": {"isEnforced": False, "enforcementType": "block", "aaGuids": []}}
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


@dataclass
class _Fault:
    kind: str  # fail | throttle | unknown
    times: int
    error: BridgeError | None = None
    key: str | None = None


@dataclass
class GraphFaults:
    """Faults the next calls meet, by call name ("passkeys.register"); every call is recorded in `calls`.

    `key` limits a fault to calls about one object: the call's first argument (a user id for the passkey
    calls, a group id for members, ...). `times=-1` keeps the fault for every call."""

    calls: list[str] = field(default_factory=list)
    _set: dict[str, list[_Fault]] = field(default_factory=dict)

    def fail(self, call: str, error: BridgeError, *, times: int = 1, key: str | None = None) -> None:
        """The next `times` calls raise `error` without changing anything."""
        self._set.setdefault(call, []).append(_Fault("fail", times, error, key))

    def throttle(self, call: str, *, times: int = 1, retry_after: float = 5.0, key: str | None = None) -> None:
        """The next `times` calls are throttled (Throttled, as the gateway raises after its retries)."""
        self._set.setdefault(call, []).append(_Fault("throttle", times, Throttled(
            f"Graph throttled {call}", retry_after=retry_after), key))

    def unknown(self, call: str, *, times: int = 1, key: str | None = None) -> None:
        """The next `times` writes happen, but the caller is told Ambiguous (a 504 with the write applied)."""
        self._set.setdefault(call, []).append(_Fault("unknown", times, Ambiguous(
            f"Graph timed out on {call}; the write may have happened"), key))

    def clear(self) -> None:
        """No more faults."""
        self._set.clear()

    def count(self, call: str) -> int:
        """How many times `call` was made."""
        return self.calls.count(call)

    def _take(self, call: str, kinds: tuple[str, ...], key: str | None) -> _Fault | None:
        for fault in self._set.get(call, []):
            if fault.kind in kinds and fault.times != 0 and fault.key in (None, key):
                fault.times -= 1 if fault.times > 0 else 0
                return fault
        return None

    def before(self, call: str, key: str | None = None) -> None:
        """Called first by every port method."""
        self.calls.append(call)
        fault = self._take(call, ("fail", "throttle"), key)
        if fault is not None and fault.error is not None:
            raise fault.error

    def after(self, call: str, key: str | None = None) -> None:
        """Called by writes once applied."""
        fault = self._take(call, ("unknown",), key)
        if fault is not None and fault.error is not None:
            raise fault.error


class _Members(list[str]):
    """A group's direct members in the order they were added, with a set beside them so that `in` stays fast
    for a group of 50 000."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self._index = set(self)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def append(self, item: str) -> None:
        super().append(item)
        self._index.add(item)

    def remove(self, item: str) -> None:
        super().remove(item)
        self._index = set(self)

    def _reindexed(self, result: Any) -> Any:
        self._index = set(self)
        return result

    def extend(self, items: Any) -> None:
        self._reindexed(super().extend(items))

    def insert(self, *args: Any) -> None:
        self._reindexed(super().insert(*args))

    def pop(self, *args: Any) -> str:
        popped: str = self._reindexed(super().pop(*args))
        return popped

    def clear(self) -> None:
        self._reindexed(super().clear())

    def __setitem__(self, *args: Any) -> None:
        self._reindexed(super().__setitem__(*args))

    def __delitem__(self, *args: Any) -> None:
        self._reindexed(super().__delitem__(*args))

    def __iadd__(self, items: Any) -> _Members:
        self.extend(items)
        return self


@dataclass
class _Change:
    kind: str  # user | group
    id: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class MemoryTenant:
    """An Entra tenant in memory. Change it as an admin would (`add_user`, `add_member`, ...) or through the ports."""

    def __init__(self, *, name: str = "Contoso", domains: Sequence[str] = ("contoso.example",),
                 tenant_id: str = "00000000-0000-0000-0000-000000000001", clock: Clock | None = None) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.users: dict[str, JsonObject] = {}
        self.groups: dict[str, JsonObject] = {}
        self.members: dict[str, list[str]] = {}
        self.log: list[_Change] = []
        #: Delta links issued before this point answer Gone (as after Graph dropped its sync state); while
        #: `delta_gone` is set, every link does.
        self.delta_floor = 0
        self.delta_gone = False
        self.passwords: dict[str, str] = {}
        self.fido2: dict[str, list[Fido2Method]] = {}
        self.fido2_policy: JsonObject = copy.deepcopy(OPEN_POLICY)
        #: Credential id (base64url) of each passkey method, and the challenges issued: user, expiry.
        self.credential_ids: dict[str, str] = {}
        self.challenges: dict[str, tuple[str, dt.datetime]] = {}
        #: Checks a registration as Entra would, after the fake's own (raise InvalidInput to refuse).
        self.attestation: Callable[[str, JsonObject, JsonObject], None] | None = None
        self.domains: dict[str, JsonObject] = {}
        for i, domain in enumerate(domains):
            self.add_domain(domain, default=i == 0)
        self.roles: dict[str, list[str]] = {}
        self.role_ids: dict[str, str] = {}
        self.app_principal = "app-principal"
        self.app_permissions: list[str] = []
        self.skus: dict[str, JsonObject] = {E3: {"skuId": E3, "skuPartNumber": "ENTERPRISEPACK", "enabled": 10}}
        self.subscriptions: dict[str, Subscription] = {}
        #: Group owners by group id, and each user's manager.
        self.owners: dict[str, list[str]] = {}
        self.managers: dict[str, str] = {}
        #: Writes made through the export port, (method, user or group id), and the users it created (the
        #: request body without the password).
        self.export_writes: list[tuple[str, str]] = []
        self.created: dict[str, JsonObject] = {}
        #: Notification URLs that fail Graph's validation call.
        self.unreachable: set[str] = set()
        self.faults = GraphFaults()
        #: The tenant's clock (challenge expiry, subscription limits); tests may replace it.
        self.now: Callable[[], dt.datetime] = clock.now if clock else lambda: dt.datetime.now(dt.UTC)
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ as an admin changes it

    def new_id(self) -> str:
        """A fresh object id (a GUID, as Graph's)."""
        return str(uuid.UUID(int=next(self._ids)))

    def add_user(self, item: JsonObject | None = None, *groups: str, **attributes: Any) -> str:
        """A user (Graph's property names); returns its id. Added to `groups` too."""
        user: JsonObject = {"accountEnabled": True, **(item or {}), **attributes}
        user.setdefault("id", self.new_id())
        user.setdefault("userPrincipalName", f"{user['id']}@{self.default_domain}")
        user.setdefault("displayName", str(user["userPrincipalName"]).split("@")[0])
        self.users[str(user["id"])] = user
        self.log.append(_Change("user", str(user["id"])))
        for group in groups:
            self.add_member(group, str(user["id"]))
        return str(user["id"])

    def update_user(self, user_id: str, **changes: Any) -> None:
        """Change a user's properties (Graph's names)."""
        self.users[user_id].update(changes)
        self.log.append(_Change("user", user_id))

    def delete_user(self, user_id: str) -> None:
        """Delete a user: it leaves its groups, and delta reports it @removed."""
        self.users.pop(user_id, None)
        self.passwords.pop(user_id, None)
        self.fido2.pop(user_id, None)
        for group, members in self.members.items():
            if user_id in members:
                self.remove_member(group, user_id)
        self.log.append(_Change("user", user_id))

    def add_group(self, display_name: str, *members: str, **properties: Any) -> str:
        """A security group; returns its id."""
        group: JsonObject = {"displayName": display_name, "description": None, "mailNickname": None,
                             "mailEnabled": False, "securityEnabled": True, "groupTypes": [], **properties}
        group.setdefault("id", self.new_id())
        gid = str(group["id"])
        self.groups[gid] = group
        self.members[gid] = _Members()
        self.log.append(_Change("group", gid))
        for member in members:
            self.add_member(gid, member)
        return gid

    def add_member(self, group_id: str, member_id: str) -> bool:
        """Add a direct member; False when it already was one."""
        members = self.members.setdefault(group_id, _Members())
        if member_id in members:
            return False
        members.append(member_id)
        self.log.append(_Change("group", group_id, added=[member_id]))
        return True

    def remove_member(self, group_id: str, member_id: str) -> bool:
        """Remove a direct member; False when it was not one."""
        members = self.members.get(group_id, [])
        if member_id not in members:
            return False
        members.remove(member_id)
        self.log.append(_Change("group", group_id, removed=[member_id]))
        return True

    def delete_group(self, group_id: str) -> bool:
        """Delete a group (it leaves the groups it was in); False when there was none."""
        if self.groups.pop(group_id, None) is None and group_id not in self.members:
            return False
        self.members.pop(group_id, None)
        for group, members in self.members.items():
            if group_id in members:
                self.remove_member(group, group_id)
        self.log.append(_Change("group", group_id))
        return True

    def add_passkey(self, user_id: str, credential_id: str | None = None, display_name: str = "Security key", *,
                    method_id: str | None = None) -> Fido2Method:
        """A passkey the user already has (its credential id in base64url)."""
        method = Fido2Method(id=method_id or f"method-{next(self._ids)}", display_name=display_name,
                             aaguid="00000000-0000-0000-0000-000000000000", attestation_level="notAttested")
        self.fido2.setdefault(user_id, []).append(method)
        self.credential_ids[method.id] = credential_id or _b64url(os.urandom(32))
        return method

    def expire_delta(self) -> None:
        """Every delta link issued so far now answers Gone."""
        self.delta_floor = len(self.log) + 1
        self.log.append(_Change("marker", ""))

    def add_domain(self, name: str, *, verified: bool = True, default: bool = False, initial: bool = False) -> None:
        """A domain of the tenant."""
        self.domains[name.lower()] = {"id": name, "authenticationType": "Managed", "isVerified": verified,
                                      "isDefault": default, "isInitial": initial}

    def grant_role(self, role: str, principal_id: str) -> str:
        """Give a directory role (activating it); returns the role's id."""
        role_id = self.role_ids.setdefault(role, self.new_id())
        holders = self.roles.setdefault(role, [])
        if principal_id not in holders:
            holders.append(principal_id)
        return role_id

    @property
    def default_domain(self) -> str:
        """The default domain's name."""
        return next((str(d["id"]) for d in self.domains.values() if d.get("isDefault")),
                    next(iter(self.domains), "contoso.example"))

    # ------------------------------------------------------------------ the ports

    def directory(self) -> MemoryDirectory:
        """DirectoryReader and GroupWriter."""
        return MemoryDirectory(self)

    def passwords_port(self) -> MemoryPasswords:
        """PasswordDirectory."""
        return MemoryPasswords(self)

    def passkeys(self) -> MemoryPasskeys:
        """PasskeyDirectory."""
        return MemoryPasskeys(self)

    def domain_directory(self) -> MemoryDomains:
        """DomainDirectory."""
        return MemoryDomains(self)

    def organization(self) -> MemoryOrganization:
        """TenantDirectory."""
        return MemoryOrganization(self)

    def subscription_api(self) -> MemorySubscriptions:
        """SubscriptionApi."""
        return MemorySubscriptions(self)

    def export(self) -> MemoryExport:
        """ExportDirectory."""
        return MemoryExport(self)

    # ------------------------------------------------------------------ shared reads

    def user_or_404(self, user_id: str) -> JsonObject:
        """The user, or NotFound as Graph's 404."""
        user = self.users.get(user_id)
        if user is None:
            raise NotFound(f"Resource '{user_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return user

    def group_or_404(self, group_id: str) -> JsonObject:
        """The group, or NotFound as Graph's 404."""
        group = self.groups.get(group_id)
        if group is None:
            raise NotFound(f"Resource '{group_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return group

    def roles_of(self, principal_id: str) -> frozenset[str]:
        """Display names of the roles a principal holds, directly or through its groups."""
        within = {g for g, members in self.members.items() if principal_id in members}
        return frozenset(role for role, holders in self.roles.items()
                         if principal_id in holders or within & set(holders))

    def request_id(self) -> str:
        """A Graph request-id."""
        return f"req-{next(self._ids)}"


class _View:
    area = ""

    def __init__(self, tenant: MemoryTenant) -> None:
        self.tenant = tenant
        self.faults = tenant.faults

    def _name(self, name: str) -> str:
        return f"{self.area}.{name}" if self.area else name

    def _call(self, name: str, key: str | None = None) -> None:
        self.faults.before(self._name(name), key)

    def _done(self, name: str, key: str | None = None) -> None:
        self.faults.after(self._name(name), key)


def _sync_user(item: JsonObject) -> SyncUser:
    return SyncUser.from_graph(item, "")


class MemoryDirectory(_View):
    """DirectoryReader and GroupWriter on the tenant; delta links are `memory:<kind>|<position>|<ids>`."""

    area = "directory"

    def __init__(self, tenant: MemoryTenant) -> None:
        super().__init__(tenant)
        self.resource_units = 0

    def _spend(self, units: int = 1) -> None:
        self.resource_units += units

    async def group_id(self, name_or_id: str) -> str:
        self._call("group_id", name_or_id)
        if name_or_id in self.tenant.groups:
            return name_or_id
        return the_group(name_or_id, await self.find_groups(name_or_id))  # the bridge's rule, not Graph's

    def _transitive(self, group_id: str, seen: set[str]) -> list[str]:
        found: list[str] = []
        for member in self.tenant.members.get(group_id, []):
            if member in self.tenant.members:
                if member not in seen:
                    seen.add(member)
                    found += self._transitive(member, seen)
            elif member in self.tenant.users:
                found.append(member)
        return found

    async def transitive_users(self, group_id: str) -> AsyncIterator[SyncUser]:
        self._call("transitive_users", group_id)
        if group_id not in self.tenant.members:
            self.tenant.group_or_404(group_id)
        self._spend(4)
        for user_id in dict.fromkeys(self._transitive(group_id, {group_id})):
            yield _sync_user(self.tenant.users[user_id])

    async def count_users(self, group_id: str) -> int | None:
        self._call("count_users", group_id)
        if group_id not in self.tenant.members:
            self.tenant.group_or_404(group_id)
        self._spend()
        return len(dict.fromkeys(self._transitive(group_id, {group_id})))

    def _member(self, member_id: str, removed: bool = False) -> MemberChange:
        kind = "group" if member_id in self.tenant.members else "user" if member_id in self.tenant.users else None
        return MemberChange(member_id, kind if kind or not removed else "user", removed)

    def _since(self, link: str, kind: str) -> tuple[int, str]:
        prefix, position, ids = [*link.split("|"), "", ""][:3]
        if prefix != f"memory:{kind}":
            raise Gone(f"not a {kind} delta link of this tenant")
        if self.tenant.delta_gone or int(position) < self.tenant.delta_floor:
            raise Gone(f"the {kind} delta token has expired")
        return int(position), ids

    async def groups_delta(self, ids: Sequence[str] | None = None,
                           link: str | None = None) -> DeltaRead[GroupChange]:
        self._call("groups_delta")
        self._spend()
        tenant = self.tenant
        if link:
            since, wanted = self._since(link, "groups")
            chosen = set(wanted.split(","))
            changed: dict[str, list[MemberChange]] = {}
            deleted: set[str] = set()
            for change in tenant.log[since:]:
                if change.kind != "group" or change.id not in chosen:
                    continue
                members = changed.setdefault(change.id, [])
                members += [self._member(m) for m in change.added]
                members += [self._member(m, removed=True) for m in change.removed]
                if change.id not in tenant.members:
                    deleted.add(change.id)
            items = [GroupChange(g, removed=True) if g in deleted else GroupChange(g, members=tuple(m))
                     for g, m in changed.items()]
            return DeltaRead(items, f"memory:groups|{len(tenant.log)}|{wanted}")
        if not ids:
            raise ValueError("groups_delta needs ids or a link")
        found = [GroupChange(g, members=tuple(self._member(m) for m in tenant.members[g]))
                 for g in ids if g in tenant.members]
        return DeltaRead(found, f"memory:groups|{len(tenant.log)}|{','.join(ids)}")

    async def users_delta_latest(self) -> str:
        self._call("users_delta_latest")
        self._spend()
        return f"memory:users|{len(self.tenant.log)}|"

    async def users_delta(self, link: str) -> DeltaRead[UserChange]:
        self._call("users_delta")
        self._spend()
        since, _ = self._since(link, "users")
        items: dict[str, UserChange] = {}
        for change in self.tenant.log[since:]:
            if change.kind != "user":
                continue
            user = self.tenant.users.get(change.id)
            items[change.id] = (UserChange(change.id, attributes={k: user.get(k) for k in USER_FIELDS if k in user})
                                if user is not None else UserChange(change.id, removed=True))
        return DeltaRead(list(items.values()), f"memory:users|{len(self.tenant.log)}|")

    async def users(self, ids: Sequence[str]) -> list[SyncUser]:
        self._call("users")
        self._spend()
        return [_sync_user(self.tenant.users[i]) for i in ids if i in self.tenant.users]

    # -- GroupWriter

    async def find_groups(self, display_name: str) -> list[str]:
        self._call("find_groups")
        return [g for g, group in self.tenant.groups.items() if group["displayName"] == display_name]

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        self._call("create_group")
        group_id = self.tenant.add_group(display_name, mailNickname=mail_nickname, description=description)
        self._done("create_group")
        return group_id

    async def member_ids(self, group_id: str) -> set[str]:
        self._call("member_ids", group_id)
        self.tenant.group_or_404(group_id)
        return set(self.tenant.members[group_id])

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        self._call("add_members", group_id)
        self.tenant.group_or_404(group_id)
        for user_id in user_ids:
            self.tenant.user_or_404(user_id)
            self.tenant.add_member(group_id, user_id)
        self._done("add_members", group_id)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        self._call("remove_member", group_id)
        self.tenant.remove_member(group_id, user_id)
        self._done("remove_member", group_id)

    async def delete_group(self, group_id: str) -> None:
        self._call("delete_group", group_id)
        self.tenant.delete_group(group_id)
        self._done("delete_group", group_id)

    async def group(self, group_id: str) -> JsonObject | None:
        self._call("group", group_id)
        group = self.tenant.groups.get(group_id)
        if group is None:
            return None
        return {k: group.get(k) for k in ("id", "displayName", "description", "mailNickname")}


class MemoryPasswords(_View):
    """PasswordDirectory: `reset` refuses a password the tenant's rules would (shorter than 8 characters)."""

    area = "passwords"

    async def reset(self, user_id: str, password: str) -> str | None:
        self._call("reset", user_id)
        self.tenant.user_or_404(user_id)
        if len(password) < 8:
            raise InvalidInput("The specified password does not comply with password complexity requirements.")
        self.tenant.passwords[user_id] = password
        self._done("reset", user_id)
        return self.tenant.request_id()

    async def admin_roles(self, user_id: str) -> frozenset[str]:
        self._call("admin_roles", user_id)
        return self.tenant.roles_of(user_id)

    async def app_roles(self) -> frozenset[str]:
        self._call("app_roles")
        return self.tenant.roles_of(self.tenant.app_principal)

    async def tenant_name(self) -> str:
        self._call("tenant_name")
        return self.tenant.name


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Either base64 alphabet, with or without padding."""
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_").rstrip("=") + "=" * (-len(text) % 4))


class MemoryPasskeys(_View):
    """PasskeyDirectory as Entra's provisioning API behaves: the policy must be on with self-service set up
    (PermissionDenied otherwise); options carry a fresh base64url challenge and the user's credentials as
    excludeCredentials in padded standard base64 (Graph's quirk); `register` takes only a challenge issued
    to that user, once, and a credential not registered before. `tenant.attestation`, when set, checks the
    rest (raise InvalidInput to refuse)."""

    area = "passkeys"

    def _allowed(self) -> JsonObject:
        policy = self.tenant.fido2_policy
        if policy.get("state") != "enabled":
            raise PermissionDenied("Graph: 403 accessDenied: The FIDO2 authentication method is disabled by policy.")
        if policy.get("isSelfServiceRegistrationAllowed") is False:
            raise PermissionDenied("Graph: 403 accessDenied: Passkey provisioning requires 'Allow self-service set "
                                   "up' in the FIDO2 authentication method policy.")
        return policy

    async def creation_options(self, user_id: str, timeout_minutes: int = 5) -> CreationOptions:
        self._call("creation_options", user_id)
        user = self.tenant.user_or_404(user_id)
        if not 5 <= timeout_minutes <= 43200:
            raise InvalidInput(f"challengeTimeoutMinutes must be 5 to 43,200, not {timeout_minutes}",
                               field="features.passkeys.challengeTimeoutMinutes")
        self._allowed()
        challenge = _b64url(os.urandom(32))
        expires = self.tenant.now() + dt.timedelta(minutes=timeout_minutes)
        self.tenant.challenges[challenge] = (user_id, expires)
        exclude = [{"id": base64.b64encode(_unb64(self.tenant.credential_ids[m.id])).decode(), "type": "public-key",
                    "transports": []} for m in self.tenant.fido2.get(user_id, [])]
        return CreationOptions(public_key={
            "challenge": challenge, "timeout": timeout_minutes * 60000, "attestation": "direct",
            "rp": {"id": "login.microsoftonline.com", "name": "Microsoft"},
            "user": {"id": _b64url(user_id.encode()), "name": user["userPrincipalName"],
                     "displayName": user.get("displayName") or ""},
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
            "excludeCredentials": exclude,
            "authenticatorSelection": {"authenticatorAttachment": "cross-platform", "requireResidentKey": True,
                                       "userVerification": "required"}},
            challenge_expires=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))

    async def register(self, user_id: str, display_name: str, credential: JsonObject) -> Fido2Method:
        self._call("register", user_id)
        self.tenant.user_or_404(user_id)
        policy = self._allowed()
        try:
            client_data = json.loads(_unb64(str(credential["response"]["clientDataJSON"])))
            challenge = _b64url(_unb64(str(client_data["challenge"])))
            credential_id = _b64url(_unb64(str(credential.get("rawId") or credential["id"])))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("Graph: 400 invalidRequest: The publicKeyCredential could not be parsed.") from None
        issued = self.tenant.challenges.get(challenge)
        if issued is None or issued[0] != user_id:
            raise InvalidInput("Graph: 400 invalidRequest: The challenge was not issued for this user.")
        if issued[1] < self.tenant.now():
            raise InvalidInput("Graph: 400 invalidRequest: The challenge has expired.")
        if credential_id in self.tenant.credential_ids.values():
            raise InvalidInput("Graph: 400 invalidRequest: The passkey could not be registered: the credential is "
                               "already registered.")
        if self.tenant.attestation is not None:
            self.tenant.attestation(user_id, credential, copy.deepcopy(policy))
        del self.tenant.challenges[challenge]
        method = Fido2Method(id=_b64url(os.urandom(24)), display_name=display_name,
                             aaguid="00000000-0000-0000-0000-000000000000", model="Memory authenticator",
                             attestation_level="attested" if policy.get("isAttestationEnforced") else "notAttested",
                             created=self.tenant.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                             request_id=self.tenant.request_id())
        self.tenant.fido2.setdefault(user_id, []).append(method)
        self.tenant.credential_ids[method.id] = credential_id
        self._done("register", user_id)
        return method

    async def methods(self, user_id: str) -> list[Fido2Method]:
        self._call("methods", user_id)
        self.tenant.user_or_404(user_id)
        return [replace(m, request_id=None) for m in self.tenant.fido2.get(user_id, [])]

    async def revoke(self, user_id: str, method_id: str) -> Revocation:
        self._call("revoke", user_id)
        methods = self.tenant.fido2.get(user_id, [])
        if not any(m.id == method_id for m in methods):
            return Revocation("already-gone", self.tenant.request_id())
        self.tenant.fido2[user_id] = [m for m in methods if m.id != method_id]
        self.tenant.credential_ids.pop(method_id, None)
        self._done("revoke", user_id)
        return Revocation("revoked", self.tenant.request_id())

    async def policy(self) -> JsonObject:
        self._call("policy")
        return copy.deepcopy(self.tenant.fido2_policy)


#: internalDomainFederation's writable properties (https://learn.microsoft.com/graph/api/resources/internaldomainfederation).
FEDERATION_FIELDS = frozenset({
    "displayName", "issuerUri", "metadataExchangeUri", "passiveSignInUri", "activeSignInUri", "signOutUri",
    "signingCertificate", "nextSigningCertificate", "preferredAuthenticationProtocol", "promptLoginBehavior",
    "isSignedAuthenticationRequestRequired", "federatedIdpMfaBehavior", "passwordResetUri"})


class MemoryDomains(_View):
    """DomainDirectory: one federation configuration per verified, non-initial domain."""

    area = "domains"

    def _domain(self, name: str) -> JsonObject:
        domain = self.tenant.domains.get(name.lower())
        if domain is None:
            raise NotFound(f"Resource '{name}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return domain

    @staticmethod
    def _view(domain: JsonObject) -> JsonObject:
        return {k: v for k, v in domain.items() if k != "federationConfiguration"}

    async def domain(self, name: str) -> JsonObject | None:
        self._call("domain")
        found = self.tenant.domains.get(name.lower())
        return self._view(found) if found is not None else None

    async def domains(self) -> list[JsonObject]:
        self._call("domains")
        return [self._view(d) for d in self.tenant.domains.values()]

    async def federation(self, name: str) -> JsonObject | None:
        self._call("federation")
        found = self.tenant.domains.get(name.lower())
        config = (found or {}).get("federationConfiguration")
        return dict(config) if config else None

    async def people_on_domain(self, name: str) -> tuple[list[str], int]:
        self._call("people_on_domain")
        suffix = "@" + name.lower()
        on_domain = {u["id"]: u for u in self.tenant.users.values()
                     if str(u.get("userPrincipalName") or "").lower().endswith(suffix)}
        admins = {m for holders in self.tenant.roles.values() for m in holders if m in on_domain}
        synced = sum(1 for u in on_domain.values() if u.get("onPremisesSyncEnabled") is True)
        return sorted(str(on_domain[a]["userPrincipalName"]) for a in admins), synced

    async def app_access(self) -> AppAccess:
        self._call("app_access")
        return AppAccess(tuple(sorted(self.tenant.app_permissions)),
                         tuple(sorted(self.tenant.roles_of(self.tenant.app_principal))))

    @staticmethod
    def _checked(body: JsonObject) -> JsonObject:
        unknown = set(body) - FEDERATION_FIELDS - {"@odata.type", "id"}
        if unknown:
            raise InvalidInput(f"Property '{sorted(unknown)[0]}' does not exist on type "
                               "'microsoft.graph.internalDomainFederation'.")
        return {k: v for k, v in body.items() if k in FEDERATION_FIELDS}

    async def create_federation(self, name: str, body: JsonObject) -> GraphResponse:
        self._call("create_federation")
        domain = self._domain(name)
        fields = self._checked(body)
        if not domain.get("isVerified") or domain.get("isInitial"):
            raise InvalidInput(f"Domain '{domain['id']}' cannot be federated (unverified or initial).")
        if domain.get("federationConfiguration"):
            raise Conflict(f"Domain '{domain['id']}' already has a federation configuration; update it instead.")
        for required in ("issuerUri", "passiveSignInUri"):
            if not fields.get(required):
                raise InvalidInput(f"The property '{required}' is required.")
        config: JsonObject = {"id": self.tenant.new_id(), "preferredAuthenticationProtocol": "wsFed",
                              "federatedIdpMfaBehavior": "acceptIfMfaDoneByFederatedIdp", **fields}
        domain["federationConfiguration"] = config
        domain["authenticationType"] = "Federated"
        self._done("create_federation")
        return GraphResponse(201, dict(config), request_id=self.tenant.request_id())

    def _config(self, name: str, config_id: str) -> JsonObject:
        domain = self._domain(name)
        config: JsonObject | None = domain.get("federationConfiguration")
        if not config or config["id"] != config_id:
            raise NotFound(f"Resource '{config_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return config

    async def update_federation(self, name: str, config_id: str, body: JsonObject) -> GraphResponse:
        self._call("update_federation")
        config = self._config(name, config_id)
        config.update(self._checked(body))
        self._done("update_federation")
        return GraphResponse(200, dict(config), request_id=self.tenant.request_id())

    async def delete_federation(self, name: str, config_id: str) -> GraphResponse:
        self._call("delete_federation")
        self._config(name, config_id)
        domain = self._domain(name)
        domain.pop("federationConfiguration")
        domain["authenticationType"] = "Managed"
        self._done("delete_federation")
        return GraphResponse(204, None, request_id=self.tenant.request_id())


class MemoryOrganization(_View):
    """TenantDirectory."""

    area = "organization"

    async def organization(self) -> Organization:
        self._call("organization")
        return Organization(self.tenant.tenant_id, self.tenant.name)

    async def directory_roles(self) -> list[DirectoryRole]:
        self._call("directory_roles")
        return [DirectoryRole(self.tenant.role_ids.setdefault(name, self.tenant.new_id()), name)
                for name in self.tenant.roles]

    async def role_member_ids(self, role_id: str) -> set[str]:
        self._call("role_member_ids", role_id)
        name = next((n for n, i in self.tenant.role_ids.items() if i == role_id), None)
        if name is None:
            raise NotFound(f"Resource '{role_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        return set(self.tenant.roles.get(name, []))

    async def passkey_policy(self) -> JsonObject:
        self._call("passkey_policy")
        return copy.deepcopy(self.tenant.fido2_policy)


#: Graph's longest subscription to users and groups, and the shortest it grants
#: (https://learn.microsoft.com/graph/api/resources/subscription).
MAX_MINUTES, MIN_MINUTES = 41760, 45


class MemorySubscriptions(_View):
    """SubscriptionApi: Graph validates the notification URLs (one in `tenant.unreachable` fails it), refuses an
    expiry past its maximum or in the past, and moves one under 45 minutes to 45 minutes."""

    area = "subscriptions"

    def _expiry(self, expires: dt.datetime) -> dt.datetime:
        now = self.tenant.now()
        if expires > now + dt.timedelta(minutes=MAX_MINUTES, seconds=5):
            raise InvalidInput(f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.")
        if expires <= now:
            raise InvalidInput("Subscription expiration must be in the future.")
        return max(expires, now + dt.timedelta(minutes=MIN_MINUTES)).astimezone(dt.UTC)

    async def create(self, *, resource: str, change_type: str, notification_url: str, lifecycle_url: str,
                     expires: dt.datetime, client_state: str) -> Subscription:
        self._call("create")
        try:
            for url in (notification_url, lifecycle_url):
                if not url.startswith("https://") and not url.startswith(("http://127.0.0.1", "http://localhost")):
                    raise InvalidInput(f"The notification URL {url} must be an https URL.")
                if url in self.tenant.unreachable:
                    raise InvalidInput(f"Subscription validation request failed for {url}: the endpoint could not "
                                       "be reached.")
            found = Subscription(self.tenant.new_id(), resource, self._expiry(expires), notification_url)
        except InvalidInput as err:
            raise Configuration(f"Graph refused the subscription to {resource}: {err.detail}",
                                setting="NOTIFICATION_BASE_URL") from None
        self.tenant.subscriptions[found.id] = found
        self._done("create")
        return found

    def _get(self, subscription_id: str) -> Subscription:
        found = self.tenant.subscriptions.get(subscription_id)
        if found is None:
            raise NotFound(f"The object was not found. Subscription '{subscription_id}'.")
        return found

    async def renew(self, subscription_id: str, expires: dt.datetime) -> Subscription:
        self._call("renew", subscription_id)
        renewed = replace(self._get(subscription_id), expires=self._expiry(expires))
        self.tenant.subscriptions[subscription_id] = renewed
        self._done("renew", subscription_id)
        return renewed

    async def reauthorize(self, subscription_id: str) -> None:
        self._call("reauthorize", subscription_id)
        self._get(subscription_id)

    async def delete(self, subscription_id: str) -> None:
        self._call("delete", subscription_id)
        self.tenant.subscriptions.pop(subscription_id, None)
        self._done("delete", subscription_id)

    async def list(self) -> list[Subscription]:
        self._call("list")
        return list(self.tenant.subscriptions.values())


def _entra_user(item: JsonObject) -> EntraUser:
    return EntraUser(id=str(item["id"]), user_principal_name=str(item.get("userPrincipalName") or ""),
                     mail=item.get("mail"), employee_id=item.get("employeeId"),
                     account_enabled=item.get("accountEnabled") is not False, usage_location=item.get("usageLocation"),
                     display_name=item.get("displayName"), licenses=tuple(item.get("assignedLicenses") or ()),
                     properties={k: item.get(k, [] if k == "businessPhones" else None) for k in USER_PROPERTIES})


def _entra_group(item: JsonObject) -> EntraGroup:
    return EntraGroup(id=str(item["id"]), display_name=str(item.get("displayName") or ""),
                      mail_nickname=item.get("mailNickname"), mail=item.get("mail"),
                      mail_enabled=item.get("mailEnabled") is True,
                      security_enabled=item.get("securityEnabled") is True,
                      group_types=tuple(item.get("groupTypes") or ()), description=item.get("description"))


class MemoryExport(_View):
    """ExportDirectory, with Graph's refusals: an unverified UPN domain, a duplicate UPN, a licence without
    usageLocation or a free seat, a group in itself. Every write is listed in `tenant.faults.calls`."""

    area = "export"
    _KEYS = frozenset({"userPrincipalName", "mail", "employeeId"})

    def _written(self, name: str, object_id: str | None = None, *, key: str | None = None) -> Written:
        self.tenant.export_writes.append((name, str(object_id or key)))
        self._done(name, key)
        return Written(object_id, self.tenant.request_id())

    # ------------------------------------------------------------------ what a test reads

    @property
    def writes(self) -> list[tuple[str, str]]:
        """The writes made through this port, in order: (method, user or group id); a write that changed
        nothing (a member already there, a user already gone) is not one."""
        return list(self.tenant.export_writes)

    @property
    def users(self) -> dict[str, EntraUser]:
        """The tenant's users, as the port reads them."""
        return {user_id: _entra_user(item) for user_id, item in self.tenant.users.items()}

    @property
    def groups(self) -> dict[str, EntraGroup]:
        """The tenant's groups, as the port reads them."""
        return {group_id: _entra_group(item) for group_id, item in self.tenant.groups.items()}

    @property
    def members(self) -> dict[str, set[str]]:
        """Each group's direct member ids."""
        return {group_id: set(members) for group_id, members in self.tenant.members.items()}

    @property
    def owners(self) -> dict[str, set[str]]:
        """Each group's owner ids."""
        return {group_id: set(owners) for group_id, owners in self.tenant.owners.items()}

    @property
    def created(self) -> dict[str, JsonObject]:
        """The body of each user created through this port, its password left out."""
        return dict(self.tenant.created)

    # ------------------------------------------------------------------ the port

    def _principal_or_404(self, object_id: str) -> None:
        """An owner is a user or the bridge's service principal; another id is Graph's 404."""
        if object_id not in self.tenant.users and object_id != self.tenant.app_principal:
            raise NotFound(f"Resource '{object_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")

    async def verified_domains(self) -> list[str]:
        self._call("verified_domains")
        return [str(d["id"]) for d in self.tenant.domains.values() if d.get("isVerified")]

    async def skus(self) -> list[Sku]:
        self._call("skus")
        used = {sku: sum(1 for u in self.tenant.users.values() if sku in (u.get("assignedLicenses") or ()))
                for sku in self.tenant.skus}
        return [Sku(sku, str(s["skuPartNumber"]), int(s["enabled"]) - used[sku]) for sku, s in self.tenant.skus.items()]

    async def user(self, user_id: str) -> EntraUser | None:
        self._call("user", user_id)
        found = self.tenant.users.get(user_id)
        return _entra_user(found) if found is not None else None

    async def find_user(self, attribute: str, value: str) -> EntraUser | None:
        self._call("find_user")
        if attribute not in self._KEYS:
            raise ValueError(f"users are not looked up by {attribute}")
        return next((_entra_user(u) for u in self.tenant.users.values()
                     if str(u.get(attribute) or "").lower() == value.lower()), None)

    async def create_user(self, body: JsonObject) -> Written:
        self._call("create_user")
        upn = str(body["userPrincipalName"])
        if upn.rsplit("@", 1)[-1] not in await self.verified_domains():
            raise InvalidInput("The domain portion of the userPrincipalName property is invalid.")
        if any(str(u.get("userPrincipalName")).lower() == upn.lower() for u in self.tenant.users.values()):
            raise InvalidInput("Another object with the same value for property userPrincipalName already exists.")
        if not isinstance(body.get("passwordProfile"), dict) or not body["passwordProfile"].get("password"):
            raise InvalidInput("Invalid value specified for property 'passwordProfile' of resource 'User'.")
        fields = {k: v for k, v in body.items() if k != "passwordProfile"}
        user_id = self.tenant.add_user(fields)
        profile: JsonObject = dict(body.get("passwordProfile") or {})
        self.tenant.passwords[user_id] = str(profile.pop("password", None) or "")
        self.tenant.created[user_id] = {**copy.deepcopy(fields), "passwordProfile": profile}
        return self._written("create_user", user_id)

    async def update_user(self, user_id: str, body: JsonObject) -> Written:
        self._call("update_user", user_id)
        self.tenant.user_or_404(user_id)
        self.tenant.update_user(user_id, **{k: v for k, v in body.items() if k != "passwordProfile"})
        return self._written("update_user", key=user_id)

    async def delete_user(self, user_id: str) -> Written:
        self._call("delete_user", user_id)
        if user_id not in self.tenant.users:
            return Written(None, None)
        self.tenant.delete_user(user_id)
        return self._written("delete_user", key=user_id)

    async def assign_license(self, user_id: str, sku_id: str) -> Written:
        self._call("assign_license", user_id)
        user = self.tenant.user_or_404(user_id)
        if sku_id not in self.tenant.skus:
            raise InvalidInput(f"License {sku_id} does not correspond to a valid company License.")
        if not user.get("usageLocation"):
            raise InvalidInput("License assignment cannot be done for user with invalid usage location.")
        licenses = list(user.get("assignedLicenses") or ())
        if sku_id not in licenses:
            if next(s for s in await self.skus() if s.sku_id == sku_id).free <= 0:
                raise InvalidInput("License assignment failed because there are no available licenses.")
            self.tenant.update_user(user_id, assignedLicenses=[*licenses, sku_id])
        return self._written("assign_license", key=user_id)

    async def groups_named(self, display_name: str) -> list[EntraGroup]:
        self._call("groups_named")
        return [_entra_group(g) for g in self.tenant.groups.values()
                if str(g["displayName"]).lower() == display_name.lower()]

    async def group(self, group_id: str) -> EntraGroup | None:
        self._call("group", group_id)
        found = self.tenant.groups.get(group_id)
        return _entra_group(found) if found is not None else None

    async def create_group(self, body: JsonObject, *, owners: tuple[str, ...] = ()) -> Written:
        self._call("create_group")
        if len(owners) > 20:
            raise InvalidInput("At most 20 owners can be added in one request.")
        for owner in owners:
            self._principal_or_404(owner)
        properties = {k: v for k, v in body.items() if k != "displayName" and "@" not in k}
        group_id = self.tenant.add_group(str(body["displayName"]), **properties)
        self.tenant.owners[group_id] = list(dict.fromkeys(owners))
        return self._written("create_group", group_id)

    async def update_group(self, group_id: str, body: JsonObject) -> Written:
        self._call("update_group", group_id)
        self.tenant.group_or_404(group_id).update({k: v for k, v in body.items() if "@" not in k})
        return self._written("update_group", key=group_id)

    async def owner_ids(self, group_id: str) -> set[str]:
        self._call("owner_ids", group_id)
        self.tenant.group_or_404(group_id)
        return set(self.tenant.owners.get(group_id, []))

    async def add_owner(self, group_id: str, owner_id: str) -> Written:
        self._call("add_owner", group_id)
        self.tenant.group_or_404(group_id)
        self._principal_or_404(owner_id)
        owners = self.tenant.owners.setdefault(group_id, [])
        if owner_id in owners:
            return Written(None, None)
        owners.append(owner_id)
        return self._written("add_owner", key=group_id)

    async def manager_id(self, user_id: str) -> str | None:
        self._call("manager_id", user_id)
        self.tenant.user_or_404(user_id)
        return self.tenant.managers.get(user_id)

    async def set_manager(self, user_id: str, manager_id: str) -> Written:
        self._call("set_manager", user_id)
        self.tenant.user_or_404(user_id)
        self.tenant.user_or_404(manager_id)
        if manager_id == user_id:
            raise InvalidInput("A user cannot be their own manager.")
        self.tenant.managers[user_id] = manager_id
        return self._written("set_manager", key=user_id)

    async def remove_manager(self, user_id: str) -> Written:
        self._call("remove_manager", user_id)
        if self.tenant.managers.pop(user_id, None) is None:
            return Written(None, None)
        return self._written("remove_manager", key=user_id)

    async def delete_group(self, group_id: str) -> Written:
        self._call("delete_group", group_id)
        if not self.tenant.delete_group(group_id):
            return Written(None, None)
        return self._written("delete_group", key=group_id)

    async def member_ids(self, group_id: str) -> set[str]:
        self._call("member_ids", group_id)
        self.tenant.group_or_404(group_id)
        return set(self.tenant.members[group_id])

    async def add_member(self, group_id: str, member_id: str) -> Written:
        self._call("add_member", group_id)
        self.tenant.group_or_404(group_id)
        if member_id == group_id:
            raise InvalidInput("A group cannot be a member of itself.")
        if member_id not in self.tenant.users and member_id not in self.tenant.groups:
            raise NotFound(f"Resource '{member_id}' does not exist or one of its queried reference-property objects "
                           "are not present.")
        if not self.tenant.add_member(group_id, member_id):
            return Written(None, None)
        return self._written("add_member", key=group_id)

    async def remove_member(self, group_id: str, member_id: str) -> Written:
        self._call("remove_member", group_id)
        if not self.tenant.remove_member(group_id, member_id):
            return Written(None, None)
        return self._written("remove_member", key=group_id)
