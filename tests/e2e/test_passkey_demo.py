"""The passkey demo of `make run` (local.demo_passkey) against the local host, Azurite and the Entra simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from local.demo_passkey import DemoFailed, demo_line, run_demo
from local.entra.demo import DEMO_TENANT_ID
from local.host.process import RunningHost
from local.tls import TlsFiles
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

CONNECTION = {"name": "demo", "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
              "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                           "passkeys": {"enabled": True, "policy": "optional"}}}


@pytest.fixture
def demo_host(function_host: Any, entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
              tls_files: TlsFiles) -> Iterator[tuple[httpx.Client, RunningHost]]:
    """The host with the demo connection, after one completed sync (as `make run` does before the demo)."""
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")  # the audit key and anchors
    host: RunningHost = function_host(values={
        "AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps([CONNECTION]),
        "KEY_VAULT_URL": vault.url,
        "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca), "SSL_CERT_FILE": str(tls_files.bundle),
        "REQUESTS_CA_BUNDLE": str(tls_files.bundle), "IDENTITY_ENDPOINT": entra.identity_endpoint,
        "IDENTITY_HEADER": entra.identity_header, "SYNC_SCHEDULE": "0 0 0 1 1 *",
        "ROTATION_SCHEDULE": "0 0 0 1 1 *",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"})
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key}, timeout=60) as http:
        assert http.post("/api/connections/demo/sync").status_code == 202
        deadline = time.monotonic() + 120
        while (http.get("/api/connections/demo/status").json().get("lastSync") or {}).get("outcome") != "completed":
            assert time.monotonic() < deadline, "the sync did not complete"
            time.sleep(0.3)
        yield http, host


def test_the_demo_registers_a_passkey_and_revokes_it_with_the_device(demo_host: tuple[httpx.Client, RunningHost],
                                                                    entra: EntraFixture) -> None:
    http, host = demo_host
    result = run_demo(http)
    assert result.audit == ["passkey.registered", "passkey.revoked", "device.removed"]
    assert entra.admin("GET", f"/_sim/users/{result.user_id}/fido2")["methods"] == []
    device = http.get(f"/api/connections/demo/devices/{result.device_id}").json()
    assert device["state"] == "removed"
    assert device["passkeys"] == []
    line = result.line()
    assert result.passkey_id in line
    assert result.upn in line

    # Run again, as a second `make run` does: the removed demo device's id is taken, so a fresh one is used.
    again = demo_line(host.url, host.function_key)
    assert again.startswith("passkey demo: registered passkey"), again
    assert "demo-laptop-" in again


def test_a_failed_step_is_named_in_one_line(demo_host: tuple[httpx.Client, RunningHost]) -> None:
    http, host = demo_host
    with pytest.raises(DemoFailed, match="no active user named nobody@"):
        run_demo(http, user="nobody@bridge-demo.example")
    line = demo_line(host.url, "wrong-key")
    assert line.startswith("passkey demo: failed: list users: expected 200, got 401"), line
    assert "wrong-key" not in line
