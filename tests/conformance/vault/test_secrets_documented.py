"""The emulator's answers against the examples of Key Vault's REST reference.

Each expected body is the example response of the REST reference page named next to it (the same
examples live in Azure/azure-rest-api-specs, specification/keyvault/data-plane/Microsoft.KeyVault/
stable/7.5/examples/). The emulator must send every documented member with the documented JSON type,
ids shaped as documented, and the documented status codes; it may add members newer API versions add.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.vault import VaultFixture

API = {"api-version": "7.5"}
VERSION_ID = re.compile(r"^[0-9a-f]{32}$")

# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/set-secret/set-secret (SetSecret-example.json)
SET_SECRET = {"value": "mysecretvalue",
              "id": "https://myvault.vault.azure.net/secrets/crpsecret/03bcccc7c8cf4546a0e3e21e52560441",
              "attributes": {"enabled": True, "created": 1493938459, "updated": 1493938459,
                             "recoveryLevel": "Recoverable+Purgeable"}}
# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/update-secret/update-secret (UpdateSecret-example.json)
UPDATE_SECRET = {"id": "https://myvault.vault.azure.net/secrets/crpsecret/03bcccc7c8cf4546a0e3e21e52560441",
                 "contentType": "myContentType",
                 "attributes": {"enabled": True, "created": 1493938459, "updated": 1493938459,
                                "recoveryLevel": "Recoverable+Purgeable"},
                 "tags": {"mytag": "myvalue"}}
# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/get-secrets/get-secrets (GetSecrets-example.json)
GET_SECRETS_ITEM = {"contentType": "plainText", "id": "https://myvault.vault.azure.net/secrets/listsecrettest0",
                    "attributes": {"enabled": True, "created": 1482189047, "updated": 1482189047}}
# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/get-secret-versions/get-secret-versions
GET_VERSIONS_ITEM = {"id": "https://myvault.vault.azure.net/secrets/listsecretversionstest/"
                           "11a536561da34d6b8b452d880df58f3a",
                     "attributes": {"enabled": True, "created": 1481851699, "updated": 1481851699}}
# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/delete-secret/delete-secret (DeleteSecret-example.json)
DELETE_SECRET = {"recoveryId": "https://myvault.vault.azure.net/deletedsecrets/GetDeletedSecretTest",
                 "deletedDate": 1493938433, "scheduledPurgeDate": 1501714433,
                 "id": "https://myvault.vault.azure.net/secrets/GetDeletedSecretTest/b595353d9c39413d80626575b3b5d865",
                 "attributes": {"enabled": True, "created": 1493938433, "updated": 1493938433,
                                "recoveryLevel": "Recoverable+Purgeable"}}
# https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/get-deleted-secrets/get-deleted-secrets
GET_DELETED_ITEM = {"recoveryId": "https://myvault.vault.azure.net/deletedsecrets/listdeletedsecrettest0",
                    "deletedDate": 1493937855, "scheduledPurgeDate": 1501713855, "contentType": "plainText",
                    "id": "https://myvault.vault.azure.net/secrets/listdeletedsecrettest0",
                    "attributes": {"enabled": True, "created": 1493937855, "updated": 1493937855,
                                   "recoveryLevel": "Recoverable+Purgeable"}}


def assert_shape(expected: Any, actual: Any, path: str = "$") -> None:
    """Every documented member is present with the documented JSON type."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} is missing"
            assert_shape(value, actual[key], f"{path}.{key}")
    else:
        assert type(actual) is type(expected), f"{path}: expected {type(expected).__name__}, got {actual!r}"


