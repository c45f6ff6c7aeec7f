"""In-memory fakes of the ports in shared.services.ports, for pure service tests.

They implement the port's contract (ETags, Conflict, NotFound, ordering), not a call script, so a
service tested against them behaves the same against the real adapters (`tests/contracts` checks it).
The storage, vault, queue and audit stand-ins live in `local/memory.py`, which benchmarks use too.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from local.memory import (
    AuditEntry,
    FakeAuditSink,
    FakeBatchEntityStore,
    FakeClock,
    FakeEntityStore,
    FakeSecretStore,
    FakeWorkQueue,
)
from shared.domain.export import USER_PROPERTIES, EntraGroup, EntraUser, Sku
from shared.errors import InvalidInput, NotFound
from shared.services.ports import JsonObject, Written

__all__ = ["AuditEntry", "FakeAuditSink", "FakeBatchEntityStore", "FakeClock", "FakeEntityStore",
           "FakeExportDirectory", "FakeSecretStore", "FakeWorkQueue"]


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


class PathGraph:
    """The Graph adapters' gateway over a fake that answers by path (`get(path)`, `send(method, path, body=)`).

    The adapters build their requests with msgraph-sdk's request builders; this turns each into the path
    relative to the version root (without the function-call `()` the builders write) and its query into
    `params`, so a fake written against paths keeps working.
    """

    base = "https://graph.test"

    def __init__(self, fake: Any) -> None:
        from shared.adapters.graph.gateway import request_builders

        self.fake = fake
        self.requests = request_builders(self.base)

    @staticmethod
    def _split(request: Any) -> tuple[str, dict[str, str]]:
        from urllib.parse import parse_qsl, urlsplit

        from shared.adapters.graph.gateway import url_of

        url = url_of(request, "")
        if url.startswith(("https://", "http://")):
            return url, {}
        parts = urlsplit(url)
        return parts.path.replace("()", ""), dict(parse_qsl(parts.query))

    async def get(self, request: Any, **options: Any) -> JsonObject:
        path, params = self._split(request)
        found: JsonObject = await self.fake.get(path, **({"params": params} if params else {}), **options)
        return found

    async def pages(self, request: Any, **options: Any) -> AsyncIterator[JsonObject]:
        path, params = self._split(request)
        async for page in self.fake.pages(path, **({"params": params} if params else {}), **options):
            yield page

    async def send(self, request: Any, **options: Any) -> Any:
        from shared.adapters.graph.gateway import body_of, method_of

        path, params = self._split(request)
        return await self.fake.send(method_of(request), path, body=body_of(request),
                                    **({"params": params} if params else {}), **options)

    def url(self, request: Any, *, api: str = "v1.0", relative: bool = False) -> str:
        from shared.adapters.graph.gateway import url_of

        return url_of(request, "" if relative else f"{self.base}/{api}")
