"""Entra's side of password rotation, on the Graph gateway.

Implements the PasswordDirectory port; the roles and the organisation are read through organization.py.
The reads that do not change between rotations (the bridge's own directory roles, the organisation's
name) are cached for a few minutes: a rotation run over thousands of users then spends Graph's budget
on the writes that matter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User

from shared.adapters.graph.gateway import GraphApi
from shared.adapters.graph.organization import GraphOrganization
from shared.services.ports import Clock

#: How long the app's own roles and the tenant name are trusted before they are read again.
CACHE_FOR = dt.timedelta(minutes=5)


class GraphPasswordDirectory:
    """Resets passwords and reads the roles that decide who may be reset."""

    def __init__(self, graph: GraphApi, *, own_principal_id: Callable[[], Awaitable[str]], clock: Clock) -> None:
        self._graph = graph
        self._organization = GraphOrganization(graph)
        self._own_principal_id = own_principal_id
        self._clock = clock
        self._lock = asyncio.Lock()
        self._app_roles: tuple[dt.datetime, frozenset[str]] | None = None
        self._tenant_name: tuple[dt.datetime, str] | None = None
        self._roles: tuple[dt.datetime, dict[str, frozenset[str]] | None] | None = None

    async def reset(self, user_id: str, password: str) -> str | None:
        """Set the user's password without forcing a change at next sign-in; returns Graph's request-id."""
        # https://learn.microsoft.com/graph/api/user-update (passwordProfile; 204 No Content on success).
        # Needs User-PasswordProfile.ReadWrite.All and a directory role allowed to reset the target.
        request = self._graph.requests.users.by_user_id(user_id).to_patch_request_information(User(
            password_profile=PasswordProfile(force_change_password_next_sign_in=False, password=password)))
        response = await self._graph.send(request)
        return response.request_id

    async def admin_roles(self, user_id: str) -> frozenset[str]:
        """Display names of the directory roles the user holds directly or through a group.

        One snapshot of the tenant's activated roles and their members serves every rotation for a
        few minutes (a handful of reads instead of one per user). When a role is held by a group,
        membership can be indirect, so the user's own transitive roles are read instead. A stale
        snapshot is safe: Graph refuses a reset the app's role does not allow (403), and the rotation
        is recorded as failed, never applied.
        """
        snapshot = await self._roles_snapshot()
        if snapshot is None:
            # https://learn.microsoft.com/graph/api/user-list-transitivememberof (cast to directoryRole).
            return await self._organization.roles_of_user(user_id)
        return snapshot.get(user_id, frozenset())

    async def _roles_snapshot(self) -> dict[str, frozenset[str]] | None:
        async with self._lock:
            now = self._clock.now()
            if self._roles is not None and now - self._roles[0] <= CACHE_FOR:
                return self._roles[1]
            holders: dict[str, set[str]] = {}
            through_groups = False
            # https://learn.microsoft.com/graph/api/directoryrole-list and directoryrole-list-members
            for role in await self._organization.directory_roles():
                for member, is_group in await self._organization.role_members(role.id):
                    through_groups = through_groups or is_group
                    holders.setdefault(member, set()).add(role.display_name)
            snapshot = None if through_groups else {k: frozenset(v) for k, v in holders.items()}
            self._roles = (now, snapshot)
            return snapshot

    async def app_roles(self) -> frozenset[str]:
        """Display names of the directory roles the bridge's own service principal holds."""
        async with self._lock:
            now = self._clock.now()
            if self._app_roles is None or now - self._app_roles[0] > CACHE_FOR:
                principal = await self._own_principal_id()
                # https://learn.microsoft.com/graph/api/serviceprincipal-list-transitivememberof
                roles = await self._organization.roles_of_principal(principal)
                self._app_roles = (now, roles)
            return self._app_roles[1]

    async def tenant_name(self) -> str:
        """The organisation's display name, a term no generated password may contain."""
        async with self._lock:
            now = self._clock.now()
            if self._tenant_name is None or now - self._tenant_name[0] > CACHE_FOR:
                # https://learn.microsoft.com/graph/api/organization-list
                organization = await self._organization.organization()
                self._tenant_name = (now, organization.display_name or "")
            return self._tenant_name[1]
