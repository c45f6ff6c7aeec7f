"""The vault emulator against a token issuer these tests control (to mint bad tokens too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.tls import TlsFiles
from local.vault.process import RunningVault, running
from local.vault.token_issuer import Client, TokenIssuer, serving


@pytest.fixture(scope="session")
def issuer(tls_files: TlsFiles) -> Iterator[TokenIssuer]:
    """A login stand-in issuing RS256 tokens."""
    with serving(tls_files) as made:
        yield made


@pytest.fixture(scope="session")
def officer(issuer: TokenIssuer) -> Client:
    """A client that will hold Key Vault Secrets Officer."""
    return issuer.register()


@pytest.fixture(scope="session")
def kv(issuer: TokenIssuer, officer: Client, run_dir: Path, tls_files: TlsFiles) -> Iterator[RunningVault]:
    """An emulator with its admin API, limits on, trusting `issuer`; `officer` is granted."""
    with running(data_dir=run_dir / "kv-data", authority=issuer.url, tenant=issuer.tenant_id, admin=True,
                 tls=tls_files, log_path=run_dir / "kv.log") as vault:
        vault.grant(officer.oid, "Key Vault Secrets Officer")
        yield vault
