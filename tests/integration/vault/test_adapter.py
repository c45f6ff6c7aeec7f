"""KeyVaultSecretStore (the SecretStore port) against the emulator with the real async SDK."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from azure.identity.aio import ClientSecretCredential

from local.tls import TlsFiles
from local.vault.process import RunningVault, running
from local.vault.token_issuer import Client, TokenIssuer
from shared.adapters.vault import OFFICER_ROLE, KeyVaultSecretStore
from shared.errors import (
    Ambiguous,
    BridgeError,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Throttled,
    Transient,
)
from shared.services.ports import SecretState

PASSWORD = "Sup3r-Secret-" + uuid.uuid4().hex


def credential(issuer: TokenIssuer, client: Client, vault: RunningVault) -> ClientSecretCredential:
    """An async credential of `client`."""
    return ClientSecretCredential(issuer.tenant_id, client.client_id, client.secret, authority=issuer.url,
                                  connection_verify=str(vault.tls.ca))


@pytest.fixture
async def store(kv: RunningVault, issuer: TokenIssuer, officer: Client) -> AsyncIterator[KeyVaultSecretStore]:
    """The adapter as the officer, with short back-offs."""
    cred = credential(issuer, officer, kv)
    async with cred, KeyVaultSecretStore(kv.url, cred, connection_verify=str(kv.tls.ca), backoff=0.01) as made:
        yield made


def name() -> str:
    """A fresh managed-password secret name."""
    return f"pwd-test-{uuid.uuid4().hex[:16]}"


def assert_no_secret(error: BaseException) -> None:
    """Invariant 2: the value never appears in an error."""
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    if isinstance(error, BridgeError):
        assert PASSWORD not in str(error.extensions())


async def test_rotation_flow_through_the_port(store: KeyVaultSecretStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = name()
    pending = await store.put(secret, PASSWORD, tags={"state": "pending", "rotationId": "r1"},
                              content_type="password")
    assert pending.value is None
    assert pending.state == "pending"
    read = await store.get(secret, pending.version)
    assert read.value == PASSWORD
    current = await store.set_tags(secret, pending.version, {**pending.tags, "state": "current"})
    assert current.state == "current"
    second = await store.put(secret, PASSWORD + "2", tags={"state": "pending"})
    versions = await store.versions(secret)
    assert [v.version for v in versions] == [second.version, pending.version]
    assert all(v.value is None for v in versions)
    in_current = await store.versions_in_state(secret, SecretState.CURRENT)
    assert [v.version for v in in_current] == [pending.version]
    assert (await store.get(secret)).value == PASSWORD + "2"
    await store.set_tags(secret, pending.version, {"state": "superseded"}, enabled=False)
    with pytest.raises(Conflict) as disabled:
        await store.get(secret, pending.version)
    assert_no_secret(disabled.value)
    await store.delete(secret)
    await store.delete(secret)  # absent counts as done
    assert await store.versions(secret) == []
    with pytest.raises(Conflict) as reserved:
        await store.put(secret, PASSWORD, tags={})
    assert_no_secret(reserved.value)
    await store.recover(secret)
    assert (await store.get(secret)).value == PASSWORD + "2"
    await store.delete(secret)
    await store.purge(secret)
    await store.put(secret, PASSWORD, tags={})
    assert caplog.records
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_not_found(store: KeyVaultSecretStore) -> None:
    with pytest.raises(NotFound):
        await store.get(name())
    with pytest.raises(NotFound):
        await store.set_tags(name(), uuid.uuid4().hex, {})


@pytest.mark.parametrize(("secret", "value", "tags"), [
    ("bad_name", PASSWORD, {}),
    ("ok", "x" * (25 * 1024 + 1), {}),
    ("ok", PASSWORD, {f"t{i}": "v" for i in range(16)}),
    ("ok", PASSWORD, {"t": "v" * 513}),
])
async def test_invalid_input_is_refused_before_sending(store: KeyVaultSecretStore, secret: str, value: str,
                                                       tags: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        await store.put(secret, value, tags=tags)
    assert caught.value.field in {"name", "value", "tags"}
    assert_no_secret(caught.value)


async def test_missing_role_names_the_role(kv: RunningVault, issuer: TokenIssuer) -> None:
    stranger = issuer.register()
    cred = credential(issuer, stranger, kv)
    async with cred, KeyVaultSecretStore(kv.url, cred, connection_verify=str(kv.tls.ca)) as store:
        with pytest.raises(PermissionDenied) as caught:
            await store.put(name(), PASSWORD, tags={})
    assert caught.value.role == OFFICER_ROLE
    assert OFFICER_ROLE in str(caught.value)
    assert_no_secret(caught.value)


@pytest.fixture
def faulty(issuer: TokenIssuer, officer: Client, tmp_path: Path, tls_files: TlsFiles) -> Iterator[RunningVault]:
    """A vault of its own for fault injection, time 10x faster."""
    with running(data_dir=tmp_path / "faulty", authority=issuer.url, tenant=issuer.tenant_id, admin=True,
                 time_scale=10, tls=tls_files) as vault:
        vault.grant(officer.oid)
        yield vault


async def test_faults_map_to_transient_and_ambiguous(faulty: RunningVault, issuer: TokenIssuer,
                                                     officer: Client) -> None:
    cred = credential(issuer, officer, faulty)
    async with cred, KeyVaultSecretStore(faulty.url, cred, connection_verify=str(faulty.tls.ca), backoff=0.01,
                                         max_attempts=3) as store:
        secret = name()
        await store.put(secret, PASSWORD, tags={"state": "current"})  # token and challenge cached first
        faulty.set_faults(error_rate=1.0)
        with pytest.raises(Transient) as unavailable:
            await store.get(secret)
        assert not isinstance(unavailable.value, Ambiguous)
        faulty.set_faults(ambiguous_rate=1.0)
        with pytest.raises(Ambiguous) as lost:
            await store.put(secret, PASSWORD + "-next", tags={"state": "pending"})
        assert_no_secret(lost.value)
        faulty.set_faults(drop_rate=0.5, seed=7)
        versions = await store.versions(secret)  # reads are retried through dropped connections
        faulty.set_faults()
        assert len(versions) == 2  # the ambiguous write did land


@pytest.mark.slow
async def test_throttling_is_waited_out_then_bounded(issuer: TokenIssuer, officer: Client, tmp_path: Path,
                                                     tls_files: TlsFiles) -> None:
    with running(data_dir=tmp_path / "rt", authority=issuer.url, tenant=issuer.tenant_id, tls=tls_files) as vault:
        vault.grant(officer.oid)
        cred = credential(issuer, officer, vault)
        async with cred, KeyVaultSecretStore(vault.url, cred, connection_verify=str(vault.tls.ca)) as patient, \
                KeyVaultSecretStore(vault.url, cred, connection_verify=str(vault.tls.ca),
                                    max_throttle_wait=0.0) as impatient:
            secret = name()
            outcomes = await asyncio.gather(*(impatient.put(secret, PASSWORD, tags={}) for _ in range(310)),
                                            return_exceptions=True)
            throttled = [o for o in outcomes if isinstance(o, Throttled)]
            assert len(throttled) == 10  # 300 creates fill the 10 s window
            assert all(1 <= t.retry_after <= 10 for t in throttled)
            for error in throttled:
                assert_no_secret(error)
            version = await patient.put(secret, PASSWORD, tags={})  # waits Retry-After, then succeeds
            assert version.version
