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

Requests are built with msgraph-sdk's request builders. Answers of the sync reads are parsed into the
bridge's records (SyncUser, GroupChange), not msgraph models: parsing one user into msgraph's `User`
model took 17 ms of CPU on this machine (a 999-user page 16 s), so the 100,000-user import
(`python -m bench.sync --users 100000`, 20.9 s) would take about 27 minutes. Smaller answers (a
group) are parsed into msgraph models.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.group import Group
from msgraph.generated.models.reference_create import ReferenceCreate

from shared.adapters.graph.gateway import GraphApi, Request, select
from shared.domain.odata import quote
from shared.domain.sync import USER_FIELDS, GroupChange, MemberChange
from shared.errors import BridgeError, Configuration, Conflict, Gone, InvalidInput, NotFound, Stop
from shared.services.ports import DeltaRead, JsonObject, SyncUser

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def the_group(name: str, found: Sequence[str]) -> str:
    """The one group of `found` (the ids of the groups with display name `name`): NotFound when there is none,
    Configuration when the name is not unique."""
    if not found:
        raise NotFound(f"group {name!r} does not exist in the tenant (features.sync.groups)")
    if len(found) > 1:
        raise Configuration(f"{len(found)} groups are named {name!r}: name the group by its object id",
                            setting="CONNECTIONS")
    return found[0]
#: transitiveMembers costs 5 a page, less one for $select.
RU_TRANSITIVE_PAGE = 4
#: A delta page, and a filtered users list, are "other" reads of two units less $select (floor 1).
RU_DELTA_PAGE = 1
RU_USERS_PAGE = 1
#: Graph's limits: ids per `in (...)` clause; members per `members@odata.bind` PATCH.
IN_CLAUSE_MAX = 15
BIND_MAX = 20
#: Ask for the largest delta pages Graph allows (it may send fewer).
PAGE_SIZE = {"Prefer": "odata.maxpagesize=999"}
#: Graph's annotations on a delta item and its members (https://learn.microsoft.com/graph/delta-query-overview).
REMOVED, MEMBERS_DELTA, ODATA_TYPE = "@removed", "members@delta", "@odata.type"
_KINDS = {"#microsoft.graph.user": "user", "#microsoft.graph.group": "group"}


def sync_user(item: JsonObject) -> SyncUser:
    """A user object of a Graph answer as sync keeps it."""
    return SyncUser.from_graph(item, "")


def member_change(item: JsonObject) -> MemberChange:
    """One entry of `members@delta` (or of a members list)."""
    kind = _KINDS.get(str(item.get(ODATA_TYPE) or ""))
    if kind is None and ODATA_TYPE not in item and "userPrincipalName" in item:
        kind = "user"
    return MemberChange(str(item.get("id") or ""), kind, REMOVED in item)


def group_change(item: JsonObject) -> GroupChange:
    """One group of a groups/delta page."""
    return GroupChange(str(item.get("id") or ""), REMOVED in item,
                       tuple(member_change(m) for m in item.get(MEMBERS_DELTA) or []))


