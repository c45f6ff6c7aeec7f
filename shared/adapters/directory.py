"""What sync reads from Entra, on the GraphApi port.

Group scope is read through `transitiveMembers` cast to users, which resolves nesting to any depth
server-side in one paged read per sync group
(https://learn.microsoft.com/graph/api/group-list-transitivemembers). Display names are resolved
with an OData filter, quotes escaped as Graph requires.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from shared.domain.odata import quote
from shared.domain.sync import USER_FIELDS
from shared.errors import Configuration, NotFound
from shared.services.ports import GraphApi, JsonObject

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: Resource units Graph charges per page (DESIGN.md section 8), less one for $select.
RU_PER_TRANSITIVE_PAGE = 4


class GraphDirectoryReader:
    """Implements shared.services.sync.DirectoryReader."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        #: Estimated resource units spent since creation.
        self.resource_units = 0

    async def group_id(self, name_or_id: str) -> str:
        """The object id of a group given by id or exact display name."""
        if _GUID.match(name_or_id):
            return name_or_id
        # https://learn.microsoft.com/graph/api/group-list ($filter on displayName)
        body = await self._graph.get("/groups", params={"$filter": f"displayName eq {quote(name_or_id)}",
                                                         "$select": "id,displayName"})
        self.resource_units += 1
        found = body.get("value") or []
        if not found:
            raise NotFound(f"group {name_or_id!r} does not exist in the tenant (features.sync.groups)")
        if len(found) > 1:
            raise Configuration(f"{len(found)} groups are named {name_or_id!r}: name the sync group by its object id",
                                setting="CONNECTIONS")
        return str(found[0]["id"])

    async def transitive_users(self, group_id: str) -> AsyncIterator[JsonObject]:
        """Every user in the group, directly or through nested groups."""
        path = f"/groups/{group_id}/transitiveMembers/microsoft.graph.user"
        async for page in self._graph.pages(path, params={"$select": ",".join(USER_FIELDS), "$top": "999"}):
            self.resource_units += RU_PER_TRANSITIVE_PAGE
            for item in page["value"]:
                yield item

    async def transitive_user_ids(self, group_id: str) -> set[str]:
        """The ids of every user in the group, nested included."""
        path = f"/groups/{group_id}/transitiveMembers/microsoft.graph.user"
        ids: set[str] = set()
        async for page in self._graph.pages(path, params={"$select": "id", "$top": "999"}):
            self.resource_units += RU_PER_TRANSITIVE_PAGE
            ids.update(str(item["id"]) for item in page["value"])
        return ids
