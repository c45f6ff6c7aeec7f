"""The audit trail's anchors rely on the vault keeping history (docs/audit.md): purge protection on,
soft delete on, and the app allowed to add secret versions (the audit key and anchors)."""

from __future__ import annotations

import re

from shared.adapters.vault import OFFICER_ROLE
from tests.infra.bicep_files import INFRA

VAULT = (INFRA / "modules" / "keyvault.bicep").read_text(encoding="utf-8")
RBAC = (INFRA / "modules" / "rbac.bicep").read_text(encoding="utf-8")


def test_the_vault_keeps_anchor_history() -> None:
    assert re.search(r"^\s*enablePurgeProtection:\s*true\s*$", VAULT, re.MULTILINE)
    assert re.search(r"^\s*enableSoftDelete:\s*true\s*$", VAULT, re.MULTILINE)


def test_the_app_may_add_secret_versions() -> None:
    # Key Vault Secrets Officer, the built-in role the adapter names in its errors.
    assert OFFICER_ROLE == "Key Vault Secrets Officer"
    assert "keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'" in RBAC
    assert re.search(r"resource vaultAssignment [^\n]*\n(?:.*\n){0,8}.*roles\.keyVaultSecretsOfficer", RBAC)
