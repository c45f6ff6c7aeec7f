"""Entra's domains and their federation configuration, on the GraphApi port.

Reads: https://learn.microsoft.com/graph/api/domain-get, domain-list,
domain-list-federationconfiguration (a collection of at most one internalDomainFederation),
directoryrole-list and directoryrole-list-members (who holds a role), user-list (UPN and
onPremisesSyncEnabled). Writes: domain-post-federationconfiguration (201),
internaldomainfederation-update (PATCH, 204) and internaldomainfederation-delete (204).
The bridge's own access is read from its token's `roles` and its service principal's directory roles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared.domain.federation import AppAccess
from shared.errors import BridgeError, NotFound
from shared.services.ports import GraphApi, GraphResponse, JsonObject

_USER_FIELDS = {"$select": "id,userPrincipalName,onPremisesSyncEnabled", "$top": "999"}


class GraphDomainDirectory:
    """Implements the federation service's DomainDirectory on one connection's gateway."""

    def __init__(self, graph: GraphApi, *, claims: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._graph = graph
        self._claims = claims

    async def domain(self, name: str) -> JsonObject | None:
        """The domain, or None when the tenant has no such domain."""
        try:
            return await self._graph.get(f"/domains/{name}")
        except NotFound:
            return None

    async def domains(self) -> list[JsonObject]:
        """Every domain of the tenant."""
        found: list[JsonObject] = []
        async for page in self._graph.pages("/domains"):
            found.extend(page["value"])
        return found

    async def federation(self, name: str) -> JsonObject | None:
        """The domain's internalDomainFederation, or None when it is managed.

        domain-list-federationconfiguration documents 404 when there is no configuration; an empty
        collection means the same.
        """
        try:
            page = await self._graph.get(f"/domains/{name}/federationConfiguration")
        except NotFound:
            return None
        values = page.get("value") or []
        return dict(values[0]) if values else None

    async def people_on_domain(self, name: str) -> tuple[list[str], int]:
        """UPNs of admin role holders signing in on the domain, and how many users on it are synced."""
        suffix = "@" + name.lower()
        users: dict[str, tuple[str, bool]] = {}
        async for page in self._graph.pages("/users", params=_USER_FIELDS):
            for user in page["value"]:
                upn = str(user.get("userPrincipalName") or "")
                if upn.lower().endswith(suffix):
                    users[str(user["id"])] = (upn, user.get("onPremisesSyncEnabled") is True)
        admins: set[str] = set()
        async for page in self._graph.pages("/directoryRoles", params={"$select": "id,displayName"}):
            for role in page["value"]:
                async for members in self._graph.pages(f"/directoryRoles/{role['id']}/members",
                                                       params={"$select": "id"}):
                    admins.update(str(m["id"]) for m in members["value"] if str(m["id"]) in users)
        return sorted(users[a][0] for a in admins), sum(1 for _, synced in users.values() if synced)

    async def app_access(self) -> AppAccess:
        """The application permissions in the bridge's token and its service principal's directory roles."""
        claims = await self._claims()
        roles: list[str] = []
        principal = str(claims.get("oid") or "")
        if principal:
            path = f"/servicePrincipals/{principal}/transitiveMemberOf/microsoft.graph.directoryRole"
            try:
                async for page in self._graph.pages(path, params={"$select": "displayName"}):
                    roles.extend(str(r["displayName"]) for r in page["value"] if r.get("displayName"))
            except BridgeError:
                roles = []  # reading roles needs RoleManagement.Read.Directory; the permission check still stands
        return AppAccess(tuple(sorted(str(r) for r in claims.get("roles") or [])), tuple(sorted(roles)))

    async def create_federation(self, name: str, body: JsonObject) -> GraphResponse:
        """POST the configuration (201)."""
        return await self._graph.send("POST", f"/domains/{name}/federationConfiguration",
                                      body={"@odata.type": "#microsoft.graph.internalDomainFederation", **body})

    async def update_federation(self, name: str, config_id: str, body: JsonObject) -> GraphResponse:
        """PATCH the configuration (200 with the updated object)."""
        return await self._graph.send("PATCH", f"/domains/{name}/federationConfiguration/{config_id}",
                                      body={"@odata.type": "#microsoft.graph.internalDomainFederation", **body})

    async def delete_federation(self, name: str, config_id: str) -> GraphResponse:
        """DELETE the configuration (204); the domain becomes Managed."""
        return await self._graph.send("DELETE", f"/domains/{name}/federationConfiguration/{config_id}")
