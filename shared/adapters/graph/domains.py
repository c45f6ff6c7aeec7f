"""Entra's domains and their federation configuration, on the Graph gateway (implements DomainDirectory).

Reads: https://learn.microsoft.com/graph/api/domain-get, domain-list,
domain-list-federationconfiguration (a collection of at most one internalDomainFederation),
directoryrole-list and directoryrole-list-members (who holds a role), user-list (UPN and
onPremisesSyncEnabled). Writes: domain-post-federationconfiguration (201),
internaldomainfederation-update (PATCH, 204) and internaldomainfederation-delete (204).
The bridge's own access is read from its token's `roles` and its service principal's directory roles.
Requests are built with msgraph-sdk's request builders (the federation bodies as its
`InternalDomainFederation` model); the domain and the configuration are handed to the federation rules
as Graph's properties (shared/domain/federation.py reads them by Graph's names).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from msgraph.generated.models.internal_domain_federation import InternalDomainFederation

from shared.adapters.graph.gateway import GraphApi, select
from shared.adapters.graph.organization import GraphOrganization
from shared.domain.federation import AppAccess
from shared.errors import BridgeError, NotFound
from shared.services.ports import GraphResponse, JsonObject

_USER_FIELDS = ["id", "userPrincipalName", "onPremisesSyncEnabled"]


class GraphDomainDirectory:
    """Implements the federation service's DomainDirectory on one connection's gateway."""

    def __init__(self, graph: GraphApi, *, claims: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._graph = graph
        self._requests = graph.requests
        self._organization = GraphOrganization(graph)
        self._claims = claims

    async def domain(self, name: str) -> JsonObject | None:
        """The domain, or None when the tenant has no such domain."""
        try:
            return _properties(await self._graph.get(
                self._requests.domains.by_domain_id(name).to_get_request_information()))
        except NotFound:
            return None

    async def domains(self) -> list[JsonObject]:
        """Every domain of the tenant."""
        found: list[JsonObject] = []
        async for page in self._graph.pages(self._requests.domains.to_get_request_information()):
            found.extend(_properties(item) for item in page["value"])
        return found

    async def federation(self, name: str) -> JsonObject | None:
        """The domain's internalDomainFederation, or None when it is managed.

        domain-list-federationconfiguration documents 404 when there is no configuration; an empty
        collection means the same.
        """
        try:
            page = await self._graph.get(self._requests.domains.by_domain_id(name).federation_configuration
                                         .to_get_request_information())
        except NotFound:
            return None
        values = page.get("value") or []
        return _properties(values[0]) if values else None

    async def people_on_domain(self, name: str) -> tuple[list[str], int]:
        """UPNs of admin role holders signing in on the domain, and how many users on it are synced."""
        suffix = "@" + name.lower()
        users: dict[str, tuple[str, bool]] = {}
        users_list = self._requests.users
        async for page in self._graph.pages(users_list.to_get_request_information(
                select(users_list, _USER_FIELDS, top=999))):
            for user in page["value"]:
                upn = str(user.get("userPrincipalName") or "")
                if upn.lower().endswith(suffix):
                    users[str(user["id"])] = (upn, user.get("onPremisesSyncEnabled") is True)
        admins: set[str] = set()
        for role in await self._organization.directory_roles():
            admins.update(m for m in await self._organization.role_member_ids(role.id) if m in users)
        return sorted(users[a][0] for a in admins), sum(1 for _, synced in users.values() if synced)

    async def app_access(self) -> AppAccess:
        """The application permissions in the bridge's token and its service principal's directory roles."""
        claims = await self._claims()
        roles: list[str] = []
        principal = str(claims.get("oid") or "")
        if principal:
            try:
                roles = list(await self._organization.roles_of_principal(principal))
            except BridgeError:
                roles = []  # reading roles needs RoleManagement.Read.Directory; the permission check still stands
        return AppAccess(tuple(sorted(str(r) for r in claims.get("roles") or [])), tuple(sorted(roles)))

    async def create_federation(self, name: str, body: JsonObject) -> GraphResponse:
        """POST the configuration (201)."""
        return await self._graph.send(self._requests.domains.by_domain_id(name).federation_configuration
                                      .to_post_request_information(_federation(body)))

    async def update_federation(self, name: str, config_id: str, body: JsonObject) -> GraphResponse:
        """PATCH the configuration (200 with the updated object)."""
        return await self._graph.send(self._configuration(name, config_id).to_patch_request_information(
            _federation(body)))

    async def delete_federation(self, name: str, config_id: str) -> GraphResponse:
        """DELETE the configuration (204); the domain becomes Managed."""
        return await self._graph.send(self._configuration(name, config_id).to_delete_request_information())

    def _configuration(self, name: str, config_id: str) -> Any:
        return (self._requests.domains.by_domain_id(name).federation_configuration
                .by_internal_domain_federation_id(config_id))


def _properties(body: JsonObject) -> JsonObject:
    """A Graph object's properties, without its annotations."""
    return {k: v for k, v in body.items() if not k.startswith("@odata.")}


def _federation(body: JsonObject) -> InternalDomainFederation:
    """The federation properties as msgraph's model; its serializer writes them by Graph's names, with the
    `@odata.type` Graph asks for. Properties the model does not name (beta's passwordResetUri) go as they are."""
    return InternalDomainFederation(additional_data=dict(body))
