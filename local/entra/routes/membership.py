"""Group writes: create and delete groups, add and remove members.

- Create: https://learn.microsoft.com/graph/api/group-post-groups (displayName, mailEnabled,
  mailNickname, securityEnabled required; 201 with the group).
- Delete: https://learn.microsoft.com/graph/api/group-delete (204).
- Add a member: https://learn.microsoft.com/graph/api/group-post-members (`POST members/$ref` with
  `@odata.id`, 204; 400 when it is already a member), or `PATCH /groups/{id}` with `members@odata.bind`
  (at most 20 per request).
- Remove a member: https://learn.microsoft.com/graph/api/group-delete-members
  (`DELETE members/{id}/$ref`, 204; 404 when it is not a member).
- Owners: https://learn.microsoft.com/graph/api/group-list-owners, group-post-owners (`POST owners/$ref`, 204;
  400 when already an owner), group-delete-owners (`DELETE owners/{id}/$ref`, 204), and `owners@odata.bind`
  on create (the example "Create a security group with an owner and members").
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body, page
from local.entra.core import group_or_404 as core_group_or_404
from local.entra.state import Group, new_id, now_iso

GROUP_CREATE = ("Group.Create", "Group.ReadWrite.All", "Directory.ReadWrite.All")
GROUP_WRITE = ("Group.ReadWrite.All", "Directory.ReadWrite.All")
MEMBER_WRITE = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
MAX_BIND = 20
#: A group's description takes at most 1,024 characters (group resource, properties).
DESCRIPTION_LENGTH = 1024
ALREADY_MEMBER = ("One or more added object references already exist for the following modified properties: "
                  "'members'.")


def routes(sim: Simulator) -> list[Route]:
    """The group write routes, for /v1.0 and /beta."""
    tenant = sim.tenant

    def group_or_404(key: str) -> Group:
        found: Group = core_group_or_404(tenant, key)
        return found

    def object_id(request: Request, reference: Any, *, principals: bool = False) -> str:
        """The object id at the end of a directoryObjects URL on the Graph host the request was sent to
        (a reference to another cloud's Graph names no object of this tenant), a user or group (or, for owners,
        a service principal)."""
        if not isinstance(reference, str) or not reference.startswith(
                tuple(origin + "/" for origin in sim.graph_origins(request))):
            raise GraphError(400, "Request_BadRequest", "Invalid URL format specified in @odata.bind for members.")
        found = reference.rstrip("/").rsplit("/", 1)[-1]
        if found not in tenant.users and found not in tenant.groups and not (
                principals and tenant.app_by_principal(found) is not None):
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{found}' does not exist or one of its "
                             "queried reference-property objects are not present.")
        return found

    def add_members(group: Group, ids: list[str]) -> None:
        if any(i in group.members for i in ids) or len(set(ids)) != len(ids):
            raise GraphError(400, "Request_BadRequest", ALREADY_MEMBER)
        if group.id in ids:
            raise GraphError(400, "Request_BadRequest", "A group cannot be a member of itself.")
        group.members.extend(ids)
        tenant.record("group", group.id, added=ids)

    def render(group: Group) -> dict[str, Any]:
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#groups/$entity", "id": group.id,
                "displayName": group.displayName, "mailNickname": group.mailNickname,
                "securityEnabled": group.securityEnabled, "mailEnabled": group.mailEnabled,
                "groupTypes": group.groupTypes, "createdDateTime": group.createdDateTime, "mail": group.mail,
                "visibility": group.visibility, "renewedDateTime": group.createdDateTime, "classification": None,
                "expirationDateTime": None, "isAssignableToRole": None, "securityIdentifier": None,
                "proxyAddresses": [f"SMTP:{group.mail}"] if group.mail else [],
                "description": group.description}

    def check_description(body: dict[str, Any]) -> None:
        value = body.get("description")
        if value is not None and (not isinstance(value, str) or len(value) > DESCRIPTION_LENGTH):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'description' of "
                             "resource 'Group'.")

    async def create_group(request: Request, caller: Caller) -> JSONResponse:
        body = await json_body(request)
        check_description(body)
        for name in ("displayName", "mailNickname"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of "
                                 "resource 'Group'.")
        for name in ("mailEnabled", "securityEnabled"):
            if not isinstance(body.get(name), bool):
                raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of "
                                 "resource 'Group'.")
        binds = body.get("members@odata.bind") or []
        if not isinstance(binds, list) or len(binds) > MAX_BIND:
            raise GraphError(400, "Request_BadRequest", f"At most {MAX_BIND} members can be added in one request.")
        members = [object_id(request, ref) for ref in binds]
        owner_binds = body.get("owners@odata.bind") or []
        if not isinstance(owner_binds, list) or len(owner_binds) > MAX_BIND:
            raise GraphError(400, "Request_BadRequest", f"At most {MAX_BIND} owners can be added in one request.")
        owners = [object_id(request, ref, principals=True) for ref in owner_binds]
        if any(o not in tenant.users and tenant.app_by_principal(o) is None for o in owners):
            raise GraphError(400, "Request_BadRequest", "Owners must be users or service principals.")
        group = Group(id=new_id(), displayName=body["displayName"], mailNickname=body["mailNickname"],
                      securityEnabled=body["securityEnabled"], mailEnabled=body["mailEnabled"],
                      groupTypes=[str(t) for t in body.get("groupTypes") or []], createdDateTime=now_iso(),
                      description=str(body["description"]) if body.get("description") is not None else None,
                      owners=list(dict.fromkeys(owners)))
        if "Unified" in group.groupTypes:
            # A Microsoft 365 group gets a mail address on the tenant's default domain
            # (https://learn.microsoft.com/graph/api/resources/group#properties) and visibility Public by default.
            default = next((d["id"] for d in tenant.domains if d.get("isDefault")), tenant.domains[0]["id"]
                           if tenant.domains else "example.onmicrosoft.com")
            group.mail = f"{group.mailNickname}@{default}"
            group.visibility = str(body.get("visibility") or "Public")
        tenant.groups[group.id] = group
        tenant.record("group", group.id)
        if members:
            add_members(group, members)
        return JSONResponse(render(group), status_code=201,
                            headers={"location": f"{sim.origin(request)}/v1.0/groups/{group.id}"})

    async def patch_group(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        body = await json_body(request)
        unknown = set(body) - {"displayName", "description", "members@odata.bind", "mailNickname", "@odata.type"}
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"Property '{sorted(unknown)[0]}' is read-only or unknown.")
        check_description(body)
        if "displayName" in body and (not isinstance(body["displayName"], str) or not body["displayName"].strip()):
            raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'displayName' of "
                             "resource 'Group'.")
        binds = body.get("members@odata.bind")
        if binds is not None:
            if not isinstance(binds, list) or not binds or len(binds) > MAX_BIND:
                raise GraphError(400, "Request_BadRequest",
                                 f"members@odata.bind takes between 1 and {MAX_BIND} references.")
            add_members(group, [object_id(request, ref) for ref in binds])
        changed = False
        for name in ("displayName", "mailNickname", "description"):
            if name in body:
                setattr(group, name, None if body[name] is None else str(body[name]))
                changed = True
        if changed:
            tenant.record("group", group.id)

    async def delete_group(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        del tenant.groups[group.id]
        for other in tenant.groups.values():
            if group.id in other.members:
                other.members.remove(group.id)
                tenant.record("group", other.id, removed=[group.id])
        tenant.record("group", group.id)

    async def add_ref(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        body = await json_body(request)
        add_members(group, [object_id(request, body.get("@odata.id"))])

    async def remove_ref(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        member = request.path_params["member"]
        if member not in group.members:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{member}' does not exist or one of its "
                             "queried reference-property objects are not present.")
        group.members.remove(member)
        tenant.record("group", group.id, removed=[member])

    async def list_owners(request: Request, caller: Caller) -> dict[str, Any]:
        group = group_or_404(request.path_params["id"])
        items: list[dict[str, Any]] = []
        for owner in group.owners:
            if owner in tenant.users:
                items.append({"@odata.type": "#microsoft.graph.user", **tenant.users[owner].graph(None)})
            else:
                app = tenant.app_by_principal(owner)
                items.append({"@odata.type": "#microsoft.graph.servicePrincipal", "id": owner,
                              "appId": app.clientId if app else None, "displayName": app.displayName if app else None})
        return page(request, items, context=f"{sim.base_url}/v1.0/$metadata#directoryObjects")

    async def add_owner(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        owner = object_id(request, (await json_body(request)).get("@odata.id"), principals=True)
        if owner in group.owners:
            raise GraphError(400, "Request_BadRequest", "One or more added object references already exist for the "
                             "following modified properties: 'owners'.")
        group.owners.append(owner)
        tenant.record("group", group.id)

    async def remove_owner(request: Request, caller: Caller) -> None:
        group = group_or_404(request.path_params["id"])
        owner = request.path_params["owner"]
        if owner not in group.owners:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{owner}' does not exist or one of its "
                             "queried reference-property objects are not present.")
        group.owners.remove(owner)
        tenant.record("group", group.id)

    found: list[Route] = []
    for version in ("v1.0", "beta"):
        def add(path: str, handler: Any, methods: list[str], version: str = version, **options: Any) -> None:
            found.append(Route(f"/{version}{path}", graph_route(sim, handler, write=True, **options), methods=methods))

        add("/groups", create_group, ["POST"], permissions=GROUP_CREATE)
        add("/groups/{id}", patch_group, ["PATCH"], permissions=MEMBER_WRITE)
        add("/groups/{id}", delete_group, ["DELETE"], permissions=GROUP_WRITE)
        add("/groups/{id}/members/$ref", add_ref, ["POST"], permissions=MEMBER_WRITE)
        add("/groups/{id}/members/{member}/$ref", remove_ref, ["DELETE"], permissions=MEMBER_WRITE)
        add("/groups/{id}/owners/$ref", add_owner, ["POST"], permissions=GROUP_WRITE)
        add("/groups/{id}/owners/{owner}/$ref", remove_owner, ["DELETE"], permissions=GROUP_WRITE)
        found.append(Route(f"/{version}/groups/{{id}}/owners", graph_route(sim, list_owners, permissions=(
            "GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All"), cost=3),
            methods=["GET"]))
    return found
