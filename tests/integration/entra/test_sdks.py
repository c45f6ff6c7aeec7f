"""The real azure-identity and msgraph-sdk against the simulator, unchanged."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from azure.identity import ClientSecretCredential as SyncSecret
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from msgraph.graph_service_client import GraphServiceClient

from shared.adapters.graph import GraphGateway, graph_http_client
from shared.errors import InvalidInput, PermissionDenied
from tests.fixtures.entra import EntraFixture

GRAPH = "https://graph.microsoft.com/.default"


@pytest.fixture
async def gateway(entra: EntraFixture, tls_files: Any) -> AsyncIterator[GraphGateway]:
    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    gw = GraphGateway(connection="demo", tenant_id=entra.tenant_id, credential=credential, graph_base=entra.url,
                      scope=GRAPH, verify=tls_files.client_context())
    yield gw
    await gw.close()


async def test_client_secret_tokens_sync_and_aio(entra: EntraFixture, tls_files: Any) -> None:
    sync = SyncSecret(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                      disable_instance_discovery=True, connection_verify=str(tls_files.ca))
    claims = jwt.decode(sync.get_token(GRAPH).token, options={"verify_signature": False})
    assert claims["tid"] == entra.tenant_id
    assert "User-PasswordProfile.ReadWrite.All" in claims["roles"]
    async with ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                      connection_verify=str(tls_files.ca)) as aio:
        token = await aio.get_token("https://vault.azure.net/.default")
    assert jwt.decode(token.token, options={"verify_signature": False})["aud"] == "https://vault.azure.net"


async def test_managed_identity_app_service_protocol(entra: EntraFixture, tls_files: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", entra.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", entra.identity_header)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    async with ManagedIdentityCredential(connection_verify=str(tls_files.ca)) as credential:
        token = await credential.get_token(GRAPH)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["oid"] == entra.identity_principal_id


async def test_msgraph_sdk_reads_users(entra: EntraFixture, tls_files: Any) -> None:
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter

    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH], allowed_hosts=["127.0.0.1"])
    http = graph_http_client(tls_files.client_context())
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{entra.url}/v1.0"
    try:
        users = await GraphServiceClient(request_adapter=adapter).users.get()
    finally:
        await http.aclose()
        await credential.close()
    assert users is not None
    assert users.value
    assert users.odata_next_link
    assert os.environ.get("IDENTITY_ENDPOINT") is None


async def test_gateway_pages_nested_groups_and_resets_passwords(entra: EntraFixture, gateway: GraphGateway) -> None:
    groups = await gateway.get("/groups", params={"$filter": "displayName eq 'Bridge Sync'"})
    group_id = groups["value"][0]["id"]
    users = []
    async for page in gateway.pages(f"/groups/{group_id}/transitiveMembers/microsoft.graph.user",
                                    params={"$select": "id,userPrincipalName", "$top": "50"}):
        users.extend(page["value"])
    assert len(users) == 160
    target = users[10]["id"]
    response = await gateway.send("PATCH", f"/users/{target}", body={
        "passwordProfile": {"forceChangePasswordNextSignIn": False, "password": "Vq8#Lm2$Xr9!Tw4pKd"}})
    assert response.status == 204
    assert response.request_id
    assert entra.admin("GET", f"/_sim/users/{target}/password")["password"] == "Vq8#Lm2$Xr9!Tw4pKd"
    with pytest.raises(InvalidInput, match="complexity"):
        await gateway.send("PATCH", f"/users/{target}", body={"passwordProfile": {"password": "short"}})


async def test_admins_cannot_be_reset_by_a_user_administrator(entra: EntraFixture, gateway: GraphGateway) -> None:
    admins = await gateway.get("/users", params={"$top": "5"})
    admin_id = admins["value"][1]["id"]  # the demo tenant's Global Administrator
    roles = [r async for r in gateway.pages(f"/users/{admin_id}/transitiveMemberOf/microsoft.graph.directoryRole")]
    assert roles[0]["value"][0]["displayName"] == "Global Administrator"
    with pytest.raises(PermissionDenied, match="Insufficient privileges"):
        await gateway.send("PATCH", f"/users/{admin_id}", body={"passwordProfile": {"password": "Vq8#Lm2$Xr9!Tw4pKd"}})
