"""Requests and checks the FIDO2 conformance modules share: Graph's error shape, creation options, the
documented registration body."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

POLICY = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
POLICY_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"

# The request of authentication-post-fido2methods, as published (its attestation object is shortened).
DOCUMENTED_REGISTRATION: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
    "displayName": "My security key",
    "publicKeyCredential": {
        "@odata.type": "#microsoft.graph.webauthnPublicKeyCredential",
        "id": "OEVEMkQzNTctNzNEMi00RjEzLTk5MjYtODdGNjFCMjRBMzQy",
        "response": {
            "@odata.type": "#microsoft.graph.webauthnAuthenticatorAttestationResponse",
            "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiUVRVMU16TkROekF0TmtNM05pMDBOVFJETF"
                              "VKRFEwWXRSVFJFTURaQ05UQkZSVFJFIiwib3JpZ2luIjoiaHR0cHM6Ly9sb2dpbi5taWNyb3NvZnRvbmxpbm"
                              "UuY29tIiwiY3Jvc3NPcmlnaW4iOmZhbHNlfQ",
            "attestationObject": "o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVikSZYN5YgOjGh0NBcPZHZgW4/krrmihjLHmVzzuoMdl2Nd"
                                 "AAAAALraVWanqkAfvZZFYZpVEg0AIDhFRDJEMzU3LTczRDItNEYxMy05OTI2LTg3RjYxQjI0QTM0MqUBAg"
                                 "MmIAEhWCAMKJ7T4r8w5F6JGxJLJXNR0hV1MZF1aZ1F0pZXq5p5"},
        "clientExtensionResults": {"@odata.type": "#microsoft.graph.webauthnAuthenticationExtensionsClientOutputs"}}}


def graph_error(response: httpx.Response, status: int, code: str) -> str:
    # https://learn.microsoft.com/graph/errors
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])
    return str(error["message"])


def options_for(graph: httpx.Client, user: str, api: str = "v1.0", suffix: str = "") -> dict[str, Any]:
    response = graph.get(f"/{api}/users/{user}/authentication/fido2Methods/creationOptions{suffix}")
    assert response.status_code == 200, response.text
    body = dict(response.json())
    if api == "beta":
        # beta's page shows the options inside `value`, the context with them, no type annotations.
        assert set(body) == {"value"}
        body = dict(body["value"])
        assert body["@odata.context"].endswith("/beta/$metadata#microsoft.graph.webauthnCredentialCreationOptions")
        assert "@odata.type" not in json.dumps(body)
    return body


def documented_body(credential: dict[str, Any], name: str = "My security key") -> dict[str, Any]:
    """A registration in the documented request shape, annotations included."""
    body = json.loads(json.dumps(DOCUMENTED_REGISTRATION))
    body["displayName"] = name
    body["publicKeyCredential"]["id"] = credential["id"]
    body["publicKeyCredential"]["response"].update(credential["response"])
    return body


def b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
