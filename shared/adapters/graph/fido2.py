"""Entra's FIDO2 provisioning API on the Graph gateway (implements PasskeyDirectory).

Requests follow Microsoft's pages, built with msgraph-sdk's request builders:
https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions (v1.0 takes no
parameter and no query string; only beta takes challengeTimeoutInMinutes, 5 to 43,200),
https://learn.microsoft.com/graph/api/authentication-post-fido2methods (201 with the method),
https://learn.microsoft.com/graph/api/fido2authenticationmethod-list (paged),
https://learn.microsoft.com/graph/api/fido2authenticationmethod-delete (204), and
https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get (the tenant policy).

Answers are read into the bridge's records (CreationOptions, Fido2Method), not msgraph models: parsing
one fido2AuthenticationMethod into msgraph's model took 16 ms of CPU on this machine, more than the
registration's whole own time (p99 11.7 ms, `python -m bench.passkeys`); and the creation options go
to the device as WebAuthn JSON, which a round trip through the models would not keep as Entra sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.fido2_authentication_method import Fido2AuthenticationMethod
from msgraph.generated.models.webauthn_authentication_extensions_client_outputs import (
    WebauthnAuthenticationExtensionsClientOutputs,
)
from msgraph.generated.models.webauthn_authenticator_attestation_response import (
    WebauthnAuthenticatorAttestationResponse,
)
from msgraph.generated.models.webauthn_public_key_credential import WebauthnPublicKeyCredential

from shared.adapters.graph.gateway import GraphApi
from shared.errors import InvalidInput, NotFound
from shared.services.ports import CreationOptions, Fido2Method, JsonObject, Revocation

DEFAULT_TIMEOUT_MINUTES = 5
#: The fido2 method configuration's id in the authentication methods policy.
FIDO2 = "fido2"


def unwrapped(options: JsonObject) -> JsonObject:
    """The webauthnCredentialCreationOptions whichever way Graph wraps them.

    v1.0's page shows the options as the body; beta's shows them inside `value`
    (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-beta).
    """
    inner = options.get("value")
    if "publicKey" not in options and isinstance(inner, dict):
        return inner
    return options


def webauthn_json(value: Any) -> Any:
    """Graph's options without its `@odata.*` annotations, which no WebAuthn client expects."""
    if isinstance(value, dict):
        return {k: webauthn_json(v) for k, v in value.items() if not k.startswith("@odata.")}
    if isinstance(value, list):
        return [webauthn_json(v) for v in value]
    return value


def creation_options(body: JsonObject) -> CreationOptions:
    """Graph's webauthnCredentialCreationOptions as the bridge's record."""
    options = unwrapped(body)
    expires = options.get("challengeTimeoutDateTime")
    return CreationOptions(public_key=webauthn_json(dict(options.get("publicKey") or {})),
                           challenge_expires=str(expires) if expires else None)


def fido2_method(body: JsonObject | None, request_id: str | None = None) -> Fido2Method:
    """A fido2AuthenticationMethod as the bridge's record."""
    body = body or {}

    def text(name: str) -> str | None:
        value = body.get(name)
        return str(value) if value is not None else None

    return Fido2Method(id=str(body.get("id") or ""), display_name=text("displayName"), aaguid=text("aaGuid"),
                       model=text("model"), attestation_level=text("attestationLevel"), created=text("createdDateTime"),
                       request_id=request_id)


class GraphPasskeyDirectory:
    """One connection's passkeys in Entra."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        self._requests = graph.requests

    def _methods(self, user_id: str) -> Any:
        return self._requests.users.by_user_id(user_id).authentication.fido2_methods

    async def creation_options(self, user_id: str,
                               timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES) -> CreationOptions:
        """webauthnCredentialCreationOptions for a user, valid for `timeout_minutes`."""
        request: RequestInformation = self._methods(user_id).creation_options.to_get_request_information()
        if timeout_minutes == DEFAULT_TIMEOUT_MINUTES:
            # v1.0 answers 405 when the function is called with any argument or query string.
            return creation_options(await self._graph.get(request))
        if not 5 <= timeout_minutes <= 43200:
            raise InvalidInput(f"challengeTimeoutMinutes must be 5 to 43,200, not {timeout_minutes}",
                               field="features.passkeys.challengeTimeoutMinutes")
        # Beta's function parameter, which v1.0's request builder does not have (the beta SDK is not a
        # dependency): the same template with the parameter filled in.
        request.url_template = str(request.url_template).replace(
            "creationOptions()", "creationOptions(challengeTimeoutInMinutes={challengeTimeoutInMinutes})")
        request.path_parameters = {**request.path_parameters, "challengeTimeoutInMinutes": timeout_minutes}
        return creation_options(await self._graph.get(request, api="beta"))

    async def register(self, user_id: str, display_name: str, credential: Mapping[str, Any]) -> Fido2Method:
        """POST the attested credential; Graph answers 201 with the fido2AuthenticationMethod."""
        response = credential.get("response") or {}
        method = Fido2AuthenticationMethod(display_name=display_name, public_key_credential=WebauthnPublicKeyCredential(
            id=credential.get("id"),
            response=WebauthnAuthenticatorAttestationResponse(
                client_data_j_s_o_n=response.get("clientDataJSON"),
                attestation_object=response.get("attestationObject")),
            client_extension_results=WebauthnAuthenticationExtensionsClientOutputs(
                additional_data=dict(credential.get("clientExtensionResults") or {}))))
        # msgraph-sdk's v1.0 builder for fido2Methods (as pinned) has no POST, though v1.0 documents it: the
        # builder's own GET request, made a POST with the method serialized as its body.
        request: RequestInformation = self._methods(user_id).to_get_request_information()
        request.http_method = Method.POST
        request.query_parameters = {}
        request.set_content_from_parsable(self._requests.request_adapter, "application/json", method)
        answer = await self._graph.send(request)
        return fido2_method(answer.body, answer.request_id)

    async def methods(self, user_id: str) -> list[Fido2Method]:
        """Every fido2AuthenticationMethod of the user (all pages; an incomplete read raises Stop)."""
        found: list[Fido2Method] = []
        async for page in self._graph.pages(self._methods(user_id).to_get_request_information()):
            found.extend(fido2_method(item) for item in page["value"])
        return found

    async def revoke(self, user_id: str, method_id: str) -> Revocation:
        """Delete one method; a 404 means it is already gone, which is what was wanted."""
        request = self._methods(user_id).by_fido2_authentication_method_id(method_id).to_delete_request_information()
        try:
            response = await self._graph.send(request)
        except NotFound as err:
            return Revocation("already-gone", err.request_id)
        return Revocation("revoked", response.request_id)

    async def policy(self) -> JsonObject:
        """The tenant's fido2AuthenticationMethodConfiguration (its properties, without annotations)."""
        configurations = self._requests.policies.authentication_methods_policy.authentication_method_configurations
        body = await self._graph.get(configurations.by_authentication_method_configuration_id(FIDO2)
                                     .to_get_request_information())
        return {k: v for k, v in body.items() if not k.startswith("@odata.")}
