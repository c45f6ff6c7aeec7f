"""The real async SDK (azure-keyvault-secrets aio + ClientSecretCredential) against the emulator."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential
from azure.keyvault.secrets.aio import SecretClient

from local.vault.process import RunningVault
from local.vault.token_issuer import Client, TokenIssuer


def unique(prefix: str = "s") -> str:
    """A fresh secret name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(kv: RunningVault, issuer: TokenIssuer, officer: Client) -> AsyncIterator[SecretClient]:
    """An async SecretClient of the officer."""
    credential = ClientSecretCredential(issuer.tenant_id, officer.client_id, officer.secret, authority=issuer.url,
                                        connection_verify=str(kv.tls.ca))
    async with credential, SecretClient(kv.url, credential, verify_challenge_resource=False,
                                        connection_verify=str(kv.tls.ca)) as made:
        yield made


async def test_set_then_get_latest_and_by_version(client: SecretClient) -> None:
    name = unique()
    first = await client.set_secret(name, "one", tags={"state": "pending"}, content_type="password")
    second = await client.set_secret(name, "two")
    assert first.properties.version != second.properties.version
    latest = await client.get_secret(name)
    assert latest.value == "two"
    old = await client.get_secret(name, first.properties.version)
    assert old.value == "one"
    assert old.properties.tags == {"state": "pending"}
    assert old.properties.content_type == "password"
    assert old.properties.recovery_level == "Recoverable+Purgeable"
    assert old.properties.created_on is not None


async def test_list_secrets_and_versions_follow_next_links(client: SecretClient) -> None:
    name = unique("many")
    made = {(await client.set_secret(name, f"v{i}")).properties.version for i in range(30)}
    listed = [p.version async for p in client.list_properties_of_secret_versions(name, max_page_size=7)]
    assert set(listed) == made
    assert len(listed) == 30
    names = [p.name async for p in client.list_properties_of_secrets(max_page_size=2)]
    assert name in names
    assert len(names) == len(set(names))


async def test_update_properties_of_a_version(client: SecretClient) -> None:
    name = unique()
    version = (await client.set_secret(name, "x")).properties.version
    expires = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    not_before = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    props = await client.update_secret_properties(name, version, tags={"state": "current"}, content_type="text",
                                                  expires_on=expires, not_before=not_before)
    assert props.tags == {"state": "current"}
    assert props.content_type == "text"
    assert props.expires_on == expires
    assert props.not_before == not_before
    latest_props = await client.update_secret_properties(name, enabled=True, tags={"state": "superseded"})
    assert latest_props.version == version
    assert latest_props.tags == {"state": "superseded"}


async def test_disabled_versions_are_unreadable(client: SecretClient) -> None:
    name = unique()
    version = (await client.set_secret(name, "hidden")).properties.version
    await client.update_secret_properties(name, version, enabled=False)
    with pytest.raises(HttpResponseError) as caught:
        await client.get_secret(name, version)
    assert caught.value.status_code == 403
    assert "Operation get is not allowed on a disabled secret" in str(caught.value)
    await client.update_secret_properties(name, version, enabled=True)
    assert (await client.get_secret(name, version)).value == "hidden"


async def test_soft_delete_recover_and_purge(client: SecretClient) -> None:
    name = unique()
    await client.set_secret(name, "keep")
    deleted = await client.delete_secret(name)
    assert deleted.recovery_id
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == dt.timedelta(days=90)
    with pytest.raises(ResourceNotFoundError):
        await client.get_secret(name)
    again = await client.get_deleted_secret(name)
    assert again.name == name
    assert name in [d.name async for d in client.list_deleted_secrets()]
    with pytest.raises(ResourceExistsError):
        await client.set_secret(name, "reuse")
    recovered = await client.recover_deleted_secret(name)
    assert recovered.name == name
    assert (await client.get_secret(name)).value == "keep"
    await client.delete_secret(name)
    await client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        await client.get_deleted_secret(name)
    await client.set_secret(name, "fresh")  # a purged name is free again


async def test_names_are_case_insensitive(client: SecretClient) -> None:
    name = unique("Mixed")
    await client.set_secret(name, "v")
    assert (await client.get_secret(name.lower())).value == "v"


@pytest.mark.parametrize(("name", "value", "tags", "fragment"), [
    ("bad_name", "v", None, "invalid name"),
    ("x" * 128, "v", None, "invalid name"),
    ("ok-name", "v" * (25 * 1024 + 1), None, "too large"),
    ("ok-name", "v", {f"t{i}": "x" for i in range(16)}, "Too many tags"),
    ("ok-name", "v", {"t": "x" * 513}, "longer than 512"),
    ("ok-name", "v", {"t" * 513: "x"}, "longer than 512"),
])
async def test_validation_errors(client: SecretClient, name: str, value: str, tags: dict[str, str] | None,
                                 fragment: str) -> None:
    with pytest.raises(HttpResponseError) as caught:
        await client.set_secret(name, value, tags=tags)
    assert caught.value.status_code == 400
    assert caught.value.error is not None
    assert caught.value.error.code == "BadParameter"
    assert fragment in str(caught.value)


async def test_nbf_must_precede_exp(client: SecretClient) -> None:
    later, earlier = dt.datetime(2030, 1, 1, tzinfo=dt.UTC), dt.datetime(2029, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(HttpResponseError) as caught:
        await client.set_secret(unique(), "v", not_before=later, expires_on=earlier)
    assert caught.value.status_code == 400


async def test_missing_secret_and_version(client: SecretClient) -> None:
    name = unique()
    with pytest.raises(ResourceNotFoundError) as caught:
        await client.get_secret(name)
    assert caught.value.error is not None
    assert caught.value.error.code == "SecretNotFound"
    await client.set_secret(name, "v")
    with pytest.raises(ResourceNotFoundError):
        await client.get_secret(name, uuid.uuid4().hex)
    with pytest.raises(ResourceNotFoundError):
        await client.purge_deleted_secret(name)  # not deleted
    with pytest.raises(ResourceNotFoundError):
        await client.recover_deleted_secret(name)
