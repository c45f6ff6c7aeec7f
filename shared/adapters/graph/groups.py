"""Entra's groups on the Graph gateway: group lookups, transitive members, groups/delta rounds, and the
writes of the enrollment-state groups.

Reads (https://learn.microsoft.com/graph/delta-query-overview, .../graph/api/group-delta,
.../graph/api/group-list-transitivemembers):
- user attributes of a sync group: `transitiveMembers/microsoft.graph.user`, 999 per page;
- the group tree and its changes: `groups/delta` with `$select=members` and `$filter=id eq '...' or ...`
  (at most 50 ids per query); the first round lists every direct member, later rounds only changes.
Writes (enrollment-state groups, https://learn.microsoft.com/graph/api/group-post-groups,
.../graph/api/group-post-members, .../graph/api/group-delete-members): create a security group, add
members 20 at a time with `members@odata.bind`, remove one with `DELETE .../members/{id}/$ref`.
Resource units are estimated from Microsoft's cost table
(https://learn.microsoft.com/graph/throttling-limits; docs/architecture.md, Limits).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from shared.domain.odata import quote
from shared.domain.sync import USER_FIELDS
from shared.errors import Configuration, Conflict, Gone, NotFound, Stop
from shared.services.ports import GraphApi, JsonObject
from shared.services.sync import DeltaRead

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: transitiveMembers costs 5 a page, less one for $select.
RU_TRANSITIVE_PAGE = 4
#: A delta page, and a filtered users list, are "other" reads of two units less $select (floor 1).
RU_DELTA_PAGE = 1
RU_USERS_PAGE = 1
#: Graph's limits: ids per `in (...)` clause; members per `members@odata.bind` PATCH.
IN_CLAUSE_MAX = 15
BIND_MAX = 20
#: Ask for the largest delta pages Graph allows (it may send fewer).
_PAGE_SIZE = {"Prefer": "odata.maxpagesize=999"}


class GraphGroupDirectory:
    """Implements the group half of DirectoryReader and the GroupWriter port."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        #: Delta links are followed only on this connection's own Graph host.
        self._host = _origin(graph.base)
        #: Estimated resource units spent since creation.
        self.resource_units = 0
        #: Graph requests sent since creation.
        self.requests = 0

    # ------------------------------------------------------------------ groups

    async def group_id(self, name_or_id: str) -> str:
        """The object id of a group given by id or exact display name."""
        if _GUID.match(name_or_id):
            return name_or_id
        found = await self.find_groups(name_or_id)
        if not found:
            raise NotFound(f"group {name_or_id!r} does not exist in the tenant (features.sync.groups)")
        if len(found) > 1:
            raise Configuration(f"{len(found)} groups are named {name_or_id!r}: name the group by its object id",
                                setting="CONNECTIONS")
        return found[0]

    async def find_groups(self, display_name: str) -> list[str]:
        """Ids of the groups with exactly this display name."""
        # https://learn.microsoft.com/graph/api/group-list ($filter on displayName)
        body = await self._graph.get("/groups", params={"$filter": f"displayName eq {quote(display_name)}",
                                                         "$select": "id,displayName"})
        self._count(1)
        return [str(g["id"]) for g in body.get("value") or []]

    async def transitive_users(self, group_id: str) -> AsyncIterator[JsonObject]:
        """Every user in the group, directly or through nested groups, with the attributes sync keeps."""
        path = f"/groups/{group_id}/transitiveMembers/microsoft.graph.user"
        async for page in self._graph.pages(path, params={"$select": ",".join(USER_FIELDS), "$top": "999"}):
            self._count(RU_TRANSITIVE_PAGE)
            for item in page["value"]:
                yield item

    async def groups_delta(self, ids: Sequence[str] | None = None, link: str | None = None) -> DeltaRead:
        """A complete groups/delta round: the first for `ids` (all members), or the next from `link`."""
        if link:
            return await self._delta(link, None)
        if not ids:
            raise ValueError("groups_delta needs ids or a link")
        clause = " or ".join(f"id eq {quote(i)}" for i in ids)
        return await self._delta("/groups/delta", {"$select": "members,displayName", "$filter": clause})

    async def _delta(self, path: str, params: dict[str, str] | None) -> DeltaRead:
        if "://" in path and _origin(path) != self._host:
            # A link stored while Graph answered elsewhere (another cloud, or the local stack on another port):
            # it cannot be followed here, so it is as good as expired - the caller reads everything again.
            raise Gone(f"the stored delta link is for {_origin(path)}, not this connection's Graph {self._host}")
        items: list[JsonObject] = []
        link = ""
        async for page in self._graph.pages(path, params=params, headers=_PAGE_SIZE):
            self._count(RU_DELTA_PAGE)
            items.extend(page["value"])
            link = str(page.get("@odata.deltaLink") or "")
        if not link:
            # A round that ends without a deltaLink cannot be continued: treat it as incomplete.
            raise Stop(f"the delta read of {path.split('?')[0]} ended without @odata.deltaLink")
        return DeltaRead(items=items, link=link)

    # ------------------------------------------------------------------ writes (enrollment-state groups)

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        """Create a security group; returns its id."""
        response = await self._graph.send("POST", "/groups", body={
            "displayName": display_name, "mailNickname": mail_nickname, "description": description,
            "mailEnabled": False, "securityEnabled": True, "groupTypes": []})
        self._count(2)
        body = response.body or {}
        return str(body.get("id") or "")

    async def group(self, group_id: str) -> JsonObject | None:
        """The group's id, displayName, description and mailNickname; None when it does not exist."""
        # https://learn.microsoft.com/graph/api/group-get (description and mailNickname are $select-able)
        try:
            found = await self._graph.get(f"/groups/{group_id}",
                                          params={"$select": "id,displayName,description,mailNickname"})
        except NotFound:
            return None
        self._count(1)
        return found

    async def member_ids(self, group_id: str) -> set[str]:
        """Ids of the group's direct members; NotFound when the group does not exist."""
        ids: set[str] = set()
        read = 0
        try:
            async for page in self._graph.pages(f"/groups/{group_id}/members",
                                                params={"$select": "id", "$top": "999"}):
                read += 1
                self._count(2)
                ids.update(str(m["id"]) for m in page["value"])
        except Stop as err:
            # A 404 on the first page is the group missing, not an incomplete read.
            if read == 0 and isinstance(err.__cause__, NotFound):
                raise NotFound(f"group {group_id} does not exist", request_id=err.request_id) from err
            raise
        return ids

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        """Add users to a group, 20 per request."""
        for start in range(0, len(user_ids), BIND_MAX):
            # Absolute URLs on the connection's own Graph host: graph.microsoft.us in US Government,
            # microsoftgraph.chinacloudapi.cn in China (https://learn.microsoft.com/graph/deployments).
            refs = [self._graph.absolute_url(f"/directoryObjects/{u}") for u in user_ids[start:start + BIND_MAX]]
            try:
                await self._graph.send("PATCH", f"/groups/{group_id}", body={"members@odata.bind": refs})
            except Conflict:
                # Someone added one of them meanwhile: add one by one, skipping those already in.
                for ref in refs:
                    try:
                        await self._graph.send("POST", f"/groups/{group_id}/members/$ref",
                                               body={"@odata.id": ref})
                    except Conflict:
                        continue
            self._count(2)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Remove one member; absent counts as removed."""
        with contextlib.suppress(NotFound):
            await self._graph.send("DELETE", f"/groups/{group_id}/members/{user_id}/$ref")
        self._count(2)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group; absent counts as deleted."""
        with contextlib.suppress(NotFound):
            await self._graph.send("DELETE", f"/groups/{group_id}")
        self._count(2)

    def _count(self, units: int) -> None:
        self.resource_units += units
        self.requests += 1


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
