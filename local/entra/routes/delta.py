"""Change tracking: GET /users/delta and /groups/delta on v1.0 and beta.

Follows https://learn.microsoft.com/graph/delta-query-overview, .../graph/api/user-delta and
.../graph/api/group-delta: the first round lists every object (pages linked by `@odata.nextLink` with a
`$skiptoken`, the last page carrying `@odata.deltaLink` with a `$deltatoken`); `$deltatoken=latest`
returns no objects and a deltaLink from now; later rounds list objects changed since the token, deleted
ones as `{"id", "@removed": {"reason": ...}}`; groups selected with `members` carry `members@delta`,
removed members with `@removed`. Delta tokens of identity resources live 7 days
(https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/);
an expired or dropped token answers 410 `syncStateNotFound` and the caller must resync.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, select_fields
from local.entra.routes.directory import GROUP_READ, USER_READ

TOKEN_LIFETIME_SECONDS = 7 * 24 * 3600
DEFAULT_PAGE = 200
MAX_PAGE = 999
MAX_IDS = 50
GROUP_FIELDS = ("createdDateTime", "displayName", "mailNickname", "securityEnabled", "mailEnabled", "groupTypes",
                "description")
_ID_CLAUSE = re.compile(r"^\s*id\s+eq\s+'([^']+)'\s*$")


def encode(state: dict[str, Any]) -> str:
    """An opaque token for a skiptoken or deltatoken."""
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(token: str) -> dict[str, Any]:
    """The state inside a token; 400 when it is not one of ours."""
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise GraphError(400, "Request_BadRequest", "Invalid delta or skip token.") from None
    if not isinstance(state, dict) or not isinstance(state.get("s"), int):
        raise GraphError(400, "Request_BadRequest", "Invalid delta or skip token.")
    return state


def id_filter(expression: str | None) -> set[str] | None:
    """`id eq 'a' or id eq 'b'` (at most 50) -> ids; anything else is a 400."""
    if not expression:
        return None
    ids: set[str] = set()
    for clause in re.split(r"\s+or\s+", expression.strip()):
        match = _ID_CLAUSE.match(clause)
        if not match:
            raise GraphError(400, "Request_UnsupportedQuery", "Delta supports only $filter=id eq '...' clauses "
                             "joined by 'or'.")
        ids.add(match.group(1))
    if len(ids) > MAX_IDS:
        raise GraphError(400, "Request_BadRequest", f"Delta $filter accepts at most {MAX_IDS} ids.")
    return ids


def wants_members(select: list[str] | None) -> bool:
    """Groups carry members@delta by default (group-delta, Response 1) or when `members` is selected."""
    return not select or "members" in select


def page_size(request: Request) -> int:
    """Server-sized pages; `Prefer: odata.maxpagesize=N` asks for another size up to 999."""
    if "$top" in request.query_params or "$orderby" in request.query_params or \
            "$expand" in request.query_params:
        raise GraphError(400, "Request_UnsupportedQuery", "Delta does not support $top, $orderby or $expand.")
    match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
    return max(1, min(MAX_PAGE, int(match.group(1)))) if match else DEFAULT_PAGE


def routes(sim: Simulator) -> list[Route]:
    """The delta routes."""
    tenant = sim.tenant
    #: The ids of a first round's pages, listed once per state of the tenant rather than once per page
    #: (a million users in 999-user pages would list them a thousand times).
    listed: dict[str, tuple[int, int, list[str]]] = {}

    def ids_of(kind: str) -> list[str]:
        pool = tenant.users if kind == "user" else tenant.groups
        cached = listed.get(kind)
        if cached is None or cached[:2] != (tenant.version, len(pool)):
            cached = listed[kind] = (tenant.version, len(pool), list(pool))
        return cached[2]

    def check_age(state: dict[str, Any]) -> None:
        age = (time.time() - float(state.get("i", 0))) * sim.time_scale
        # A first round (s = -1) has nothing to replay, so only its age matters.
        if 0 <= state["s"] < tenant.deltaFloor or age > TOKEN_LIFETIME_SECONDS:
            raise GraphError(410, "syncStateNotFound", "The sync state generation is not found. The delta token is "
                             "expired and data must be synchronized again.")

    def user_item(uid: str, select: list[str] | None, _: bool) -> dict[str, Any] | None:
        user = tenant.users.get(uid)
        if user is not None:
            return user.graph(select)
        # Soft-deleted users can come back ("changed"); others are gone for good ("deleted").
        reason = "changed" if uid in tenant.deletedUsers else "deleted"
        return {"id": uid, "@removed": {"reason": reason}}

    def member_ref(object_id: str) -> dict[str, Any]:
        kind = "user" if object_id in tenant.users or object_id in tenant.deletedUsers else "group"
        return {"@odata.type": f"#microsoft.graph.{kind}", "id": object_id}

    def group_body(gid: str, select: list[str] | None) -> dict[str, Any]:
        group = tenant.groups[gid]
        body: dict[str, Any] = {"id": gid}
        for name in GROUP_FIELDS:
            if (not select or name in select) and hasattr(group, name):
                body[name] = getattr(group, name)
        return body

    def group_full(gid: str, select: list[str] | None, _: bool) -> dict[str, Any] | None:
        if gid not in tenant.groups:
            return None
        body = group_body(gid, select)
        if wants_members(select):
            body["members@delta"] = [member_ref(m) for m in tenant.groups[gid].members]
        return body

    def collect(kind: str, since: int, until: int, ids: set[str] | None,
                select: list[str] | None) -> list[dict[str, Any]]:
        """Net changes per object between two sequence numbers, in the order they last changed."""
        touched: dict[str, tuple[list[str], list[str]]] = {}
        for change in tenant.changes_since(since):
            if change["seq"] > until:
                break
            if change["kind"] != kind or (ids is not None and change["id"] not in ids):
                continue
            added, removed = touched.pop(change["id"], ([], []))
            for member in change["added"]:
                if member in removed:
                    removed.remove(member)
                else:
                    added.append(member)
            for member in change["removed"]:
                if member in added:
                    added.remove(member)
                else:
                    removed.append(member)
            touched[change["id"]] = (added, removed)
        items: list[dict[str, Any]] = []
        for object_id, (added, removed) in touched.items():
            if kind == "user":
                item = user_item(object_id, select, False)
            elif object_id not in tenant.groups:
                item = {"id": object_id, "@removed": {"reason": "changed"}}
            else:
                item = group_body(object_id, select)
                if wants_members(select):
                    item["members@delta"] = [member_ref(m) for m in added] + [
                        {**member_ref(m), "@removed": {"reason": "deleted"}} for m in removed]
            if item is not None:
                items.append(item)
        return items

    def delta(kind: str) -> Any:
        async def handler(request: Request, caller: Caller) -> dict[str, Any]:
            params = request.query_params
            size = page_size(request)
            base = f"{sim.origin(request)}{request.url.path}"
            context = f"{sim.origin(request)}/v1.0/$metadata#{kind}s"
            skip, token = params.get("$skiptoken"), params.get("$deltatoken")
            if token == "latest":  # noqa: S105 - a documented keyword, not a secret
                return {"@odata.context": context, "value": [], "@odata.deltaLink":
                        f"{base}?$deltatoken={encode({'s': tenant.sequence, 'i': time.time()})}"}
            if skip:
                state = decode(skip)
            elif token:
                start = decode(token)
                check_age(start)
                # Carry the caller's $select and $filter from the round that issued the token.
                state = {"s": start["s"], "u": tenant.sequence, "o": 0, "sel": start.get("sel"),
                         "ids": start.get("ids"), "i": time.time()}
            else:
                ids = id_filter(params.get("$filter"))
                state = {"s": -1, "u": tenant.sequence, "o": 0, "sel": select_fields(request),
                         "ids": sorted(ids) if ids is not None else None, "i": time.time()}
            check_age(state)
            select: list[str] | None = state.get("sel")
            wanted = set(state["ids"]) if state.get("ids") is not None else None
            offset = int(state.get("o", 0))
            if state["s"] < 0:
                # First round: everything that exists now, rendered page by page.
                pool = tenant.users if kind == "user" else tenant.groups
                keys = ids_of(kind) if wanted is None else [k for k in pool if k in wanted]
                render = user_item if kind == "user" else group_full
                chunk = [render(k, select, True) for k in keys[offset:offset + size]]
                values = [c for c in chunk if c is not None]
                more = offset + size < len(keys)
            else:
                changes = collect(kind, state["s"], state["u"], wanted, select)
                values = changes[offset:offset + size]
                more = offset + size < len(changes)
            body: dict[str, Any] = {"@odata.context": context, "value": values}
            if more:
                body["@odata.nextLink"] = f"{base}?$skiptoken={encode({**state, 'o': offset + size})}"
            else:
                body["@odata.deltaLink"] = f"{base}?$deltatoken=" + encode(
                    {"s": state["u"], "sel": select, "ids": state.get("ids"), "i": time.time()})
            return body
        return handler

    found: list[Route] = []
    users = graph_route(sim, delta("user"), permissions=USER_READ, cost=2)
    groups = graph_route(sim, delta("group"), permissions=GROUP_READ, cost=2)
    for version in ("v1.0", "beta"):
        # `/delta` is short for `/microsoft.graph.delta()`; the SDKs send `/delta()`.
        for name in ("delta", "delta()", "microsoft.graph.delta()"):
            found.append(Route(f"/{version}/users/{name}", users, methods=["GET"]))
            found.append(Route(f"/{version}/groups/{name}", groups, methods=["GET"]))
    return found
