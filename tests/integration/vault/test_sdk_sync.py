"""The real sync SDK (SecretClient + ClientSecretCredential through MSAL) against the emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from local.vault.process import RunningVault
from local.vault.token_issuer import Client, TokenIssuer


@pytest.fixture
def client(kv: RunningVault, issuer: TokenIssuer, officer: Client) -> Iterator[SecretClient]:
    """A sync SecretClient of the officer."""
    credential = ClientSecretCredential(issuer.tenant_id, officer.client_id, officer.secret, authority=issuer.url,
                                        disable_instance_discovery=True, connection_verify=str(kv.tls.ca))
    with SecretClient(kv.url, credential, verify_challenge_resource=False, connection_verify=str(kv.tls.ca)) as made:
        yield made


def test_every_operation_with_the_sync_client(client: SecretClient) -> None:
    name = f"sync-{uuid.uuid4().hex[:10]}"
    first = client.set_secret(name, "alpha", tags={"state": "pending"})
    second = client.set_secret(name, "beta")
    assert client.get_secret(name).value == "beta"
    assert client.get_secret(name, first.properties.version).value == "alpha"
    versions = {p.version for p in client.list_properties_of_secret_versions(name, max_page_size=1)}
    assert versions == {first.properties.version, second.properties.version}
    assert name in {p.name for p in client.list_properties_of_secrets(max_page_size=3)}
    props = client.update_secret_properties(name, first.properties.version, tags={"state": "superseded"},
                                            enabled=False)
    assert props.enabled is False
    assert props.tags == {"state": "superseded"}
    with pytest.raises(HttpResponseError) as caught:
        client.get_secret(name, first.properties.version)
    assert caught.value.status_code == 403
    poller = client.begin_delete_secret(name)
    deleted = poller.result()
    assert deleted.recovery_id
    assert client.get_deleted_secret(name).name == name
    assert name in {d.name for d in client.list_deleted_secrets()}
    with pytest.raises(ResourceExistsError):
        client.set_secret(name, "again")
    client.begin_recover_deleted_secret(name).result()
    assert client.get_secret(name).value == "beta"
    client.begin_delete_secret(name).result()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)


@pytest.mark.parametrize(("name", "value", "tags"), [
    ("not valid!", "v", None),
    ("x" * 128, "v", None),
    ("ok-name", "v" * (25 * 1024 + 1), None),
    ("ok-name", "v", {f"t{i}": "x" for i in range(16)}),
    ("ok-name", "v", {"t": "x" * 513}),
])
def test_sync_validation_errors(client: SecretClient, name: str, value: str, tags: dict[str, str] | None) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.set_secret(name, value, tags=tags)
    assert caught.value.status_code == 400
    assert caught.value.error is not None
    assert caught.value.error.code == "BadParameter"


def test_sync_update_of_a_missing_version(client: SecretClient) -> None:
    name = f"sync-{uuid.uuid4().hex[:10]}"
    client.set_secret(name, "v")
    with pytest.raises(ResourceNotFoundError):
        client.update_secret_properties(name, uuid.uuid4().hex, enabled=False)
