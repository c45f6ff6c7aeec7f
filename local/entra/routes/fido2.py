"""Graph FIDO2 provisioning: creation options, register, list, get, delete, and the FIDO2 policy.

Pages followed (learn.microsoft.com/graph/api/...):
- fido2authenticationmethod-creationoptions: v1.0 takes no parameter (a fixed 5-minute challenge);
  beta takes challengeTimeoutInMinutes, 5 to 43,200, and answers `{"value": {options}}` as its page
  shows. The challenge and the credential ids are
  documented as base64url without padding; the ids in excludeCredentials are sent here as padded
  standard base64, the quirk third parties report (webauthn-interop issues 21 and 28), so clients
  are tested against it. A query string on v1.0 is answered 405 (webauthn-interop issue 13).
- authentication-post-fido2methods: 201 with the fido2AuthenticationMethod. Entra checks the
  challenge it issued to that user and its expiry, the origin and rpId, the flags, the format and its
  statement, the tenant's attestation enforcement and key restrictions (local/entra/registration.py, the
  simulator's own checks, independent of the bridge's verifier); the provisioning API also requires the policy's
  self-service setup flag (Graph known issues) and the user in the policy's targets.
- fido2authenticationmethod-list / -get / -delete (204; itemNotFound otherwise).
- fido2authenticationmethodconfiguration-get / -update (PATCH needs @odata.type; 204).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from typing import Any

from fido2.webauthn import RegistrationResponse
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body, page
from local.entra.registration import Refused, check
from local.entra.state import now_iso
from local.mds import served_roots

PASSKEY_WRITE = ("UserAuthMethod-Passkey.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All")
PASSKEY_READ = (*PASSKEY_WRITE, "UserAuthMethod-Passkey.Read.All", "UserAuthenticationMethod.Read.All")
POLICY_READ = ("Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod")
POLICY_WRITE = ("Policy.ReadWrite.AuthenticationMethod",)
POLICY_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"
METHOD_TYPE = "#microsoft.graph.fido2AuthenticationMethod"
_POLICY_BOOLEANS = ("isSelfServiceRegistrationAllowed", "isAttestationEnforced")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Either base64 alphabet, with or without padding."""
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_").rstrip("=") + "=" * (-len(text) % 4))


def _boolean(name: str, value: Any) -> bool:
    # The documented PATCH example sends "true" as a string; OData accepts both forms.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise GraphError(400, "BadRequest", f"Invalid value for property '{name}': a boolean is expected.")


def _without_annotations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_annotations(v) for k, v in value.items() if not k.startswith("@odata.")}
    return value


