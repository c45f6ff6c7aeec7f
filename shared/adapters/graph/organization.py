"""The organization and its directory roles on the Graph gateway (implements TenantDirectory).

- https://learn.microsoft.com/graph/api/organization-list (the tenant's one organization),
- https://learn.microsoft.com/graph/api/directoryrole-list and directoryrole-list-members (activated roles
  and who holds them; RoleManagement.Read.Directory),
- https://learn.microsoft.com/graph/api/serviceprincipal-list-transitivememberof and
  user-list-transitivememberof, cast to directoryRole (the roles an identity holds, through groups too),
- https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get (the passkey policy).

The organization and the roles are parsed into msgraph's models. Role members are read as ids and types
only: a member parsed into msgraph's `User` model took 17 ms of CPU on this machine (groups.py).
"""

from __future__ import annotations

from typing import Any

from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.directory_role import DirectoryRole as GraphDirectoryRole
from msgraph.generated.models.organization import Organization as GraphOrganizationModel

from shared.adapters.graph.fido2 import GraphPasskeyDirectory
from shared.adapters.graph.gateway import GraphApi, select
from shared.services.ports import DirectoryRole, JsonObject, Organization

#: A role member's type, as Graph annotates it.
ODATA_TYPE = "@odata.type"


def parsed(body: JsonObject, model: Any) -> Any:
    """A Graph answer parsed into an msgraph model (kiota's JSON parse node)."""
    return JsonParseNode(body).get_object_value(model)


class GraphOrganization:
    """One connection's organization and directory roles."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        self._requests = graph.requests

    async def organization(self) -> Organization:
        """The tenant's organization (id and display name)."""
        organization = self._requests.organization
        body = await self._graph.get(organization.to_get_request_information(
            select(organization, ["id", "displayName"])))
        found = [parsed(item, GraphOrganizationModel) for item in body.get("value") or []]
        first = found[0] if found else GraphOrganizationModel()
        return Organization(id=str(first.id or ""), display_name=first.display_name)

    async def verified_domains(self) -> list[str]:
        """The organization's verified domain names (Organization.Read.All, no Domain.Read.All needed)."""
        organization = self._requests.organization
        body = await self._graph.get(organization.to_get_request_information(
            select(organization, ["verifiedDomains"])))
        return [str(domain.name) for item in body.get("value") or []
                for domain in parsed(item, GraphOrganizationModel).verified_domains or [] if domain.name]

    async def directory_roles(self) -> list[DirectoryRole]:
        """Every activated directory role."""
        roles: list[DirectoryRole] = []
        directory_roles = self._requests.directory_roles
        async for page in self._graph.pages(directory_roles.to_get_request_information(
                select(directory_roles, ["id", "displayName"]))):
            for item in page["value"]:
                role = parsed(item, GraphDirectoryRole)
                roles.append(DirectoryRole(id=str(role.id or ""), display_name=str(role.display_name or "")))
        return roles

    async def role_members(self, role_id: str) -> list[tuple[str, bool]]:
        """(object id, whether it is a group) of each direct member of a role."""
        members = self._requests.directory_roles.by_directory_role_id(role_id).members
        found: list[tuple[str, bool]] = []
        async for page in self._graph.pages(members.to_get_request_information(select(members, ["id"]))):
            found += [(str(m["id"]), str(m.get(ODATA_TYPE, "")).endswith("group")) for m in page["value"]]
        return found

    async def role_member_ids(self, role_id: str) -> set[str]:
        """Object ids of a role's direct members."""
        return {member for member, _ in await self.role_members(role_id)}

    async def roles_of_principal(self, principal_id: str) -> frozenset[str]:
        """Display names of the directory roles a service principal holds, directly or through groups."""
        roles = self._requests.service_principals.by_service_principal_id(principal_id).transitive_member_of
        return await self._role_names(roles.graph_directory_role)

    async def roles_of_user(self, user_id: str) -> frozenset[str]:
        """Display names of the directory roles a user holds, directly or through groups."""
        roles = self._requests.users.by_user_id(user_id).transitive_member_of
        return await self._role_names(roles.graph_directory_role)

    async def _role_names(self, builder: Any) -> frozenset[str]:
        names: set[str] = set()
        async for page in self._graph.pages(builder.to_get_request_information(select(builder, ["displayName"]))):
            for item in page.get("value", []):
                role = parsed(item, GraphDirectoryRole)
                if role.display_name:
                    names.add(str(role.display_name))
        return frozenset(names)

    async def passkey_policy(self) -> JsonObject:
        """The tenant's FIDO2 method configuration."""
        return await GraphPasskeyDirectory(self._graph).policy()
