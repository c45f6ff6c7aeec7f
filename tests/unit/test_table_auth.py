"""Authentication of Table requests with azure-core's public policies and documented Shared Key."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, AzureSasCredentialPolicy
from azure.core.rest import HttpRequest

from shared.adapters.table_rest import STORAGE_SCOPE, SharedKeySigning, authentication

KEY = base64.b64encode(b"k" * 64).decode()


def _signed(url: str, method: str = "GET", content_type: str = "") -> str:
    request = HttpRequest(method, url, headers={"x-ms-date": "Sat, 05 Dec 2026 08:00:00 GMT",
                                                 **({"Content-Type": content_type} if content_type else {})})
    SharedKeySigning(AzureNamedKeyCredential("acct", KEY)).on_request(PipelineRequest(request, PipelineContext(None)))
    return request.headers["Authorization"]


def _expected(to_sign: str) -> str:
    digest = hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
    return f"SharedKey acct:{base64.b64encode(digest).decode()}"


def test_shared_key_signs_the_documented_string_over_the_path_on_the_wire() -> None:
    # aiohttp sends `%27` and `%28` as ' and ( (yarl re-quotes), so the signed path is that one.
    url = "https://acct.table.core.windows.net/users(PartitionKey='it%27%27s',RowKey='%28a%20b%29')"
    assert _signed(url, "PUT", "application/json") == _expected(
        "PUT\n\napplication/json\nSat, 05 Dec 2026 08:00:00 GMT\n/acct/users(PartitionKey='it''s',RowKey='(a%20b)')")


def test_shared_key_keeps_comp_and_azurite_path_style_addresses() -> None:
    url = "http://127.0.0.1:10002/acct/users?comp=acl&timeout=5"
    assert _signed(url) == _expected("GET\n\n\nSat, 05 Dec 2026 08:00:00 GMT\n/acct/acct/users?comp=acl")


class _Credential:
    scopes: tuple[str, ...] = ()

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes = scopes
        return AccessToken("t", 2**31)

    async def close(self) -> None:
        return None


async def test_each_credential_gets_a_public_azure_core_policy() -> None:
    assert isinstance(authentication(AzureNamedKeyCredential("acct", KEY)), SharedKeySigning)
    assert isinstance(authentication(AzureSasCredential("sv=1&sig=x")), AzureSasCredentialPolicy)
    credential = _Credential()
    bearer = authentication(credential)
    assert isinstance(bearer, AsyncBearerTokenCredentialPolicy)
    request = HttpRequest("GET", "https://acct.table.core.usgovcloudapi.net/users")
    await bearer.on_request(PipelineRequest(request, PipelineContext(None)))
    assert credential.scopes == (STORAGE_SCOPE,) == ("https://storage.azure.com/.default",)
    assert request.headers["Authorization"] == "Bearer t"
