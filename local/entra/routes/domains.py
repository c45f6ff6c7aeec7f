"""Domains and their federation configuration (internalDomainFederation).

https://learn.microsoft.com/graph/api/domain-get, domain-list-federationconfiguration,
domain-post-federationconfiguration, internaldomainfederation-update, internaldomainfederation-delete.
Federating switches the domain's authenticationType to Federated; deleting switches it back.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body, page

DOMAIN_READ = ("Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All")
FEDERATION_WRITE = ("Domain-InternalFederation.ReadWrite.All", "Domain.ReadWrite.All")
FEDERATION_READ = (*FEDERATION_WRITE, "Domain.Read.All", "Directory.Read.All")
FIELDS = {"displayName", "issuerUri", "metadataExchangeUri", "passiveSignInUri", "activeSignInUri", "signOutUri",
          "signingCertificate", "nextSigningCertificate", "preferredAuthenticationProtocol",
          "federatedIdpMfaBehavior", "promptLoginBehavior", "isSignedAuthenticationRequestRequired"}


def routes(sim: Simulator) -> list[Route]:
    """The domain routes."""
    tenant = sim.tenant

    def domain_or_404(name: str) -> dict[str, Any]:
        for domain in tenant.domains:
            if domain["id"].lower() == name.lower():
                return domain
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{name}' does not exist.")

    def view(domain: dict[str, Any]) -> dict[str, Any]:
        return {"id": domain["id"], "authenticationType": domain.get("authenticationType", "Managed"),
                "isVerified": domain.get("isVerified", False), "isDefault": domain.get("isDefault", False),
                "isInitial": domain.get("isInitial", False), "isRoot": True, "supportedServices": ["Email"]}

    def config(domain: dict[str, Any]) -> dict[str, Any]:
        return {"@odata.type": "#microsoft.graph.internalDomainFederation", **domain["federationConfiguration"]}

    async def list_domains(request: Request, caller: Caller) -> dict[str, Any]:
        return page(request, [view(d) for d in tenant.domains])

    async def get_domain(request: Request, caller: Caller) -> dict[str, Any]:
        return view(domain_or_404(request.path_params["id"]))

    async def list_config(request: Request, caller: Caller) -> dict[str, Any]:
        domain = domain_or_404(request.path_params["id"])
        return page(request, [config(domain)] if domain.get("federationConfiguration") else [])

    async def create_config(request: Request, caller: Caller) -> Any:
        domain = domain_or_404(request.path_params["id"])
        body = await json_body(request)
        unknown = set(body) - FIELDS - {"@odata.type"}
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"Property '{sorted(unknown)[0]}' does not exist.")
        if not domain.get("isVerified"):
            raise GraphError(400, "Request_BadRequest", "The domain must be verified before it can be federated.")
        if domain.get("isInitial"):
            raise GraphError(400, "Request_BadRequest", "The initial domain cannot be federated.")
        if domain.get("federationConfiguration"):
            raise GraphError(409, "Request_BadRequest", "The domain is already federated.")
        for required in ("issuerUri", "passiveSignInUri"):
            if not body.get(required):
                raise GraphError(400, "Request_BadRequest", f"The property '{required}' is required.")
        domain["federationConfiguration"] = {"id": str(uuid.uuid4()), **{k: v for k, v in body.items()
                                                                           if k in FIELDS}}
        domain["authenticationType"] = "Federated"
        return JSONResponse(config(domain), status_code=201)

    async def get_config(request: Request, caller: Caller) -> dict[str, Any]:
        domain = domain_or_404(request.path_params["id"])
        current = domain.get("federationConfiguration")
        if not current or current["id"] != request.path_params["fid"]:
            raise GraphError(404, "Request_ResourceNotFound", "The federation configuration does not exist.")
        return config(domain)

    async def update_config(request: Request, caller: Caller) -> None:
        domain = domain_or_404(request.path_params["id"])
        current = domain.get("federationConfiguration")
        if not current or current["id"] != request.path_params["fid"]:
            raise GraphError(404, "Request_ResourceNotFound", "The federation configuration does not exist.")
        body = await json_body(request)
        current.update({k: v for k, v in body.items() if k in FIELDS})
        return None

    async def delete_config(request: Request, caller: Caller) -> None:
        domain = domain_or_404(request.path_params["id"])
        current = domain.get("federationConfiguration")
        if not current or current["id"] != request.path_params["fid"]:
            raise GraphError(404, "Request_ResourceNotFound", "The federation configuration does not exist.")
        domain.pop("federationConfiguration")
        domain["authenticationType"] = "Managed"
        return None

    found: list[Route] = []
    for version in ("v1.0", "beta"):
        def add(path: str, handler: Any, methods: list[str], version: str = version, **options: Any) -> None:
            found.append(Route(f"/{version}{path}", graph_route(sim, handler, **options), methods=methods))

        add("/domains", list_domains, ["GET"], permissions=DOMAIN_READ)
        add("/domains/{id}", get_domain, ["GET"], permissions=DOMAIN_READ)
        add("/domains/{id}/federationConfiguration", list_config, ["GET"], permissions=FEDERATION_READ)
        add("/domains/{id}/federationConfiguration", create_config, ["POST"], permissions=FEDERATION_WRITE,
            write=True)
        add("/domains/{id}/federationConfiguration/{fid}", get_config, ["GET"], permissions=FEDERATION_READ)
        add("/domains/{id}/federationConfiguration/{fid}", update_config, ["PATCH"], permissions=FEDERATION_WRITE,
            write=True)
        add("/domains/{id}/federationConfiguration/{fid}", delete_config, ["DELETE"],
            permissions=FEDERATION_WRITE, write=True)
    return found
