"""The admin API under /_sim/ (only with --admin): inspect and change the tenant, counters and faults."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.entra.core import GraphError, Simulator, json_body
from local.entra.state import User, new_id


def routes(sim: Simulator) -> list[Route]:
    """Admin routes (registered only when the simulator runs with --admin)."""
    tenant = sim.tenant

    def guard(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                with tenant.lock:
                    result = await handler(request)
            except GraphError as err:
                return JSONResponse({"error": err.message}, status_code=err.status)
            return result if isinstance(result, Response) else JSONResponse(result)
        return endpoint

    async def summary(request: Request) -> dict[str, Any]:
        return {"tenantId": tenant.tenantId, "users": len(tenant.users), "groups": len(tenant.groups),
                "apps": [{"clientId": a.clientId, "servicePrincipalId": a.servicePrincipalId,
                          "graphRoles": a.graphRoles, "managedIdentity": a.managedIdentity}
                         for a in tenant.apps.values()],
                "roles": tenant.roles, "counters": sim.counters, "faults": sim.faults.describe()}

    async def password(request: Request) -> dict[str, Any]:
        user = tenant.user(request.path_params["id"])
        if user is None:
            raise GraphError(404, "NotFound", "no such user")
        return {"userId": user.id, **tenant.passwords.get(user.id, {})}

    async def faults(request: Request) -> dict[str, Any]:
        if request.method == "PUT":
            # PUT replaces the whole set, as documented (docs/entra-simulator.md).
            sim.faults.replace(await json_body(request))
        return sim.faults.describe()

    async def limits(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        sim.limits = bool(body.get("enabled", sim.limits))
        return {"enabled": sim.limits}

    async def app_grants(request: Request) -> dict[str, Any]:
        app = tenant.apps.get(request.path_params["client"])
        if app is None:
            raise GraphError(404, "NotFound", "no such app")
        body = await json_body(request)
        if "graphRoles" in body:
            app.graphRoles = [str(r) for r in body["graphRoles"]]
        if "certificates" in body:
            app.certificates = [str(c) for c in body["certificates"]]
        if "directoryRoles" in body:
            for name, members in tenant.roles.items():
                if app.servicePrincipalId in members and name not in body["directoryRoles"]:
                    members.remove(app.servicePrincipalId)
            for name in body["directoryRoles"]:
                holders = tenant.roles.setdefault(str(name), [])
                if app.servicePrincipalId not in holders:
                    holders.append(app.servicePrincipalId)
        sim.store.changed()
        return {"clientId": app.clientId, "graphRoles": app.graphRoles,
                "directoryRoles": tenant.roles_of(app.servicePrincipalId)}

    async def members(request: Request) -> dict[str, Any]:
        group = tenant.groups.get(request.path_params["id"])
        if group is None:
            raise GraphError(404, "NotFound", "no such group")
        if request.method in ("POST", "DELETE"):
            body = await json_body(request)
            ids = [str(i) for i in body.get("ids", [])]
            if request.method == "POST":
                fresh = [i for i in dict.fromkeys(ids) if i not in group.members]
                group.members.extend(fresh)
                tenant.record("group", group.id, added=fresh)
            else:
                leaving = set(ids)
                gone = [m for m in group.members if m in leaving]
                group.members = [m for m in group.members if m not in leaving]
                tenant.record("group", group.id, removed=gone)
            sim.store.changed()
        return {"id": group.id, "members": group.members, "transitiveUsers": len(tenant.transitive_users(group.id))}

    async def create_user(request: Request) -> Response:
        body = await json_body(request)
        user = User(id=str(body.get("id") or new_id()), userPrincipalName=str(body["userPrincipalName"]),
                    displayName=str(body.get("displayName", "")), accountEnabled=bool(body.get("accountEnabled", True)),
                    onPremisesSyncEnabled=body.get("onPremisesSyncEnabled"))
        tenant.add_user(user)
        tenant.record("user", user.id)
        sim.store.changed()
        return JSONResponse({"id": user.id}, status_code=201)

    async def delete_user(request: Request) -> Response:
        if tenant.delete_user(request.path_params["id"]) is None:
            raise GraphError(404, "NotFound", "no such user")
        sim.store.changed()
        return Response(status_code=204)

    async def roles(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        holders = tenant.roles.setdefault(str(body["role"]), [])
        principal = str(body["principalId"])
        if body.get("remove"):
            if principal in holders:
                holders.remove(principal)
        elif principal not in holders:
            holders.append(principal)
        sim.store.changed()
        return {"role": body["role"], "holders": holders}

    async def policy(request: Request) -> dict[str, Any]:
        tenant.fido2Policy.update(await json_body(request))
        sim.store.changed()
        return tenant.fido2Policy

    async def fido2(request: Request) -> dict[str, Any]:
        user = tenant.user(request.path_params["id"])
        if user is None:
            raise GraphError(404, "NotFound", "no such user")
        return {"userId": user.id, "methods": tenant.fido2.get(user.id, [])}

    async def deleted_users(request: Request) -> dict[str, Any]:
        return {"value": [{"id": u.id, "userPrincipalName": u.userPrincipalName}
                          for u in tenant.deletedUsers.values()]}

    async def restore_user(request: Request) -> dict[str, Any]:
        user = tenant.deletedUsers.pop(request.path_params["id"], None)
        if user is None:
            raise GraphError(404, "NotFound", "no such deleted user")
        tenant.add_user(user)
        tenant.record("user", user.id)
        sim.store.changed()
        return {"id": user.id}

    async def expire_delta(request: Request) -> dict[str, Any]:
        # Every delta token issued so far now answers 410, as after Graph drops its sync state.
        tenant.deltaFloor = tenant.sequence + 1
        # A marker no delta query lists moves the sequence up to the floor, so tokens issued from now on
        # (including `$deltatoken=latest`) are valid, as after a real resync.
        tenant.record("marker", "deltaExpired")
        sim.store.changed()
        return {"deltaFloor": tenant.deltaFloor}

    async def save(request: Request) -> dict[str, Any]:
        # Write the tenant file now (a large tenant's periodic write then finds nothing to do).
        sim.store.save()
        return {"seconds": round(sim.store.last_save_seconds, 3), "users": len(tenant.users)}

    async def counters(request: Request) -> dict[str, Any]:
        return {**sim.counters, "buckets": sim.bucket_levels()}

    return [
        Route("/_sim/tenant", guard(summary), methods=["GET"]),
        Route("/_sim/deletedUsers", guard(deleted_users), methods=["GET"]),
        Route("/_sim/deletedUsers/{id}/restore", guard(restore_user), methods=["POST"]),
        Route("/_sim/delta/expire", guard(expire_delta), methods=["POST"]),
        Route("/_sim/counters", guard(counters), methods=["GET"]),
        Route("/_sim/save", guard(save), methods=["POST"]),
        Route("/_sim/users", guard(create_user), methods=["POST"]),
        Route("/_sim/users/{id}", guard(delete_user), methods=["DELETE"]),
        Route("/_sim/users/{id}/password", guard(password), methods=["GET"]),
        Route("/_sim/users/{id}/fido2", guard(fido2), methods=["GET"]),
        Route("/_sim/groups/{id}/members", guard(members), methods=["GET", "POST", "DELETE"]),
        Route("/_sim/apps/{client}", guard(app_grants), methods=["PATCH"]),
        Route("/_sim/roles", guard(roles), methods=["POST"]),
        Route("/_sim/faults", guard(faults), methods=["GET", "PUT"]),
        Route("/_sim/limits", guard(limits), methods=["PUT"]),
        Route("/_sim/policies/fido2", guard(policy), methods=["PATCH"]),
    ]
