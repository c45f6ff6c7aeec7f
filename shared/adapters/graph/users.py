"""Entra's users on the Graph gateway, for sync (implements DirectoryReader with the groups of groups.py).

- attribute changes and deletions: `users/delta` started with `$deltatoken=latest` (no objects, a link
  from now), so a tenant of any size costs one page when nothing changed
  (https://learn.microsoft.com/graph/api/user-delta);
- users newly in scope: `/users?$filter=id in (...)`, 15 ids per clause.

Answers are parsed into the bridge's records (SyncUser, UserChange), not msgraph's `User` model, for the
cost measured in groups.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.adapters.graph.gateway import select
from shared.adapters.graph.groups import (
    IN_CLAUSE_MAX,
    REMOVED,
    RU_USERS_PAGE,
    GraphGroupDirectory,
    sync_user,
)
from shared.domain.odata import any_of
from shared.domain.sync import USER_FIELDS, UserChange
from shared.services.ports import DeltaRead, JsonObject, SyncUser


def user_change(item: JsonObject) -> UserChange:
    """One user of a users/delta page."""
    return UserChange(str(item.get("id") or ""), REMOVED in item,
                      {k: v for k, v in item.items() if "@" not in k})  # without annotations


def with_query(url: str, **query: str) -> str:
    """`url` with more query parameters (Graph's `$deltatoken`, which no request builder has)."""
    parts = urlsplit(url)
    params = [*parse_qsl(parts.query, keep_blank_values=True), *((f"${k}", v) for k, v in query.items())]
    return urlunsplit(parts._replace(query=urlencode(params, safe="$,'()/:@ ").replace(" ", "%20")))


class GraphDirectoryReader(GraphGroupDirectory):
    """Implements DirectoryReader and GroupWriter on one connection's gateway."""

    async def users_delta_latest(self) -> str:
        """A users/delta link from now, with the attributes sync keeps."""
        delta = self._requests.users.delta
        url = self._graph.url(delta.to_get_request_information(select(delta, USER_FIELDS)))
        read = await self._delta(with_query(url, deltatoken="latest"))
        return read.link

    async def users_delta(self, link: str) -> DeltaRead[UserChange]:
        """Users changed or deleted since `link`."""
        read = await self._delta(link)
        return DeltaRead([user_change(item) for item in read.items], read.link)

    async def users(self, ids: Sequence[str]) -> list[SyncUser]:
        """The attributes of these users (absent ones are left out)."""
        found: list[SyncUser] = []
        users = self._requests.users
        for start in range(0, len(ids), IN_CLAUSE_MAX):
            request = users.to_get_request_information(select(
                users, USER_FIELDS, filter=any_of("id", list(ids[start:start + IN_CLAUSE_MAX]))))
            async for page in self._graph.pages(request):
                self._count(RU_USERS_PAGE)
                found.extend(sync_user(item) for item in page["value"])
        return found