@pytest.fixture(scope="module")
def api(vault: VaultFixture) -> Iterator[httpx.Client]:
    """Raw HTTPS to the vault with a bearer token of the granted client."""
    token = vault.sync_credential().get_token("https://vault.azure.net/.default").token
    with httpx.Client(base_url=vault.url, verify=vault.running.tls.client_context(), timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def fresh() -> str:
    """A new secret name."""
    return f"conf-{uuid.uuid4().hex[:10]}"


def test_set_secret(api: httpx.Client, vault: VaultFixture) -> None:
    name = fresh()
    answer = api.put(f"/secrets/{name}", params=API, json={"value": "mysecretvalue"})
    assert answer.status_code == 200
    body = answer.json()
    assert_shape(SET_SECRET, body)
    assert body["value"] == "mysecretvalue"
    prefix, version = body["id"].rsplit("/", 1)
    assert prefix == f"{vault.url}/secrets/{name}"
    assert VERSION_ID.match(version)
    assert set(body) == {"value", "id", "attributes"}  # no tags or contentType members when none were set


def test_update_secret(api: httpx.Client) -> None:
    name = fresh()
    version = api.put(f"/secrets/{name}", params=API, json={"value": "v"}).json()["id"].rsplit("/", 1)[1]
    answer = api.patch(f"/secrets/{name}/{version}", params=API,
                       json={"tags": {"mytag": "myvalue"}, "contentType": "myContentType",
                             "attributes": {"enabled": True}})
    assert answer.status_code == 200
    body = answer.json()
    assert_shape(UPDATE_SECRET, body)
    assert "value" not in body
    assert body["tags"] == {"mytag": "myvalue"}


def test_get_secret_latest_and_by_version(api: httpx.Client) -> None:
    name = fresh()
    made = api.put(f"/secrets/{name}", params=API, json={"value": "v"}).json()
    for path in (f"/secrets/{name}/", httpx.URL(made["id"]).path):
        answer = api.get(path, params=API)
        assert answer.status_code == 200
        assert_shape(SET_SECRET, answer.json())


def test_list_secrets_and_versions_with_next_links(api: httpx.Client, vault: VaultFixture) -> None:
    name = fresh()
    for i in range(3):
        api.put(f"/secrets/{name}", params=API, json={"value": f"v{i}", "contentType": "plainText"})
    page = api.get(f"/secrets/{name}/versions", params={**API, "maxresults": "1"}).json()
    assert_shape(GET_VERSIONS_ITEM, page["value"][0])
    assert len(page["value"]) == 1
    next_link = page["nextLink"]
    assert next_link.startswith(f"{vault.url}/secrets/{name}/versions?api-version=7.5&$skiptoken=")
    assert next_link.endswith("&maxresults=1")
    seen = 1
    while next_link:
        page = api.get(next_link).json()
        seen += len(page["value"])
        next_link = page["nextLink"]
    assert seen == 3
    # The session's vault holds other tests' secrets too: page until this one shows up.
    listing = api.get("/secrets", params={**API, "maxresults": "25"}).json()
    assert "nextLink" in listing
    found = [i for i in listing["value"] if i["id"] == f"{vault.url}/secrets/{name}"]
    while not found and listing["nextLink"]:
        listing = api.get(listing["nextLink"]).json()
        found = [i for i in listing["value"] if i["id"] == f"{vault.url}/secrets/{name}"]
    assert found, f"{name} is on no page of the listing"
    assert_shape(GET_SECRETS_ITEM, found[0])


def test_delete_get_deleted_recover_purge(api: httpx.Client, vault: VaultFixture) -> None:
    name = fresh()
    api.put(f"/secrets/{name}", params=API, json={"value": "v", "contentType": "plainText"})
    deleted = api.delete(f"/secrets/{name}", params=API)
    assert deleted.status_code == 200
    assert_shape(DELETE_SECRET, deleted.json())
    assert deleted.json()["recoveryId"] == f"{vault.url}/deletedsecrets/{name}"
    assert_shape(DELETE_SECRET, api.get(f"/deletedsecrets/{name}", params=API).json())
    listing = api.get("/deletedsecrets", params=API).json()
    item = next(i for i in listing["value"] if i["recoveryId"].endswith(f"/{name}"))
    assert_shape(GET_DELETED_ITEM, item)
    recovered = api.post(f"/deletedsecrets/{name}/recover", params=API)
    assert recovered.status_code == 200
    assert "value" not in recovered.json()
    api.delete(f"/secrets/{name}", params=API)
    purged = api.delete(f"/deletedsecrets/{name}", params=API)
    # https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/purge-deleted-secret/purge-deleted-secret
    assert purged.status_code == 204
    assert purged.content == b""


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("GET", "/secrets/{missing}/", None, 404, "SecretNotFound"),
    ("GET", "/deletedsecrets/{missing}", None, 404, "SecretNotFound"),
    ("PUT", "/secrets/bad_name", {"value": "v"}, 400, "BadParameter"),
    ("PUT", "/secrets/{missing}", {"novalue": 1}, 400, "BadParameter"),
])
def test_error_bodies(api: httpx.Client, method: str, path: str, body: dict[str, Any] | None, status: int,
                      code: str) -> None:
    # Error model KeyVaultError {"error": {"code", "message", "innererror"?}}:
    # https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/get-secret/get-secret#keyvaulterror
    answer = api.request(method, path.format(missing=fresh()), params=API, json=body)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
