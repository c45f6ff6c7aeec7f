"""Key Vault's challenge, token validation and RBAC roles, as the emulator enforces them."""

from __future__ import annotations

import uuid

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity.aio import ClientSecretCredential
from azure.keyvault.secrets.aio import SecretClient
from cryptography.hazmat.primitives.asymmetric import rsa

from local.vault.process import RunningVault
from local.vault.token_issuer import Client, TokenIssuer

API = {"api-version": "7.6"}


def http(kv: RunningVault) -> httpx.Client:
    """A plain HTTPS client trusting the local CA."""
    return httpx.Client(base_url=kv.url, verify=kv.tls.client_context(), timeout=10)


def test_request_without_token_gets_the_challenge(kv: RunningVault, issuer: TokenIssuer) -> None:
    with http(kv) as h:
        answer = h.get("/secrets", params=API)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{issuer.url}/{issuer.tenant_id}", resource="https://vault.azure.net"')
    assert answer.json()["error"]["code"] == "Unauthorized"


@pytest.mark.parametrize("variant", ["audience", "expired", "issuer", "key", "garbage"])
def test_bad_tokens_are_refused(kv: RunningVault, issuer: TokenIssuer, officer: Client, variant: str) -> None:
    if variant == "garbage":
        token = "not-a-jwt"
    elif variant == "audience":
        token = issuer.mint(officer, audience="https://graph.microsoft.com")
    elif variant == "expired":
        token = issuer.mint(officer, lifetime=-3600)
    elif variant == "issuer":
        token = issuer.mint(officer, issuer="https://elsewhere.example/v2.0")
    else:
        token = issuer.mint(officer, signing_key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with http(kv) as h:
        answer = h.get("/secrets", params=API, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401, answer.text
    assert "WWW-Authenticate" in answer.headers


def test_token_without_role_gets_forbidden_by_rbac(kv: RunningVault, issuer: TokenIssuer) -> None:
    stranger = issuer.register()
    with http(kv) as h:
        answer = h.put(f"/secrets/rbac-{uuid.uuid4().hex[:8]}", params=API, json={"value": "v"},
                       headers={"Authorization": f"Bearer {issuer.mint(stranger)}"})
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["innererror"]["code"] == "ForbiddenByRbac"
    assert stranger.oid in error["message"]
    assert "Microsoft.KeyVault/vaults/secrets/setSecret/action" in error["message"]


async def test_secrets_user_may_read_but_not_write(kv: RunningVault, issuer: TokenIssuer, officer: Client) -> None:
    reader = issuer.register()
    kv.grant(reader.oid, "Key Vault Secrets User")
    name = f"ro-{uuid.uuid4().hex[:8]}"
    with http(kv) as h:
        made = h.put(f"/secrets/{name}", params=API, json={"value": "readable"},
                     headers={"Authorization": f"Bearer {issuer.mint(officer)}"})
        assert made.status_code == 200
    credential = ClientSecretCredential(issuer.tenant_id, reader.client_id, reader.secret, authority=issuer.url,
                                        connection_verify=str(kv.tls.ca))
    async with credential, SecretClient(kv.url, credential, verify_challenge_resource=False,
                                        connection_verify=str(kv.tls.ca)) as client:
        assert (await client.get_secret(name)).value == "readable"
        with pytest.raises(HttpResponseError) as caught:
            await client.set_secret(name, "nope")
        assert caught.value.status_code == 403
        with pytest.raises(HttpResponseError):
            await client.delete_secret(name)
    kv.revoke(reader.oid)
    with http(kv) as h:
        gone = h.get(f"/secrets/{name}/", params=API, headers={"Authorization": f"Bearer {issuer.mint(reader)}"})
    assert gone.status_code == 403


def test_api_version_is_required(kv: RunningVault, issuer: TokenIssuer, officer: Client) -> None:
    auth = {"Authorization": f"Bearer {issuer.mint(officer)}"}
    with http(kv) as h:
        missing = h.get("/secrets", headers=auth)
        unknown = h.get("/secrets", params={"api-version": "1999-01-01"}, headers=auth)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "BadParameter"
    assert unknown.status_code == 400
