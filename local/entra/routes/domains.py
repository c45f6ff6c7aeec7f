"""Domains and their federation configuration (internalDomainFederation).

Pages followed (learn.microsoft.com/graph/api/..., source in microsoft-graph-docs-contrib):
- domain-list, domain-get: the domain resource (authenticationType, availabilityStatus, isAdminManaged,
  isDefault, isInitial, isRoot, isVerified, supportedServices, password policy fields, state).
- domain-list-federationconfiguration: a collection of one internalDomainFederation; "If there isn't an
  internalDomainFederation object [...] this API returns a 404 Not Found response code."
- domain-post-federationconfiguration: 201 with the object, which carries signingCertificateUpdateStatus.
- internaldomainfederation-get (200), internaldomainfederation-update (200 with the updated object),
  internaldomainfederation-delete (204).
Federating switches the domain's authenticationType to Federated and deleting switches it back. The
domain must be verified and the initial *.onmicrosoft.com domain cannot be federated (docs/architecture.md,
"Facts the code relies on"); a second POST for a domain that has a configuration is refused.
"""

from __future__ import annotations

import datetime as dt
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
#: The enumerations the pages list for the members (unknownFutureValue is a marker, not a value to set).
ENUMS = {"preferredAuthenticationProtocol": {"wsFed", "saml"},
         "federatedIdpMfaBehavior": {"acceptIfMfaDoneByFederatedIdp", "enforceMfaByFederatedIdp",
                                     "rejectMfaByFederatedIdp"},
         "promptLoginBehavior": {"translateToFreshPasswordAuthentication", "nativeSupport", "disabled"}}
READ_ONLY = {"id", "signingCertificateUpdateStatus"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def routes(sim: Simulator) -> list[Route]:
    """The domain routes."""
    tenant = sim.tenant

    def domain_or_404(name: str) -> dict[str, Any]:
        for domain in tenant.domains:
            if domain["id"].lower() == name.lower():
                return domain
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{name}' does not exist or one of its queried "
                         "reference-property objects are not present.")

    def view(domain: dict[str, Any]) -> dict[str, Any]:
        return {"id": domain["id"], "authenticationType": domain.get("authenticationType", "Managed"),
                "availabilityStatus": None, "isAdminManaged": True,
                "isDefault": domain.get("isDefault", False), "isInitial": domain.get("isInitial", False),
                "isRoot": True, "isVerified": domain.get("isVerified", False),
                "supportedServices": list(domain.get("supportedServices", ["Email", "OfficeCommunicationsOnline"])),
                "passwordValidityPeriodInDays": None, "passwordNotificationWindowInDays": None, "state": None}

    def config(domain: dict[str, Any]) -> dict[str, Any]:
        return {"@odata.type": "#microsoft.graph.internalDomainFederation", **domain["federationConfiguration"]}

    def config_or_404(domain: dict[str, Any], config_id: str | None) -> dict[str, Any]:
        current: dict[str, Any] | None = domain.get("federationConfiguration")
        if not current or (config_id is not None and current["id"] != config_id):
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{config_id or domain['id']}' does not "
                             "exist or one of its queried reference-property objects are not present.")
        return current

    def checked(body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - FIELDS - READ_ONLY - {"@odata.type"}
        if unknown:
            raise GraphError(400, "Request_BadRequest", f"Property '{sorted(unknown)[0]}' does not exist on type "
                             "'microsoft.graph.internalDomainFederation'.")
        for name, allowed in ENUMS.items():
            if name in body and body[name] not in allowed:
                raise GraphError(400, "Request_BadRequest", f"Invalid value '{body[name]}' for property '{name}'.")
        for name in FIELDS - set(ENUMS) - {"isSignedAuthenticationRequestRequired"}:
            if body.get(name) is not None and not isinstance(body[name], str):
                raise GraphError(400, "Request_BadRequest", f"Invalid value for property '{name}': a string.")
        flag = body.get("isSignedAuthenticationRequestRequired")
        if flag is not None and not isinstance(flag, bool):
            raise GraphError(400, "Request_BadRequest", "Invalid value for property "
                             "'isSignedAuthenticationRequestRequired': a boolean.")
        return {k: v for k, v in body.items() if k in FIELDS}

    async def list_domains(request: Request, caller: Caller) -> dict[str, Any]:
        return page(request, [view(d) for d in tenant.domains], context=f"{sim.base_url}/v1.0/$metadata#domains")

    async def get_domain(request: Request, caller: Caller) -> dict[str, Any]:
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#domains/$entity",
                **view(domain_or_404(request.path_params["id"]))}

    async def list_config(request: Request, caller: Caller) -> dict[str, Any]:
        domain = domain_or_404(request.path_params["id"])
        config_or_404(domain, None)
        return page(request, [config(domain)],
                    context=f"{sim.base_url}/v1.0/$metadata#domains('{domain['id']}')/federationConfiguration")

    async def create_config(request: Request, caller: Caller) -> Any:
        domain = domain_or_404(request.path_params["id"])
        body = checked(await json_body(request))
        if not domain.get("isVerified"):
            raise GraphError(400, "Request_BadRequest", f"Domain '{domain['id']}' is not verified: only verified "
                             "domains can be federated.")
        if domain.get("isInitial"):
            raise GraphError(400, "Request_BadRequest", f"Domain '{domain['id']}' is the initial domain of the "
                             "tenant and cannot be federated.")
        if domain.get("federationConfiguration"):
            raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", f"Domain '{domain['id']}' already has "
                             "a federation configuration; update it instead.")
        for required in ("issuerUri", "passiveSignInUri"):
            if not body.get(required):
                raise GraphError(400, "Request_BadRequest", f"The property '{required}' is required.")
        stored = {"id": str(uuid.uuid4()), "displayName": None, "metadataExchangeUri": None, "signOutUri": None,
                  "activeSignInUri": None, "signingCertificate": None, "nextSigningCertificate": None,
                  "preferredAuthenticationProtocol": "wsFed", "promptLoginBehavior": None,
                  "isSignedAuthenticationRequestRequired": False,
                  "federatedIdpMfaBehavior": "acceptIfMfaDoneByFederatedIdp", **body,
                  "signingCertificateUpdateStatus": {"certificateUpdateResult": "Success", "lastRunDateTime": _now()}}
        domain["federationConfiguration"] = stored
        domain["authenticationType"] = "Federated"
        return JSONResponse({"@odata.context": f"{sim.base_url}/v1.0/$metadata#domains('{domain['id']}')/"
                             "federationConfiguration/$entity", **config(domain)}, status_code=201)

    async def get_config(request: Request, caller: Caller) -> dict[str, Any]:
        domain = domain_or_404(request.path_params["id"])
        config_or_404(domain, request.path_params["fid"])
        return config(domain)

    async def update_config(request: Request, caller: Caller) -> dict[str, Any]:
        domain = domain_or_404(request.path_params["id"])
        current = config_or_404(domain, request.path_params["fid"])
        body = checked(await json_body(request))
        for required in ("issuerUri", "passiveSignInUri"):
            if required in body and not body[required]:
                raise GraphError(400, "Request_BadRequest", f"The property '{required}' cannot be empty.")
        current.update(body)
        if "signingCertificate" in body or "nextSigningCertificate" in body:
            current["signingCertificateUpdateStatus"] = {"certificateUpdateResult": "Success",
                                                         "lastRunDateTime": _now()}
        return config(domain)

    async def delete_config(request: Request, caller: Caller) -> None:
        domain = domain_or_404(request.path_params["id"])
        config_or_404(domain, request.path_params["fid"])
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
