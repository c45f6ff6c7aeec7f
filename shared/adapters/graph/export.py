"""Entra as the export engine reads and writes it, on a connection's Graph gateway (implements ExportDirectory).

- users: https://learn.microsoft.com/graph/api/user-post-users (accountEnabled, displayName, mailNickname,
  userPrincipalName, passwordProfile required), user-list (`$filter` eq on userPrincipalName, mail,
  employeeId), user-update, user-delete, user-assignlicense; subscribedsku-list for free seats; user-list-manager,
  user-post-manager (`PUT manager/$ref`), user-delete-manager.
- groups: group-post-groups (`owners@odata.bind`), group-list (`$filter` on displayName), group-update,
  group-delete, group-post-members (`members/$ref`), group-delete-members, group-list-owners, group-post-owners.
- domains: organization-get (`verifiedDomains`).

Requests are built with msgraph-sdk's request builders (bodies as its `User` and `Group` models, carrying the
properties the export rules chose); SKUs and domains come from licenses.py and organization.py.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from msgraph.generated.models.group import Group
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.models.reference_update import ReferenceUpdate
from msgraph.generated.models.user import User

from shared.adapters.graph.gateway import GraphApi, select
from shared.adapters.graph.groups import already_member
from shared.adapters.graph.licenses import GraphLicenses
from shared.adapters.graph.organization import GraphOrganization
from shared.domain.export import USER_PROPERTIES, EntraGroup, EntraUser, Sku
from shared.domain.odata import quote
from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import GraphResponse, JsonObject, Written

_USER_SELECT = ["id", "userPrincipalName", "accountEnabled", "usageLocation", "assignedLicenses", *USER_PROPERTIES]
_GROUP_SELECT = ["id", "displayName", "mailNickname", "mail", "mailEnabled", "securityEnabled", "groupTypes",
                 "description"]
_USER_KEYS = {"userPrincipalName", "mail", "employeeId"}
DOMAINS_TTL = 60.0


def _user(body: JsonObject) -> EntraUser:
    return EntraUser(id=str(body["id"]), user_principal_name=str(body.get("userPrincipalName") or ""),
                     mail=body.get("mail"), employee_id=body.get("employeeId"),
                     account_enabled=body.get("accountEnabled") is not False, usage_location=body.get("usageLocation"),
                     display_name=body.get("displayName"),
                     licenses=tuple(str(a.get("skuId")) for a in body.get("assignedLicenses") or []),
                     properties={k: body.get(k) for k in USER_PROPERTIES})


def _group(body: JsonObject) -> EntraGroup:
    return EntraGroup(id=str(body["id"]), display_name=str(body.get("displayName") or ""),
                      mail_nickname=body.get("mailNickname"), mail=body.get("mail"),
                      mail_enabled=body.get("mailEnabled") is True,
                      security_enabled=body.get("securityEnabled") is True,
                      group_types=tuple(str(t) for t in body.get("groupTypes") or []),
                      description=body.get("description"))


def _written(response: GraphResponse) -> Written:
    body: dict[str, Any] = response.body or {}
    return Written(str(body["id"]) if body.get("id") else None, response.request_id)


class GraphExportDirectory:
    """ExportDirectory on one connection's gateway."""

    def __init__(self, graph: GraphApi, *, domains_ttl: float = DOMAINS_TTL) -> None:
        self._graph = graph
        self._requests = graph.requests
        self._licenses = GraphLicenses(graph)
        self._organization = GraphOrganization(graph)
        self._domains_ttl = domains_ttl
        self._domains: tuple[float, list[str]] | None = None

    async def verified_domains(self) -> list[str]:
        """The tenant's verified domain names, from the organization (Organization.Read.All, which export holds,
        rather than Domain.Read.All: https://learn.microsoft.com/graph/api/resources/organization).

        Kept for DOMAINS_TTL seconds: every SCIM create checks its userName against them, and a tenant's domains
        change rarely (a domain verified a minute ago is accepted a minute later)."""
        now = time.monotonic()
        if self._domains is not None and now - self._domains[0] < self._domains_ttl:
            return list(self._domains[1])
        found = await self._organization.verified_domains()
        self._domains = (now, found)
        return list(found)

    async def skus(self) -> list[Sku]:
        """Subscribed SKUs with free seats = prepaidUnits.enabled - consumedUnits."""
        return await self._licenses.skus()

    async def user(self, user_id: str) -> EntraUser | None:
        """A user by id, or None."""
        try:
            builder = self._requests.users.by_user_id(user_id)
            return _user(await self._graph.get(builder.to_get_request_information(select(builder, _USER_SELECT))))
        except NotFound:
            return None

    async def find_user(self, attribute: str, value: str) -> EntraUser | None:
        """The user whose attribute equals value (the first, by Graph's order), or None."""
        if attribute not in _USER_KEYS:
            raise ValueError(f"users are not looked up by {attribute}")
        users = self._requests.users
        body = await self._graph.get(users.to_get_request_information(select(
            users, _USER_SELECT, filter=f"{attribute} eq {quote(value)}")))
        values = body.get("value") or []
        return _user(values[0]) if values else None

    async def create_user(self, body: JsonObject) -> Written:
        """Create a user (the body carries its one-time password; it is not kept anywhere)."""
        return _written(await self._graph.send(self._requests.users.to_post_request_information(
            User(additional_data=dict(body)))))

    async def update_user(self, user_id: str, body: JsonObject) -> Written:
        """PATCH a user."""
        return _written(await self._graph.send(self._requests.users.by_user_id(user_id).to_patch_request_information(
            User(additional_data=dict(body)))))

    async def delete_user(self, user_id: str) -> Written:
        """Delete a user; absent counts as deleted."""
        try:
            return _written(await self._graph.send(
                self._requests.users.by_user_id(user_id).to_delete_request_information()))
        except NotFound:
            return Written(None, None)

    async def assign_license(self, user_id: str, sku_id: str) -> Written:
        """Add one license, removing none."""
        return await self._licenses.assign(user_id, sku_id)

    async def groups_named(self, display_name: str) -> list[EntraGroup]:
        """Every group of this displayName."""
        found: list[EntraGroup] = []
        groups = self._requests.groups
        async for page in self._graph.pages(groups.to_get_request_information(select(
                groups, _GROUP_SELECT, filter=f"displayName eq {quote(display_name)}"))):
            found.extend(_group(g) for g in page["value"])
        return found

    async def group(self, group_id: str) -> EntraGroup | None:
        """A group by id, or None."""
        try:
            builder = self._requests.groups.by_group_id(group_id)
            return _group(await self._graph.get(builder.to_get_request_information(select(builder, _GROUP_SELECT))))
        except NotFound:
            return None

    async def create_group(self, body: JsonObject, *, owners: tuple[str, ...] = ()) -> Written:
        """Create a group; owners are bound in the same request (`owners@odata.bind`, group-post-groups)."""
        data = dict(body)
        if owners:
            data["owners@odata.bind"] = [self._object_url(o) for o in owners]
        return _written(await self._graph.send(self._requests.groups.to_post_request_information(
            Group(additional_data=data))))

    async def update_group(self, group_id: str, body: JsonObject) -> Written:
        """PATCH a group (group-update)."""
        return _written(await self._graph.send(self._requests.groups.by_group_id(group_id).to_patch_request_information(
            Group(additional_data=dict(body)))))

    async def owner_ids(self, group_id: str) -> set[str]:
        """The owners' ids (group-list-owners)."""
        ids: set[str] = set()
        owners = self._requests.groups.by_group_id(group_id).owners
        async for page in self._graph.pages(owners.to_get_request_information(select(owners, ["id"]))):
            ids.update(str(m["id"]) for m in page["value"])
        return ids

    async def add_owner(self, group_id: str, owner_id: str) -> Written:
        """Add an owner (group-post-owners); already an owner counts as added."""
        try:
            response = await self._graph.send(self._requests.groups.by_group_id(group_id).owners.ref
                                              .to_post_request_information(
                                                  ReferenceCreate(odata_id=self._object_url(owner_id))))
        except InvalidInput as exc:
            if "already exist" not in exc.detail:
                raise
            return Written(None, None)
        return Written(None, response.request_id)

    async def manager_id(self, user_id: str) -> str | None:
        """The manager's id (user-list-manager), None when the user has none (404)."""
        manager = self._requests.users.by_user_id(user_id).manager
        try:
            body = await self._graph.get(manager.to_get_request_information(select(manager, ["id"])))
        except NotFound:
            return None
        return str(body["id"]) if body.get("id") else None

    async def set_manager(self, user_id: str, manager_id: str) -> Written:
        """Set the manager (user-post-manager: `PUT manager/$ref`)."""
        ref = self._graph.url(self._requests.users.by_user_id(manager_id).to_get_request_information())
        response = await self._graph.send(self._requests.users.by_user_id(user_id).manager.ref
                                          .to_put_request_information(ReferenceUpdate(odata_id=ref)))
        return Written(None, response.request_id)

    async def remove_manager(self, user_id: str) -> Written:
        """Clear the manager (user-delete-manager); none counts as cleared."""
        with contextlib.suppress(NotFound):
            response = await self._graph.send(self._requests.users.by_user_id(user_id).manager.ref
                                              .to_delete_request_information())
            return Written(None, response.request_id)
        return Written(None, None)

    def _object_url(self, object_id: str) -> str:
        """A directory object's URL on this connection's Graph host, for `@odata.bind` and `@odata.id`."""
        return self._graph.url(self._requests.directory_objects.by_directory_object_id(object_id)
                               .to_get_request_information())

    async def delete_group(self, group_id: str) -> Written:
        """Delete a group; absent counts as deleted."""
        try:
            return _written(await self._graph.send(
                self._requests.groups.by_group_id(group_id).to_delete_request_information()))
        except NotFound:
            return Written(None, None)

    async def member_ids(self, group_id: str) -> set[str]:
        """Direct members' ids."""
        ids: set[str] = set()
        members = self._requests.groups.by_group_id(group_id).members
        async for page in self._graph.pages(members.to_get_request_information(select(members, ["id"], top=999))):
            ids.update(str(m["id"]) for m in page["value"])
        return ids

    async def add_member(self, group_id: str, member_id: str) -> Written:
        """Add a member; already a member counts as added."""
        try:
            response = await self._graph.send(self._requests.groups.by_group_id(group_id).members.ref
                                              .to_post_request_information(
                                                  ReferenceCreate(odata_id=self._object_url(member_id))))
        except (Conflict, InvalidInput) as err:
            if not already_member(err):
                raise
            return Written(None, None)
        return Written(None, response.request_id)

    async def remove_member(self, group_id: str, member_id: str) -> Written:
        """Remove a member; absent counts as removed."""
        with contextlib.suppress(NotFound):
            response = await self._graph.send(self._requests.groups.by_group_id(group_id).members
                                              .by_directory_object_id(member_id).ref.to_delete_request_information())
            return Written(None, response.request_id)
        return Written(None, None)
