"""The simulator against the request and response examples of Microsoft's documentation.

Each test names the page its example comes from (learn.microsoft.com; source in the
microsoft-graph-docs-contrib repository) and checks status, members and error format.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx

from local.tls import TlsFiles
from tests.fixtures.entra import EntraFixture


def is_graph_error(response: httpx.Response, status: int, code: str) -> None:
    # https://learn.microsoft.com/graph/errors: error.code, error.message, error.innerError with
    # date, request-id and client-request-id; request-id also as a header.
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}
    assert response.headers["request-id"] == error["innerError"]["request-id"]


def test_token_endpoint_success_and_error_shapes(entra: EntraFixture, tls_files: TlsFiles) -> None:
    # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
    url = f"{entra.url}/{entra.tenant_id}/oauth2/v2.0/token"
    ok = httpx.post(url, verify=tls_files.client_context(), data={
        "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": entra.client_secret,
        "scope": "https://graph.microsoft.com/.default"})
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer"
    assert ok.json()["expires_in"] > 3000
    bad = httpx.post(url, verify=tls_files.client_context(), data={
        "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": "wrong",
        "scope": "https://graph.microsoft.com/.default"})
    assert bad.status_code == 401
    body = bad.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215")
    assert set(body) >= {"error_codes", "timestamp", "trace_id", "correlation_id"}
    scope = httpx.post(url, verify=tls_files.client_context(), data={
        "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": entra.client_secret,
        "scope": "https://graph.microsoft.com/User.Read"})
    assert scope.json()["error"] == "invalid_scope"


def test_openid_configuration(entra: EntraFixture, tls_files: TlsFiles) -> None:
    # https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
    config = httpx.get(f"{entra.url}/{entra.tenant_id}/v2.0/.well-known/openid-configuration",
                       verify=tls_files.client_context()).json()
    assert config["issuer"] == f"{entra.url}/{entra.tenant_id}/v2.0"
    assert {"token_endpoint", "authorization_endpoint", "jwks_uri"} <= set(config)


def test_user_update_password_204_and_complexity_400(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/user-update (example: update the passwordProfile -> 204)
    user = graph.get("/users", params={"$top": "1", "$select": "id"}).json()["value"][0]["id"]
    ok = graph.patch(f"/users/{user}", json={"passwordProfile": {"forceChangePasswordNextSignIn": False,
                                                                 "password": "xWwvJ]6NMw+bWH-d"}})
    assert ok.status_code == 204
    assert ok.content == b""
    bad = graph.patch(f"/users/{user}", json={"passwordProfile": {"password": "password"}})
    is_graph_error(bad, 400, "Request_BadRequest")
    assert "complexity" in bad.json()["error"]["message"]


def test_missing_token_and_unknown_user(graph: httpx.Client, entra: EntraFixture, tls_files: TlsFiles) -> None:
    # https://learn.microsoft.com/graph/resolve-auth-errors (401 InvalidAuthenticationToken)
    anonymous = httpx.get(f"{entra.url}/v1.0/users", verify=tls_files.client_context())
    is_graph_error(anonymous, 401, "InvalidAuthenticationToken")
    missing = graph.get("/users/00000000-0000-0000-0000-000000000000")
    is_graph_error(missing, 404, "Request_ResourceNotFound")


def test_list_users_paging_and_top_limits(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/paging and https://learn.microsoft.com/graph/api/user-list ($top 1-999)
    first = graph.get("/users", params={"$top": "100", "$select": "id,displayName"}).json()
    assert len(first["value"]) == 100
    assert set(first["value"][0]) == {"id", "displayName"}
    second = graph.get(first["@odata.nextLink"].split("/v1.0", 1)[1]).json()
    assert {u["id"] for u in first["value"]}.isdisjoint({u["id"] for u in second["value"]})
    is_graph_error(graph.get("/users", params={"$top": "1000"}), 400, "Request_BadRequest")


def test_group_filter_and_transitive_members_cast(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/group-list ($filter) and group-list-transitivemembers
    groups = graph.get("/groups", params={"$filter": "displayName eq 'Bridge Sync'"}).json()["value"]
    assert len(groups) == 1
    members = graph.get(f"/groups/{groups[0]['id']}/transitiveMembers/microsoft.graph.user",
                        params={"$top": "999"}).json()
    assert len(members["value"]) == 160
    assert all(m["@odata.type"] == "#microsoft.graph.user" for m in members["value"])


def test_organization_list(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/organization-list
    org = graph.get("/organization").json()["value"][0]
    assert {"id", "displayName", "verifiedDomains"} <= set(org)


def test_creation_options_match_the_documented_example(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions
    user = graph.get("/users", params={"$top": "1", "$select": "id"}).json()["value"][0]["id"]
    body: dict[str, Any] = graph.get(f"/users/{user}/authentication/fido2Methods/creationOptions").json()
    assert body["@odata.type"] == "#microsoft.graph.webauthnCredentialCreationOptions"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body["challengeTimeoutDateTime"])
    key = body["publicKey"]
    assert key["rp"] == {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialRpEntity",
                         "id": "login.microsoftonline.com", "name": "Microsoft"}
    assert {"id", "displayName", "name"} <= set(key["user"])
    assert "=" not in key["challenge"]
    assert len(base64.urlsafe_b64decode(key["challenge"] + "==")) >= 16
    assert key["authenticatorSelection"]["userVerification"] == "required"
    assert key["attestation"] == "direct"
    v1_timeout = graph.get(f"/users/{user}/authentication/fido2Methods/creationOptions(challengeTimeoutInMinutes=10)")
    assert v1_timeout.status_code == 400


def test_fido2_policy_shape(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get
    policy = graph.get("/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2").json()
    assert policy["@odata.type"] == "#microsoft.graph.fido2AuthenticationMethodConfiguration"
    assert {"state", "isSelfServiceRegistrationAllowed", "isAttestationEnforced", "keyRestrictions"} <= set(policy)
    assert {"isEnforced", "enforcementType", "aaGuids"} <= set(policy["keyRestrictions"])


def test_batch_limits_and_dependencies(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/json-batching (20 requests at most; dependsOn; 424)
    too_many = graph.post("/$batch", json={"requests": [{"id": str(n), "method": "GET", "url": "/organization"}
                                                        for n in range(21)]})
    is_graph_error(too_many, 400, "BadRequest")
    answer = graph.post("/$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000"},
        {"id": "2", "method": "GET", "url": "/organization", "dependsOn": ["1"]}]}).json()
    assert [r["status"] for r in answer["responses"]] == [404, 424]
