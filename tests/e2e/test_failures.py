"""Failures that show, end to end: the function app in the local host with a connection whose cloud gives it no
token (`cloud: usgov` against the simulator); its sync ends as a failed run with a problem naming the setting."""

from __future__ import annotations

import json
from typing import Any

import httpx

from local.host.process import RunningHost
from local.tls import TlsFiles
from tests.e2e.waiting import wait_for
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

GOV = {"name": "gov", "tenantId": "", "cloud": "usgov", "auth": {"kind": "managedIdentity"},
       "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]}}}


def test_a_connection_without_a_token_shows_a_failed_sync_with_its_fix(
        function_host: Any, entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
        tls_files: TlsFiles) -> None:
    # The audit trail's key and anchors live in the vault: every audited feature needs it.
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    values = {"KEY_VAULT_URL": vault.url, "AzureWebJobsStorage": azurite_connection_string,
              "CONNECTIONS": json.dumps([{**GOV, "tenantId": entra.tenant_id}]),
              "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
              "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
              "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
              "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *",
              "FEDERATION_SCHEDULE": "0 0 0 1 1 *"}
    host: RunningHost = function_host(values=values)
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key}, timeout=60) as http:
        queued = http.post("/api/connections/gov/sync")
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["runId"]
        status = wait_for(lambda: (s := http.get("/api/connections/gov/status").json()).get("lastSync")
                          and s["lastSync"].get("runId") == run_id and s)
    assert status["lastSync"]["outcome"] == "failed"
    assert status["lastSync"]["problem"]["type"] == "urn:entra-bridge:problem:configuration"
    assert status["syncRunning"] is None
    assert any(p["area"] == "sync" and "`cloud`" in p["detail"] and "https://graph.microsoft.us" in p["detail"]
               for p in status["problems"]), status["problems"]
    # Settled, not retried: one failed run recorded, nothing in the poison queue's way.
    log = host.process.log_path.read_text()
    assert log.count("sync_work of gov failed") == 1, log[-3000:]
