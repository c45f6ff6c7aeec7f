"""Entra's users on the Graph gateway, for sync (implements DirectoryReader with the groups of groups.py).

- attribute changes and deletions: `users/delta` started with `$deltatoken=latest` (no objects, a link
  from now), so a tenant of any size costs one page when nothing changed
  (https://learn.microsoft.com/graph/api/user-delta);
- users newly in scope: `/users?$filter=id in (...)`, 15 ids per clause.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.adapters.graph.groups import IN_CLAUSE_MAX, RU_USERS_PAGE, GraphGroupDirectory
from shared.domain.odata import any_of
from shared.domain.sync import USER_FIELDS
from shared.services.ports import JsonObject
from shared.services.sync import DeltaRead


class GraphDirectoryReader(GraphGroupDirectory):
    """Implements DirectoryReader and GroupWriter on one connection's gateway."""

    # ------------------------------------------------------------------ users

    async def users_delta_latest(self) -> str:
        """A users/delta link from now, with the attributes sync keeps."""
        read = await self._delta("/users/delta", {"$select": ",".join(USER_FIELDS), "$deltatoken": "latest"})
        return read.link

    async def users_delta(self, link: str) -> DeltaRead:
        """Users changed or deleted since `link`."""
        return await self._delta(link, None)

    async def users(self, ids: Sequence[str]) -> list[JsonObject]:
        """The attributes of these users (absent ones are left out)."""
        found: list[JsonObject] = []
        for start in range(0, len(ids), IN_CLAUSE_MAX):
            params = {"$filter": any_of("id", list(ids[start:start + IN_CLAUSE_MAX])),
                      "$select": ",".join(USER_FIELDS)}
            async for page in self._graph.pages("/users", params=params):
                self._count(RU_USERS_PAGE)
                found.extend(page["value"])
        return found

