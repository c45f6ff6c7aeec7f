"""Federation end to end through the local host: compatibility, refusal, forced federation, the monitor's
status, defederation, and the audit records, against the simulator's demo domain."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.entra.demo import DEMO_TENANT_ID
from local.host.process import RunningHost
from local.tls import TlsFiles
from tests.contract import CHECK_ANSWERS
from tests.e2e.waiting import wait_for
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

DOMAIN = "bridge-demo.example"
CONNECTION = {"name": "demo", "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
              "features": {"federation": {"enabled": True}}}


def idp_certificate(days: int) -> str:
    """A self-signed IdP signing certificate, base64 DER as Graph takes it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@pytest.fixture
def client(function_host: Any, entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
           tls_files: TlsFiles) -> Iterator[httpx.Client]:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")  # the audit key and anchors
    values = {"AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps([CONNECTION]),
              "KEY_VAULT_URL": vault.url,
              "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
              "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
              "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
              "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *",
              "FEDERATION_SCHEDULE": "*/2 * * * * *", "LOG_FORMAT": "json"}
    host: RunningHost = function_host(values=values)
    with httpx.Client(base_url=f"{host.url}/api/connections/demo", headers={"x-functions-key": host.function_key},
                      timeout=60, event_hooks=CHECK_ANSWERS) as c:
        yield c


def test_federate_watch_and_defederate_the_demo_domain(client: httpx.Client) -> None:
    api = f"/domains/{DOMAIN}/federation"
    idp = {"issuerUri": "https://idp.example/e2e", "passiveSignInUri": "https://idp.example/sso",
           "signingCertificate": idp_certificate(days=20)}

    report = client.get(f"{api}/compatibility", params=idp).json()
    assert report["compatible"] is False
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed, report
    assert any(c["status"] == "warn" and "expires on" in c["detail"] for c in report["checks"]), report

    refused = client.put(api, json=idp)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")

    forced = client.put(api, json={**idp, "force": {"reason": "e2e: the admins keep cloud-only accounts"}})
    assert forced.status_code == 200, forced.text
    assert "Federated" in forced.text

    # The monitor (every two seconds here) finds the certificate expiring within 30 days.
    status = wait_for(lambda: (s := client.get("/status").json()).get("federation") and
                      any(DOMAIN in json.dumps(row) and "expir" in json.dumps(row).lower()
                          for row in s["federation"]) and s, timeout=60)
    assert DOMAIN in json.dumps(status["federation"])

    removed = client.delete(api)
    assert removed.status_code == 200, removed.text
    assert "Managed" in removed.text
    assert "password" in removed.text.lower()

    today = dt.datetime.now(dt.UTC).date().isoformat()
    audit = client.get(client.base_url.join("/api/audit"),
                       params={"connection": "demo", "from": today, "to": today, "top": "1000"}).json()
    actions = [r["action"] for r in audit["value"]]
    assert "federation.set" in actions
    assert "federation.removed" in actions
