"""Graph FIDO2 provisioning: creation options, register, list, get, delete, and the FIDO2 policy.

https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions (v1.0 without
parameters; beta takes challengeTimeoutInMinutes, 5 to 43,200), authentication-post-fido2methods,
fido2authenticationmethod-list, fido2authenticationmethod-delete,
fido2authenticationmethodconfiguration-get. Entra checks the challenge it issued to that user,
origin and rpId, the format and attestation, and the tenant's key restrictions.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from typing import Any

from fido2.webauthn import RegistrationResponse
from starlette.requests import Request
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body, page
from local.entra.state import now_iso
from shared.domain.attestation import AttestationRejected, KeyRestrictions, verify

PASSKEY_WRITE = ("UserAuthMethod-Passkey.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All")
PASSKEY_READ = (*PASSKEY_WRITE, "UserAuthMethod-Passkey.Read.All", "UserAuthenticationMethod.Read.All")
POLICY_READ = ("Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def routes(sim: Simulator) -> list[Route]:
    """The FIDO2 routes."""
    tenant = sim.tenant

    def user_or_404(key: str) -> Any:
        user = tenant.user(key)
        if user is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        return user

    async def creation_options(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        minutes = 5
        raw_args = request.path_params.get("args")
        if raw_args is not None:
            if not request.url.path.startswith("/beta/"):
                raise GraphError(400, "BadRequest", "challengeTimeoutInMinutes is only available on beta.")
            try:
                minutes = int(raw_args.split("=", 1)[1])
            except (IndexError, ValueError):
                raise GraphError(400, "BadRequest", "Invalid challengeTimeoutInMinutes.") from None
            if not 5 <= minutes <= 43200:
                raise GraphError(400, "BadRequest", "challengeTimeoutInMinutes must be between 5 and 43200.")
        challenge = os.urandom(32)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
        tenant.challenges[_b64(challenge)] = {"userId": user.id, "expires": expires.isoformat()}
        sim.store.changed()
        exclude = [{"id": base64.b64encode(base64.urlsafe_b64decode(m["credentialId"] + "==")).decode(),
                    "type": "public-key", "transports": []} for m in tenant.fido2.get(user.id, [])]
        # The challenge is base64url without padding, as the creationOptions page documents; credential
        # ids in excludeCredentials come as padded standard base64, the quirk FACTS.md records, which
        # clients must repair.
        return {"@odata.type": "#microsoft.graph.webauthnCredentialCreationOptions",
                "challengeTimeoutDateTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "publicKey": {
                    "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions",
                    "challenge": _b64(challenge), "timeout": minutes * 60000,
                    "attestation": "direct",
                    "rp": {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialRpEntity",
                           "id": "login.microsoftonline.com", "name": "Microsoft"},
                    "user": {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialUserEntity",
                             "id": _b64(uuid.UUID(user.id).bytes), "name": user.userPrincipalName,
                             "displayName": user.displayName},
                    "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
                    "excludeCredentials": exclude,
                    "authenticatorSelection": {"authenticatorAttachment": "cross-platform", "requireResidentKey": True,
                                               "userVerification": "required"},
                    "extensions": {"hmacCreateSecret": True, "enforceCredentialProtectionPolicy": True,
                                   "credentialProtectionPolicy": "userVerificationOptional"}}}

    async def register(request: Request, caller: Caller) -> Any:
        user = user_or_404(request.path_params["id"])
        body = await json_body(request)
        credential = body.get("publicKeyCredential")
        if not isinstance(credential, dict):
            raise GraphError(400, "invalidRequest", "publicKeyCredential is required.")
        policy = tenant.fido2Policy
        if policy.get("state") != "enabled":
            raise GraphError(403, "accessDenied", "The FIDO2 authentication method is disabled by policy.")
        data = {"id": credential.get("id"), "rawId": credential.get("id"), "type": "public-key",
                "response": credential.get("response") or {}}
        try:
            parsed = RegistrationResponse.from_dict(data)
            challenge = _b64(parsed.response.client_data.challenge)
        except (ValueError, KeyError, TypeError):
            raise GraphError(400, "invalidRequest", "The publicKeyCredential could not be parsed.") from None
        issued = tenant.challenges.get(challenge)
        if issued is None or issued["userId"] != user.id:
            raise GraphError(400, "invalidRequest", "The challenge was not issued for this user.")
        if dt.datetime.fromisoformat(issued["expires"]) < dt.datetime.now(dt.UTC):
            raise GraphError(400, "invalidRequest", "The challenge has expired.")
        known = [m["credentialId"] for methods in tenant.fido2.values() for m in methods]
        try:
            verified = verify(data, challenge=base64.urlsafe_b64decode(challenge + "=" * (-len(challenge) % 4)),
                              restrictions=KeyRestrictions.from_policy(policy), known_credential_ids=known,
                              attestation_enforced=bool(policy.get("isAttestationEnforced")))
        except AttestationRejected as err:
            raise GraphError(400, "invalidRequest", f"The passkey could not be registered: {err}") from None
        del tenant.challenges[challenge]
        method = {"id": _b64(os.urandom(24)), "displayName": str(body.get("displayName") or "Passkey"),
                  "createdDateTime": now_iso(), "aaGuid": verified.aaguid, "model": "Simulated authenticator",
                  "attestationCertificates": [], "attestationLevel": "attested" if verified.attestation_type ==
                  "basic" else "notAttested", "credentialId": verified.credential_id}
        tenant.fido2.setdefault(user.id, []).append(method)
        from starlette.responses import JSONResponse
        return JSONResponse({"@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
                             **{k: v for k, v in method.items() if k != "credentialId"}}, status_code=201)

    async def list_methods(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        return page(request, [{k: v for k, v in m.items() if k != "credentialId"}
                              for m in tenant.fido2.get(user.id, [])])

    async def get_method(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        for method in tenant.fido2.get(user.id, []):
            if method["id"] == request.path_params["method"]:
                return {k: v for k, v in method.items() if k != "credentialId"}
        raise GraphError(404, "itemNotFound", "The specified authentication method was not found.")

    async def delete_method(request: Request, caller: Caller) -> None:
        user = user_or_404(request.path_params["id"])
        methods = tenant.fido2.get(user.id, [])
        for method in methods:
            if method["id"] == request.path_params["method"]:
                methods.remove(method)
                return None
        raise GraphError(404, "itemNotFound", "The specified authentication method was not found.")

    async def get_policy(request: Request, caller: Caller) -> dict[str, Any]:
        return {"@odata.context": f"{sim.base_url}/v1.0/$metadata#authenticationMethodConfigurations/$entity",
                **tenant.fido2Policy}

    found: list[Route] = []
    base = "/users/{id}/authentication/fido2Methods"
    for version in ("v1.0", "beta"):
        def add(path: str, handler: Any, methods: list[str], version: str = version, **options: Any) -> None:
            found.append(Route(f"/{version}{path}", graph_route(sim, handler, **options), methods=methods))

        add(f"{base}/creationOptions", creation_options, ["GET"], permissions=PASSKEY_WRITE)
        add(f"{base}/creationOptions({{args}})", creation_options, ["GET"], permissions=PASSKEY_WRITE)
        add(base, register, ["POST"], permissions=PASSKEY_WRITE, write=True)
        add(base, list_methods, ["GET"], permissions=PASSKEY_READ)
        add(f"{base}/{{method}}", get_method, ["GET"], permissions=PASSKEY_READ)
        add(f"{base}/{{method}}", delete_method, ["DELETE"], permissions=PASSKEY_WRITE, write=True)
        add("/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2", get_policy, ["GET"],
            permissions=POLICY_READ)
    return found
