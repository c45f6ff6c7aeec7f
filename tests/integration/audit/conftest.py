"""The audit log's Key Vault side on the vault emulator: its MAC key and its anchors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from shared.adapters.audit import AuditReader, TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.tables import TableEntityStore
from shared.adapters.vault import KeyVaultSecretStore
from shared.services.audit import AuditQuery
from tests.fakes import FakeClock
from tests.fixtures.vault import VaultFixture


@dataclass
class AuditVault:
    """The vault store the audit key and anchors live in, and builders of the audit parts on it."""

    secrets: KeyVaultSecretStore
    store: TableEntityStore

    def keys(self, clock: FakeClock) -> VaultAuditKeys:
        """A process's view of the audit key."""
        return VaultAuditKeys(lambda: self.secrets, clock)

    def anchors(self) -> VaultAuditAnchors:
        """The anchors."""
        return VaultAuditAnchors(lambda: self.secrets)

    def sink(self, clock: FakeClock) -> TableAuditSink:
        """A writer process's audit sink."""
        return TableAuditSink(self.store, clock, self.keys(clock), self.anchors())

    def query(self, clock: FakeClock) -> AuditQuery:
        """The reader's side."""
        return AuditQuery(AuditReader(self.store), self.keys(clock), self.anchors(), clock)


@pytest.fixture
async def audit_vault(vault: VaultFixture, store: TableEntityStore) -> AsyncIterator[AuditVault]:
    credential = vault.credential()
    secrets = KeyVaultSecretStore(vault.url, credential, connection_verify=vault.ca_file)
    yield AuditVault(secrets, store)
    await secrets.close()
    await credential.close()
