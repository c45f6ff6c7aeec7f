"""The SecretStore contract, on the in-memory vault and on the Key Vault adapter with the emulator."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import Conflict, InvalidInput, NotFound
from shared.services.ports import SecretStore


def name() -> str:
    return f"contract-{uuid.uuid4().hex[:16]}"


async def test_put_then_get_latest_and_by_version(secret_store: SecretStore) -> None:
    secret = name()
    first = await secret_store.put(secret, "one", tags={"state": "pending"}, content_type="text/plain")
    assert first.value is None
    assert (first.name, first.state, first.enabled) == (secret, "pending", True)
    second = await secret_store.put(secret, "two", tags={"state": "current"})
    assert first.version != second.version
    latest = await secret_store.get(secret)
    assert (latest.version, latest.value, latest.state) == (second.version, "two", "current")
    assert (await secret_store.get(secret, first.version)).value == "one"


async def test_versions_are_newest_first_without_values(secret_store: SecretStore) -> None:
    secret = name()
    made = [await secret_store.put(secret, f"v{n}", tags={"n": str(n)}) for n in range(3)]
    listed = await secret_store.versions(secret)
    assert [v.version for v in listed] == [m.version for m in reversed(made)]
    assert all(v.value is None for v in listed)
    assert [v.tags["n"] for v in listed] == ["2", "1", "0"]
    assert await secret_store.versions(name()) == []


async def test_set_tags_replaces_them_and_disables(secret_store: SecretStore) -> None:
    secret = name()
    first = await secret_store.put(secret, "one", tags={"state": "pending", "rotationId": "r1"})
    updated = await secret_store.set_tags(secret, first.version, {"state": "current"})
    assert dict(updated.tags) == {"state": "current"}
    assert updated.value is None
    disabled = await secret_store.set_tags(secret, first.version, {"state": "superseded"}, enabled=False)
    assert disabled.enabled is False
    listed = await secret_store.versions(secret)
    assert (listed[0].enabled, listed[0].state) == (False, "superseded")
    # Key Vault refuses to read a disabled version.
    with pytest.raises(Conflict):
        await secret_store.get(secret, first.version)
    with pytest.raises(NotFound):
        await secret_store.set_tags(secret, uuid.uuid4().hex, {"state": "x"})


async def test_missing_secrets_and_versions_are_not_found(secret_store: SecretStore) -> None:
    with pytest.raises(NotFound):
        await secret_store.get(name())
    secret = name()
    await secret_store.put(secret, "one", tags={})
    with pytest.raises(NotFound):
        await secret_store.get(secret, uuid.uuid4().hex)


async def test_delete_is_soft_and_a_deleted_name_is_not_reused(secret_store: SecretStore) -> None:
    secret = name()
    await secret_store.put(secret, "one", tags={})
    await secret_store.delete(secret)
    await secret_store.delete(secret)  # gone counts as done
    await secret_store.delete(name())
    with pytest.raises(NotFound):
        await secret_store.get(secret)
    assert await secret_store.versions(secret) == []
    with pytest.raises(Conflict):
        await secret_store.put(secret, "two", tags={})


@pytest.mark.parametrize("bad", ["has_underscore", "a" * 128, "", "dots.no"])
async def test_names_key_vault_refuses_are_invalid_input(secret_store: SecretStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        await secret_store.put(bad, "x", tags={})
    with pytest.raises(InvalidInput):
        await secret_store.get(bad)


async def test_values_and_tags_beyond_the_limits_are_invalid_input(secret_store: SecretStore) -> None:
    secret = name()
    with pytest.raises(InvalidInput):
        await secret_store.put(secret, "x" * (25 * 1024 + 1), tags={})
    with pytest.raises(InvalidInput):
        await secret_store.put(secret, "x", tags={f"t{n}": "v" for n in range(16)})
    made = await secret_store.put(secret, "x" * (25 * 1024), tags={f"t{n}": "v" for n in range(15)})
    with pytest.raises(InvalidInput):
        await secret_store.set_tags(secret, made.version, {f"t{n}": "v" for n in range(16)})