class GraphGroupDirectory:
    """Implements the group half of DirectoryReader, and GroupWriter."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        self._requests = graph.requests
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
        return the_group(name_or_id, await self.find_groups(name_or_id))

    async def find_groups(self, display_name: str) -> list[str]:
        """Ids of the groups with exactly this display name."""
        # https://learn.microsoft.com/graph/api/group-list ($filter on displayName)
        groups = self._requests.groups
        body = await self._graph.get(groups.to_get_request_information(select(
            groups, ["id", "displayName"], filter=f"displayName eq {quote(display_name)}")))
        self._count(1)
        return [str(g["id"]) for g in body.get("value") or []]

    async def transitive_users(self, group_id: str) -> AsyncIterator[SyncUser]:
        """Every user in the group, directly or through nested groups, with the attributes sync keeps."""
        users = self._requests.groups.by_group_id(group_id).transitive_members.graph_user
        request = users.to_get_request_information(select(users, USER_FIELDS, top=999))
        async for page in self._graph.pages(request):
            self._count(RU_TRANSITIVE_PAGE)
            for item in page["value"]:
                yield sync_user(item)

    async def count_users(self, group_id: str) -> int | None:
        """Entra's count of the group's users, nested groups included: an advanced query
        (`ConsistencyLevel: eventual`, https://learn.microsoft.com/graph/aad-advanced-queries), so it may lag
        recent changes (https://learn.microsoft.com/graph/api/group-list-transitivemembers, "Get only a count of
        transitive membership")."""
        count = self._requests.groups.by_group_id(group_id).transitive_members.graph_user.count
        body = await self._graph.get(count.to_get_request_information(), headers={"ConsistencyLevel": "eventual"})
        self._count(1)
        value = body.get("value")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    async def groups_delta(self, ids: Sequence[str] | None = None,
                           link: str | None = None) -> DeltaRead[GroupChange]:
        """A complete groups/delta round: the first for `ids` (all members), or the next from `link`."""
        if link:
            read = await self._delta(link)
        elif not ids:
            raise ValueError("groups_delta needs ids or a link")
        else:
            clause = " or ".join(f"id eq {quote(i)}" for i in ids)
            delta = self._requests.groups.delta
            read = await self._delta(delta.to_get_request_information(select(
                delta, ["members", "displayName"], filter=clause)))
        return DeltaRead([group_change(item) for item in read.items], read.link)

    async def _delta(self, request: Request) -> DeltaRead[JsonObject]:
        if isinstance(request, str) and _origin(request) != self._host:
            # A link stored while Graph answered elsewhere (another cloud, or the local stack on another port):
            # it cannot be followed here, so it is as good as expired - the caller reads everything again.
            raise Gone(f"the stored delta link is for {_origin(request)}, not this connection's Graph {self._host}")
        items: list[JsonObject] = []
        link = ""
        async for page in self._graph.pages(request, headers=PAGE_SIZE):
            self._count(RU_DELTA_PAGE)
            items.extend(page["value"])
            link = str(page.get("@odata.deltaLink") or "")
        if not link:
            # A round that ends without a deltaLink cannot be continued: treat it as incomplete.
            where = urlsplit(request if isinstance(request, str) else self._graph.url(request)).path
            raise Stop(f"the delta read of {where} ended without @odata.deltaLink")
        return DeltaRead(items, link)

    # ------------------------------------------------------------------ writes (enrollment-state groups)

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        """Create a security group; returns its id."""
        response = await self._graph.send(self._requests.groups.to_post_request_information(Group(
            display_name=display_name, mail_nickname=mail_nickname, description=description,
            mail_enabled=False, security_enabled=True, group_types=[])))
        self._count(2)
        body = response.body or {}
        return str(body.get("id") or "")

    async def group(self, group_id: str) -> JsonObject | None:
        """The group's id, displayName, description and mailNickname; None when it does not exist."""
        # https://learn.microsoft.com/graph/api/group-get (description and mailNickname are $select-able)
        builder = self._requests.groups.by_group_id(group_id)
        try:
            found = await self._graph.get(builder.to_get_request_information(select(
                builder, ["id", "displayName", "description", "mailNickname"])))
        except NotFound:
            return None
        self._count(1)
        group = _parsed(found, Group)
        return {"id": group.id, "displayName": group.display_name, "description": group.description,
                "mailNickname": group.mail_nickname}

    async def member_ids(self, group_id: str) -> set[str]:
        """Ids of the group's direct members; NotFound when the group does not exist."""
        ids: set[str] = set()
        read = 0
        members = self._requests.groups.by_group_id(group_id).members
        try:
            async for page in self._graph.pages(members.to_get_request_information(select(members, ["id"], top=999))):
                read += 1
                self._count(2)
                ids.update(str(m["id"]) for m in page["value"])
        except Stop as err:
            # A 404 on the first page is the group missing, not an incomplete read.
            if read == 0 and isinstance(err.__cause__, NotFound):
                raise NotFound(f"group {group_id} does not exist", request_id=err.request_id) from err
            raise
        return ids

    def member_ref(self, user_id: str) -> str:
        """A directory object's absolute URL on the connection's own Graph host: graph.microsoft.us in US
        Government, microsoftgraph.chinacloudapi.cn in China (https://learn.microsoft.com/graph/deployments)."""
        return self._graph.url(self._requests.directory_objects.by_directory_object_id(user_id)
                               .to_get_request_information())

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        """Add users to a group, 20 per request."""
        group = self._requests.groups.by_group_id(group_id)
        for start in range(0, len(user_ids), BIND_MAX):
            refs = [self.member_ref(u) for u in user_ids[start:start + BIND_MAX]]
            try:
                await self._graph.send(group.to_patch_request_information(
                    Group(additional_data={"members@odata.bind": refs})))
            except (Conflict, InvalidInput) as err:
                if not already_member(err):
                    raise
                # Someone added one of them meanwhile: add one by one, skipping those already in.
                for ref in refs:
                    try:
                        await self._graph.send(group.members.ref.to_post_request_information(
                            ReferenceCreate(odata_id=ref)))
                    except (Conflict, InvalidInput) as one:
                        if not already_member(one):
                            raise
            self._count(2)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Remove one member; absent counts as removed."""
        with contextlib.suppress(NotFound):
            await self._graph.send(self._requests.groups.by_group_id(group_id).members
                                   .by_directory_object_id(user_id).ref.to_delete_request_information())
        self._count(2)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group; absent counts as deleted."""
        with contextlib.suppress(NotFound):
            await self._graph.send(self._requests.groups.by_group_id(group_id).to_delete_request_information())
        self._count(2)

    def _count(self, units: int) -> None:
        self.resource_units += units
        self.requests += 1


def already_member(err: BridgeError) -> bool:
    """Graph's refusal to add a member that is already in the group: a 400 "One or more added object references
    already exist" (https://learn.microsoft.com/graph/api/group-post-members), or a 409."""
    return isinstance(err, Conflict) or (isinstance(err, InvalidInput) and "already exist" in str(err))


def _parsed(body: JsonObject, model: Any) -> Any:
    """A Graph answer parsed into an msgraph model (kiota's JSON parse node)."""
    return JsonParseNode(body).get_object_value(model)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