def _plain(value: Any) -> Any:
    """`value` without `@odata.*` annotations, in lists too."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("@odata.")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _public(method: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": METHOD_TYPE, **{k: v for k, v in method.items() if k != "credentialId"}}


def routes(sim: Simulator) -> list[Route]:
    """The FIDO2 routes."""
    tenant = sim.tenant

    def user_or_404(key: str) -> Any:
        user = tenant.user(key)
        if user is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        return user

    def check_policy(user_id: str) -> dict[str, Any]:
        policy = tenant.fido2Policy
        if policy.get("state") != "enabled":
            raise GraphError(403, "accessDenied", "The FIDO2 authentication method is disabled by policy.")
        if policy.get("isSelfServiceRegistrationAllowed") is False:
            raise GraphError(403, "accessDenied", "Passkey provisioning requires 'Allow self-service set up' in "
                                                  "the FIDO2 authentication method policy.")
        groups = tenant.transitive_groups_of(user_id) | {"all_users"}
        included = {str(t.get("id")) for t in policy.get("includeTargets") or []}
        excluded = {str(t.get("id")) for t in policy.get("excludeTargets") or []}
        if not included & groups or excluded & groups:
            raise GraphError(403, "accessDenied", "The user is not targeted by the FIDO2 authentication method "
                                                  "policy.")
        return policy

    async def creation_options(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        beta = request.url.path.startswith("/beta/")
        if not beta and request.url.query:
            raise GraphError(405, "Request_UnsupportedQuery", "Unsupported query on creationOptions.")
        minutes = 5
        raw_args = request.path_params.get("args")
        if raw_args is not None:
            if not beta:
                raise GraphError(400, "BadRequest", "challengeTimeoutInMinutes is only available on beta.")
            name, _, value = raw_args.partition("=")
            if name.strip() != "challengeTimeoutInMinutes":
                raise GraphError(400, "BadRequest", f"Unknown function parameter '{name.strip()}'.")
            try:
                minutes = int(value)
            except ValueError:
                raise GraphError(400, "BadRequest", "Invalid challengeTimeoutInMinutes.") from None
            if not 5 <= minutes <= 43200:
                raise GraphError(400, "BadRequest", "challengeTimeoutInMinutes must be between 5 and 43200.")
        check_policy(user.id)
        challenge = os.urandom(32)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
        tenant.challenges[_b64(challenge)] = {"userId": user.id, "expires": expires.isoformat()}
        sim.store.changed()
        options = _options(user, challenge, expires, minutes, exclude=[
                   {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialDescriptor",
                    "id": base64.b64encode(_unb64(m["credentialId"])).decode(), "type": "public-key",
                    "transports": []} for m in tenant.fido2.get(user.id, [])])
        if not beta:
            return options
        # beta wraps the options in `value`, with the context inside and no type annotations, as its page
        # shows (fido2authenticationmethod-creationoptions?view=graph-rest-beta).
        return {"value": {"@odata.context": f"{sim.base_url}/beta/$metadata#microsoft.graph."
                                            "webauthnCredentialCreationOptions", **_plain(options)}}

    def _options(user: Any, challenge: bytes, expires: dt.datetime, minutes: int,
                 exclude: list[dict[str, Any]]) -> dict[str, Any]:
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
                    "pubKeyCredParams": [
                        {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialParameters",
                         "type": "public-key", "alg": -7},
                        {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialParameters",
                         "type": "public-key", "alg": -257}],
                    "excludeCredentials": exclude,
                    "authenticatorSelection": {
                        "@odata.type": "#microsoft.graph.webauthnAuthenticatorSelectionCriteria",
                        "authenticatorAttachment": "cross-platform", "requireResidentKey": True,
                        "userVerification": "required"},
                    "extensions": {"@odata.type": "#microsoft.graph.webauthnAuthenticationExtensionsClientInputs",
                                   "hmacCreateSecret": True, "enforceCredentialProtectionPolicy": True,
                                   "credentialProtectionPolicy": "userVerificationOptional"}}}

    async def register(request: Request, caller: Caller) -> Any:
        user = user_or_404(request.path_params["id"])
        body = await json_body(request)
        credential = body.get("publicKeyCredential")
        if not isinstance(credential, dict) or not isinstance(credential.get("response"), dict):
            raise GraphError(400, "invalidRequest", "publicKeyCredential with a response is required.")
        display_name = body.get("displayName", "Passkey")
        if not isinstance(display_name, str) or len(display_name) > 200:
            raise GraphError(400, "invalidRequest", "displayName must be a string of at most 200 characters.")
        policy = check_policy(user.id)
        response = _without_annotations(credential["response"])
        data = {"id": credential.get("id"), "rawId": credential.get("id"), "type": "public-key",
                "response": {"clientDataJSON": response.get("clientDataJSON"),
                             "attestationObject": response.get("attestationObject")}}
        try:
            parsed = RegistrationResponse.from_dict(data)
            client_data = parsed.response.client_data
            attestation = parsed.response.attestation_object
            challenge = _b64(client_data.challenge)
        except Exception:
            # Bad base64, JSON or CBOR surfaces as whatever the parser raises; Entra answers 400 for all.
            raise GraphError(400, "invalidRequest", "The publicKeyCredential could not be parsed.") from None
        issued = tenant.challenges.get(challenge)
        if issued is None or issued["userId"] != user.id:
            raise GraphError(400, "invalidRequest", "The challenge was not issued for this user.")
        if dt.datetime.fromisoformat(issued["expires"]) < dt.datetime.now(dt.UTC):
            raise GraphError(400, "invalidRequest", "The challenge has expired.")
        known = {m["credentialId"] for methods in tenant.fido2.values() for m in methods}
        try:
            verified = check(client_data, attestation, raw_id=bytes(parsed.raw_id), challenge=_unb64(challenge),
                             roots=served_roots(), attestation_enforced=bool(policy.get("isAttestationEnforced")),
                             restrictions=policy.get("keyRestrictions") or {}, known=known)
        except Refused as err:
            raise GraphError(400, "invalidRequest", f"The passkey could not be registered: {err}") from None
        del tenant.challenges[challenge]
        method = {"id": _b64(os.urandom(24)), "displayName": display_name, "createdDateTime": now_iso(),
                  "aaGuid": verified.aaguid, "model": "Simulated authenticator", "attestationCertificates": [],
                  "attestationLevel": "attested" if verified.attested else "notAttested",
                  "passkeyType": "deviceBound", "credentialId": verified.credential_id}
        tenant.fido2.setdefault(user.id, []).append(method)
        return JSONResponse(_public(method), status_code=201)

    async def list_methods(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        return page(request, [_public(m) for m in tenant.fido2.get(user.id, [])],
                    context=f"users('{user.id}')/authentication/fido2Methods")

    async def get_method(request: Request, caller: Caller) -> dict[str, Any]:
        user = user_or_404(request.path_params["id"])
        for method in tenant.fido2.get(user.id, []):
            if method["id"] == request.path_params["method"]:
                return _public(method)
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
                "@odata.type": POLICY_TYPE, "id": "Fido2", "excludeTargets": [], **tenant.fido2Policy}

    async def update_policy(request: Request, caller: Caller) -> None:
        body = await json_body(request)
        if body.get("@odata.type") != POLICY_TYPE:
            raise GraphError(400, "BadRequest", f"The '@odata.type' property with value '{POLICY_TYPE}' is required.")
        changes: dict[str, Any] = {}
        for name, value in body.items():
            if name.startswith("@odata."):
                continue
            if name == "state":
                if value not in ("enabled", "disabled"):
                    raise GraphError(400, "BadRequest", "state must be 'enabled' or 'disabled'.")
                changes[name] = value
            elif name in _POLICY_BOOLEANS:
                changes[name] = _boolean(name, value)
            elif name == "keyRestrictions":
                if not isinstance(value, dict):
                    raise GraphError(400, "BadRequest", "keyRestrictions must be an object.")
                merged = {**(tenant.fido2Policy.get("keyRestrictions") or {}), **_without_annotations(value)}
                if merged.get("enforcementType") not in ("allow", "block"):
                    raise GraphError(400, "BadRequest", "keyRestrictions.enforcementType must be 'allow' or 'block'.")
                merged["isEnforced"] = _boolean("keyRestrictions.isEnforced", merged.get("isEnforced", False))
                merged["aaGuids"] = [str(uuid.UUID(str(a))) for a in merged.get("aaGuids") or []]
                changes[name] = merged
            elif name in ("includeTargets", "excludeTargets"):
                if not isinstance(value, list):
                    raise GraphError(400, "BadRequest", f"{name} must be a collection.")
                changes[name] = [_without_annotations(t) for t in value]
            elif name == "id":
                continue
            else:
                raise GraphError(400, "BadRequest", f"Property '{name}' does not exist on type "
                                                    "'microsoft.graph.fido2AuthenticationMethodConfiguration'.")
        tenant.fido2Policy.update(changes)
        return None

    found: list[Route] = []
    base = "/users/{id}/authentication/fido2Methods"
    for version in ("v1.0", "beta"):
        def add(path: str, handler: Any, methods: list[str], version: str = version, **options: Any) -> None:
            found.append(Route(f"/{version}{path}", graph_route(sim, handler, **options), methods=methods))

        add(f"{base}/creationOptions", creation_options, ["GET"], permissions=PASSKEY_WRITE)
        # The function call with no argument, as msgraph-sdk's request builder spells it.
        add(f"{base}/creationOptions()", creation_options, ["GET"], permissions=PASSKEY_WRITE)
        add(f"{base}/creationOptions({{args}})", creation_options, ["GET"], permissions=PASSKEY_WRITE)
        add(base, register, ["POST"], permissions=PASSKEY_WRITE, write=True)
        add(base, list_methods, ["GET"], permissions=PASSKEY_READ)
        add(f"{base}/{{method}}", get_method, ["GET"], permissions=PASSKEY_READ)
        add(f"{base}/{{method}}", delete_method, ["DELETE"], permissions=PASSKEY_WRITE, write=True)
        policy = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
        add(policy, get_policy, ["GET"], permissions=POLICY_READ)
        add(policy, update_policy, ["PATCH"], permissions=POLICY_WRITE, write=True)
    return found
