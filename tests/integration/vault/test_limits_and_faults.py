"""Throttling (429 + Retry-After), injected faults, persistence and encryption at rest."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.tls import TlsFiles
from local.vault.process import RunningVault, running
from local.vault.token_issuer import Client, TokenIssuer

API = {"api-version": "7.6"}


@pytest.fixture
def fast_vault(issuer: TokenIssuer, officer: Client, tmp_path: Path, tls_files: TlsFiles) -> Iterator[RunningVault]:
    """A vault of its own whose time runs 10x faster (a 10 s window lasts 1 s)."""
    with running(data_dir=tmp_path / "data", authority=issuer.url, tenant=issuer.tenant_id, admin=True,
                 time_scale=10, tls=tls_files) as vault:
        vault.grant(officer.oid)
        yield vault


async def _put_many(vault: RunningVault, token: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=vault.url, verify=vault.tls.client_context(), timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as h:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> httpx.Response:
            async with sem:
                return await h.put(f"/secrets/bulk-{i}", params=API, json={"value": f"v{i}"})

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.fixture
def real_time_vault(issuer: TokenIssuer, officer: Client, tmp_path: Path,
                    tls_files: TlsFiles) -> Iterator[RunningVault]:
    """A vault of its own in real time."""
    with running(data_dir=tmp_path / "rt", authority=issuer.url, tenant=issuer.tenant_id, tls=tls_files) as vault:
        vault.grant(officer.oid)
        yield vault


async def test_creates_beyond_300_per_window_get_429_with_retry_after(
        real_time_vault: RunningVault, issuer: TokenIssuer, officer: Client) -> None:
    answers = await _put_many(real_time_vault, issuer.mint(officer), 330)
    statuses = [a.status_code for a in answers]
    # All 330 arrive well within one 10 s window: exactly the first 300 pass.
    assert statuses.count(200) == 300
    assert statuses.count(429) == 30
    sample = next(a for a in answers if a.status_code == 429)
    assert sample.json()["error"]["code"] == "Throttled"
    assert 1 <= int(sample.headers["Retry-After"]) <= 10
    async with httpx.AsyncClient(base_url=real_time_vault.url, verify=real_time_vault.tls.client_context(),
                                 headers={"Authorization": f"Bearer {issuer.mint(officer)}"}) as h:
        # Reads draw on the other budget (4,000 per 10 s) and still pass.
        assert (await h.get("/secrets/bulk-1/", params=API)).status_code == 200


async def test_time_scale_shortens_the_window(fast_vault: RunningVault, issuer: TokenIssuer,
                                              officer: Client) -> None:
    answers = await _put_many(fast_vault, issuer.mint(officer), 330)
    for answer in answers:
        if answer.status_code == 429:
            assert 0 < float(answer.headers["Retry-After"]) <= 1.0


def test_limits_can_be_switched_off(fast_vault: RunningVault) -> None:
    assert fast_vault.set_limits(False) == {"enabled": False}
    assert fast_vault.set_limits(True) == {"enabled": True}


async def test_injected_faults(fast_vault: RunningVault, issuer: TokenIssuer, officer: Client) -> None:
    auth = {"Authorization": f"Bearer {issuer.mint(officer)}"}
    async with httpx.AsyncClient(base_url=fast_vault.url, verify=fast_vault.tls.client_context(),
                                 timeout=10, headers=auth) as h:
        fast_vault.set_faults(error_rate=1.0)
        unavailable = await h.get("/secrets", params=API)
        assert unavailable.status_code == 503
        fast_vault.set_faults(drop_rate=1.0)
        with pytest.raises(httpx.HTTPError):
            await h.get("/secrets", params=API)
        fast_vault.set_faults(ambiguous_rate=1.0)
        with pytest.raises(httpx.HTTPError):
            await h.put("/secrets/ambiguous", params=API, json={"value": "written"})
        fast_vault.set_faults(latency_ms=300)
        began = time.monotonic()
        assert (await h.get("/secrets", params=API)).status_code == 200
        assert time.monotonic() - began >= 0.3
        fast_vault.set_faults()
        landed = await h.get("/secrets/ambiguous/", params=API)
        assert landed.status_code == 200
        assert landed.json()["value"] == "written"


def test_bad_fault_settings_are_refused(fast_vault: RunningVault) -> None:
    with pytest.raises(Exception, match="400"):
        fast_vault.set_faults(error_rate=2)


def test_secrets_survive_a_restart_and_are_encrypted_at_rest(
        issuer: TokenIssuer, officer: Client, tmp_path: Path, tls_files: TlsFiles) -> None:
    marker = "plain-" + uuid.uuid4().hex
    data = tmp_path / "persist"
    for attempt in range(2):
        with running(data_dir=data, authority=issuer.url, tenant=issuer.tenant_id, tls=tls_files) as vault:
            vault.grant(officer.oid)
            with httpx.Client(base_url=vault.url, verify=vault.tls.client_context(),
                              headers={"Authorization": f"Bearer {issuer.mint(officer)}"}) as h:
                if attempt == 0:
                    assert h.put("/secrets/kept", params=API, json={"value": marker, "tags": {"a": "b"}}).is_success
                    assert h.put("/secrets/gone", params=API, json={"value": marker}).is_success
                    assert h.delete("/secrets/gone", params=API).is_success
                else:
                    kept = h.get("/secrets/kept/", params=API).json()
                    assert kept["value"] == marker
                    assert kept["tags"] == {"a": "b"}
                    assert h.get("/deletedsecrets/gone", params=API).status_code == 200
    for path in data.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert marker.encode() not in raw, path
            assert json.dumps(marker).encode() not in raw
    key = data / "vault.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
