"""Entra's FIDO2 provisioning API on the GraphApi port (implements shared.services.devices.PasskeyDirectory).

Paths and shapes follow Microsoft's pages:
https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions (v1.0 takes no
parameter and no query string; only beta takes challengeTimeoutInMinutes, 5 to 43,200),
https://learn.microsoft.com/graph/api/authentication-post-fido2methods (201 with the method),
https://learn.microsoft.com/graph/api/fido2authenticationmethod-list (paged),
https://learn.microsoft.com/graph/api/fido2authenticationmethod-delete (204), and
https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get (the tenant policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import InvalidInput, NotFound
from shared.services.devices import Revocation
from shared.services.ports import GraphApi, GraphResponse, JsonObject

POLICY_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
DEFAULT_TIMEOUT_MINUTES = 5


def unwrapped(options: JsonObject) -> JsonObject:
    """The webauthnCredentialCreationOptions whichever way Graph wraps them.

    v1.0's page shows the options as the body; beta's shows them inside `value`
    (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-beta).
    """
    inner = options.get("value")
    if "publicKey" not in options and isinstance(inner, dict):
        return inner
    return options


def _methods(user_id: str) -> str:
    return f"/users/{user_id}/authentication/fido2Methods"


class GraphPasskeyDirectory:
    """One connection's passkeys in Entra."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph

    async def creation_options(self, user_id: str, timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES) -> JsonObject:
        """webauthnCredentialCreationOptions for a user, valid for `timeout_minutes`."""
        if timeout_minutes == DEFAULT_TIMEOUT_MINUTES:
            # v1.0 answers 405 when the function is called with any argument or query string.
            return unwrapped(await self._graph.get(f"{_methods(user_id)}/creationOptions"))
        if not 5 <= timeout_minutes <= 43200:
            raise InvalidInput(f"challengeTimeoutMinutes must be 5 to 43,200, not {timeout_minutes}",
                               field="features.passkeys.challengeTimeoutMinutes")
        return unwrapped(await self._graph.get(
            f"{_methods(user_id)}/creationOptions(challengeTimeoutInMinutes={timeout_minutes})", api="beta"))

    async def register(self, user_id: str, display_name: str, credential: Mapping[str, Any]) -> GraphResponse:
        """POST the attested credential; Graph answers 201 with the fido2AuthenticationMethod."""
        response = credential.get("response") or {}
        body: JsonObject = {
            "displayName": display_name,
            "publicKeyCredential": {
                "id": credential.get("id"),
                "response": {"clientDataJSON": response.get("clientDataJSON"),
                             "attestationObject": response.get("attestationObject")},
                "clientExtensionResults": credential.get("clientExtensionResults") or {}}}
        return await self._graph.send("POST", _methods(user_id), body=body)

    async def methods(self, user_id: str) -> list[JsonObject]:
        """Every fido2AuthenticationMethod of the user (all pages; an incomplete read raises Stop)."""
        found: list[JsonObject] = []
        async for page in self._graph.pages(_methods(user_id)):
            found.extend(page["value"])
        return found

    async def revoke(self, user_id: str, method_id: str) -> Revocation:
        """Delete one method; a 404 means it is already gone, which is what was wanted."""
        try:
            response = await self._graph.send("DELETE", f"{_methods(user_id)}/{method_id}")
        except NotFound as err:
            return Revocation("already-gone", err.request_id)
        return Revocation("revoked", response.request_id)

    async def policy(self) -> JsonObject:
        """The tenant's fido2AuthenticationMethodConfiguration."""
        return await self._graph.get(POLICY_PATH)
