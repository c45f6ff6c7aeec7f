"""Licenses: GET /subscribedSkus and POST /users/{id}/assignLicense.

- https://learn.microsoft.com/graph/api/subscribedsku-list (id is `{tenantId}_{skuId}`, prepaidUnits,
  consumedUnits, servicePlans).
- https://learn.microsoft.com/graph/api/user-assignlicense (addLicenses with skuId and disabledPlans,
  removeLicenses as sku ids; 200 with the user; a user without usageLocation cannot get a license).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body

SKU_READ = ("LicenseAssignment.Read.All", "Organization.Read.All", "Directory.Read.All",
            "Organization.ReadWrite.All", "LicenseAssignment.ReadWrite.All")
LICENSE_WRITE = ("LicenseAssignment.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All")


def routes(sim: Simulator) -> list[Route]:
    """The license routes, for /v1.0 and /beta."""
    tenant = sim.tenant

    def consumed(sku_id: str) -> int:
        return sum(1 for u in tenant.users.values() if any(a.get("skuId") == sku_id for a in u.assignedLicenses))

    def render(sku: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"{tenant.tenantId}_{sku['skuId']}", "accountId": tenant.tenantId,
                "accountName": tenant.displayName, "subscriptionIds": sku.get("subscriptionIds", []),
                "appliesTo": sku.get("appliesTo", "User"), "capabilityStatus": sku.get("capabilityStatus", "Enabled"),
                "skuId": sku["skuId"], "skuPartNumber": sku.get("skuPartNumber", ""),
                "consumedUnits": consumed(sku["skuId"]),
                "prepaidUnits": {"enabled": int(sku.get("enabled", 0)), "suspended": 0, "warning": 0, "lockedOut": 0},
                "servicePlans": sku.get("servicePlans", [])}

    async def subscribed(request: Request, caller: Caller) -> dict[str, Any]:
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#subscribedSkus",
                "value": [render(s) for s in tenant.skus]}

    async def assign(request: Request, caller: Caller) -> dict[str, Any]:
        key = request.path_params["id"]
        user = tenant.user(key)
        if user is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its "
                             "queried reference-property objects are not present.")
        body = await json_body(request)
        add, remove = body.get("addLicenses"), body.get("removeLicenses")
        if not isinstance(add, list) or not isinstance(remove, list):
            raise GraphError(400, "Request_BadRequest", "addLicenses and removeLicenses are both required (they may "
                             "be empty).")
        known = {s["skuId"]: s for s in tenant.skus}
        wanted: list[dict[str, Any]] = []
        for item in add:
            sku_id = str(item.get("skuId")) if isinstance(item, dict) else ""
            if sku_id not in known:
                raise GraphError(400, "Request_BadRequest", f"License {sku_id} does not correspond to a valid company "
                                 "License.")
            already = any(a.get("skuId") == sku_id for a in user.assignedLicenses)
            if not already and consumed(sku_id) >= int(known[sku_id].get("enabled", 0)):
                raise GraphError(400, "Request_BadRequest", "License assignment failed because there are no "
                                 f"available licenses for {sku_id}.")
            wanted.append({"skuId": sku_id, "disabledPlans": [str(p) for p in item.get("disabledPlans") or []]})
        if wanted and not user.usageLocation:
            raise GraphError(400, "Request_BadRequest", "License assignment cannot be done for user with invalid "
                             "usage location.")
        for sku_id in remove:
            if not any(a.get("skuId") == sku_id for a in user.assignedLicenses):
                raise GraphError(400, "Request_BadRequest", f"User does not have a corresponding license {sku_id}.")
        adding = {w["skuId"] for w in wanted}
        user.assignedLicenses = [a for a in user.assignedLicenses
                                 if a.get("skuId") not in remove and a.get("skuId") not in adding] + wanted
        tenant.record("user", user.id)
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#users/$entity", **user.graph(None),
                "assignedLicenses": user.assignedLicenses}

    found: list[Route] = []
    for version in ("v1.0", "beta"):
        found.append(Route(f"/{version}/subscribedSkus", graph_route(sim, subscribed, permissions=SKU_READ),
                           methods=["GET"]))
        found.append(Route(f"/{version}/users/{{id}}/assignLicense",
                           graph_route(sim, assign, permissions=LICENSE_WRITE, write=True), methods=["POST"]))
    return found
