"""Login: OpenID configuration, JWKS, the client-credentials token endpoint, and managed identity.

Token endpoint: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
(client_secret, or client_assertion signed with a registered certificate:
https://learn.microsoft.com/entra/identity-platform/certificate-credentials). Errors carry `error`,
`error_description` with the AADSTS code, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
Managed identity, App Service protocol:
https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
import uuid
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.entra.core import GRAPH_RESOURCE, Simulator
from local.entra.state import App
from local.entra.tokens import certificate_thumbprints

VAULT_RESOURCE = "https://vault.azure.net"
#: Event Grid's data plane: the app publishes events with a token for it (docs/events.md).
EVENTGRID_RESOURCE = "https://eventgrid.azure.net"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _login_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    trace = str(uuid.uuid4())
    return JSONResponse({"error": error, "error_description": f"AADSTS{code}: {description} Trace ID: {trace}",
                         "error_codes": [code], "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                         "trace_id": trace, "correlation_id": str(uuid.uuid4())}, status_code=status)


def _resource(scope: str, sim: Simulator) -> str | None:
    """The resource of a `.default` scope; None when it is not one the tenant knows."""
    if not scope.endswith("/.default"):
        return None
    resource = scope[: -len("/.default")]
    if resource in (GRAPH_RESOURCE, VAULT_RESOURCE, EVENTGRID_RESOURCE):
        return resource
    if resource.startswith("api://") or resource in sim.tenant.apps:
        return resource
    return None


def routes(sim: Simulator) -> list[Route]:
    """The login routes."""

    async def openid_configuration(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not sim.matches_tenant(tenant):
            return _login_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{sim.base_url}/{sim.tenant.tenantId}"
        return JSONResponse({
            "issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize", "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU", "cloud_instance_name": "127.0.0.1", "request_uri_parameter_supported": False,
        })

    async def keys(request: Request) -> Response:
        return JSONResponse(sim.signer.jwks())

    def _issue(app: App, resource: str) -> dict[str, Any]:
        # App-only tokens carry the app roles assigned to the caller on the resource's API.
        # https://learn.microsoft.com/entra/identity-platform/howto-add-app-roles-in-apps#assign-app-roles-to-applications
        api = resource.removeprefix("api://")
        roles = sorted(app.graphRoles) if resource == GRAPH_RESOURCE else sorted(app.apiRoles.get(api, []))
        token, expires = sim.signer.issue(issuer=sim.issuer(), audience=resource, tenant_id=sim.tenant.tenantId,
                                          app_id=app.clientId, object_id=app.servicePrincipalId, roles=roles)
        return {"token_type": "Bearer", "expires_in": expires - int(time.time()),
                "ext_expires_in": expires - int(time.time()), "access_token": token, "expires_on": expires}

    def _check_assertion(app: App, assertion: str, token_url: str, canonical_url: str) -> str | None:
        """None when the client assertion is valid; else the AADSTS description."""
        # Some clients pad the JWT segments with '=' and sign the padded text; it is verified as sent.
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "The client assertion is not a JWT."
        # Thumbprints are base64url; some clients pad them with '='.
        given_sha1 = str(header["x5t"]).rstrip("=") if header.get("x5t") else None
        given_sha256 = str(header["x5t#S256"]).rstrip("=") if header.get("x5t#S256") else None
        if given_sha1 is None and given_sha256 is None:
            return "The client assertion names no certificate (x5t or x5t#S256)."
        for pem in app.certificates:
            x5t, x5t256, key = certificate_thumbprints(pem)
            if given_sha1 not in (None, x5t) or given_sha256 not in (None, x5t256):
                continue
            try:
                claims = jwt.decode(assertion, key, algorithms=["RS256", "PS256"],
                                    audience=list(dict.fromkeys([token_url, canonical_url])),
                                    options={"require": ["exp", "aud", "iss", "sub", "jti"]})
            except jwt.InvalidAudienceError:
                return f"The audience of the client assertion must be {token_url}."
            except jwt.ExpiredSignatureError:
                return "The client assertion has expired."
            except jwt.PyJWTError as exc:
                return f"Client assertion failed signature validation ({type(exc).__name__})."
            if claims.get("iss") != app.clientId or claims.get("sub") != app.clientId:
                return "The iss and sub claims of the client assertion must be the client id."
            jti = str(claims["jti"])
            now = time.time()
            for old in [k for k, v in sim.used_assertions.items() if v < now]:
                del sim.used_assertions[old]
            if jti in sim.used_assertions:
                return "The client assertion was already used (jti replay)."
            sim.used_assertions[jti] = float(claims["exp"])
            return None
        return "The certificate with identifier used to sign the client assertion is not registered on application."

    async def token(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not sim.matches_tenant(tenant):
            return _login_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        # application/x-www-form-urlencoded, parsed without a multipart library.
        form = {k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return _login_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = str(form.get("client_id") or "")
        app = sim.tenant.apps.get(client_id)
        if app is None or app.managedIdentity:
            return _login_error(400, "unauthorized_client", 700016,
                                f"Application with identifier '{client_id}' was not found in the directory.")
        scope = str(form.get("scope") or "")
        resource = _resource(scope, sim)
        if resource is None and scope.endswith("/.default"):
            # A well-formed scope for a resource the tenant does not know (e.g. another cloud's Graph), as Entra
            # answers it: https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS500011).
            return _login_error(400, "invalid_resource", 500011, f"The resource principal named "
                                f"{scope[: -len('/.default')]} was not found in the tenant named {tenant}. This can "
                                "happen if the application has not been installed by the administrator of the "
                                "tenant or consented to by any user in the tenant. You might have sent your "
                                "authentication request to the wrong tenant.")
        if resource is None:
            return _login_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client "
                                "credential flows must have a scope value with /.default suffixed to the resource "
                                "identifier (application ID URI).")
        token_url = f"{sim.base_url}/{tenant}/oauth2/v2.0/token"
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return _login_error(400, "invalid_request", 50027, "Invalid client_assertion_type.")
            # The assertion's audience is the token URL as the client built it: with the tenant id or a
            # domain name, whichever it was given.
            problem = _check_assertion(app, str(form["client_assertion"]), token_url,
                                       f"{sim.base_url}/{sim.tenant.tenantId}/oauth2/v2.0/token")
            if problem:
                return _login_error(401, "invalid_client", 700027, problem)
        elif form.get("client_secret"):
            if str(form["client_secret"]) not in app.secrets:
                return _login_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the "
                                    "secret being sent in the request is the client secret value, not the client "
                                    "secret ID, for a secret added to app '" + client_id + "'.")
        else:
            return _login_error(401, "invalid_client", 7000218, "The request body must contain the following "
                                "parameter: 'client_assertion' or 'client_secret'.")
        body = _issue(app, resource)
        body.pop("expires_on")
        return JSONResponse(body, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    async def managed_identity(request: Request) -> Response:
        if sim.identity_header is None or request.headers.get("x-identity-header") != sim.identity_header:
            return JSONResponse({"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or "
                                 "wrong."}, status_code=401)
        resource = request.query_params.get("resource", "").rstrip("/")
        if resource.endswith("/.default"):
            resource = resource[: -len("/.default")]
        if resource not in (GRAPH_RESOURCE, VAULT_RESOURCE):
            return JSONResponse({"statusCode": 400, "message": f"Resource {resource!r} is not known."},
                                status_code=400)
        wanted = request.query_params.get("client_id")
        identities = [a for a in sim.tenant.apps.values() if a.managedIdentity]
        app = next((a for a in identities if wanted in (None, a.clientId)), None)
        if app is None:
            return JSONResponse({"statusCode": 400, "message": "No managed identity matches the client_id."},
                                status_code=400)
        body = _issue(app, resource)
        return JSONResponse({"access_token": body["access_token"], "expires_on": str(body["expires_on"]),
                             "resource": resource, "token_type": "Bearer", "client_id": app.clientId})

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/msi/token", managed_identity, methods=["GET"]),
    ]
