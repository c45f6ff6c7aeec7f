"""Who touched the vault and the storage account is on record, and a password read by anyone but the
app raises an alert: diagnostic settings to Log Analytics and the password-read alert (infra/)."""

from __future__ import annotations

import re

from shared.domain.rotation import SECRET_PREFIX
from tests.infra.bicep_files import INFRA, bicep_block

MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")
DIAGNOSTICS = (INFRA / "modules" / "diagnostics.bicep").read_text(encoding="utf-8")


def _resource(symbol: str) -> str:
    start = DIAGNOSTICS.index(f"resource {symbol} ")
    return DIAGNOSTICS[start:DIAGNOSTICS.index("\n}\n", start)]


def test_main_sends_the_vault_the_storage_and_the_apps_identity_to_the_module() -> None:
    call = bicep_block(MAIN, "module diagnostics 'modules/diagnostics.bicep' = {")
    for wiring in ("keyVaultName: keyVault.outputs.name", "storageAccountName: storage.outputs.name",
                   "workspaceResourceId: monitoring.outputs.workspaceResourceId",
                   "appPrincipalId: identity.outputs.principalId",
                   "actionGroupResourceId: alerts.outputs.actionGroupResourceId"):
        assert wiring in call, wiring


def test_key_vault_audit_events_go_to_the_workspace() -> None:
    setting = _resource("vaultDiagnostics")
    assert "'Microsoft.Insights/diagnosticSettings@" in setting
    assert "scope: vault\n" in setting
    assert "workspaceId: workspaceResourceId" in setting
    assert re.search(r"category: 'AuditEvent'\n\s*enabled: true", setting)
    # Resource-specific tables: the alert reads AZKVAuditLogs.
    assert "logAnalyticsDestinationType: 'Dedicated'" in setting


def test_every_storage_service_the_app_uses_logs_reads_writes_and_deletes() -> None:
    logs = bicep_block(DIAGNOSTICS, "var storageLogs = [")
    assert re.findall(r"category: '(\w+)'\n\s*enabled: true", logs) == ["StorageRead", "StorageWrite", "StorageDelete"]
    for symbol, service in (("tableDiagnostics", "tableService"), ("queueDiagnostics", "queueService"),
                            ("blobDiagnostics", "blobService")):
        setting = _resource(symbol)
        assert f"scope: storage::{service}\n" in setting, symbol
        assert "workspaceId: workspaceResourceId" in setting
        assert "logs: storageLogs" in setting


def test_a_password_read_by_anyone_but_the_app_alerts() -> None:
    assert f"param passwordSecretPrefix string = '{SECRET_PREFIX}-'" in DIAGNOSTICS
    query = bicep_block(DIAGNOSTICS, "var passwordReadQuery = join([")
    assert query.lstrip().startswith("'AZKVAuditLogs'")
    assert 'OperationName in ("SecretGet", "SecretBackup")' in query
    assert '/secrets/${passwordSecretPrefix}' in query
    assert "Identity.claim.oid" in query
    assert '| where Caller != "${appPrincipalId}"' in query
    alert = _resource("passwordReadAlert")
    assert "query: passwordReadQuery" in alert
    assert "threshold: 0" in alert
    assert "operator: 'GreaterThan'" in alert
    assert "scopes: [\n      workspaceResourceId\n    ]" in alert
    assert "actionGroupResourceId\n" in alert
    assert "severity: 1" in alert
