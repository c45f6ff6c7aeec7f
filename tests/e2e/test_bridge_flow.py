"""The bridge end to end through the local host: sync, devices, rotation and delivery, passkeys, audit.

Everything real but Azure itself: the function app in the local host, Azurite, the Entra simulator
(demo tenant) and the Key Vault emulator, reached with the production SDKs and managed identity. The
flow runs twice: with App Service Authentication off (function keys only) and on (the host emulates it
from infra/app-service-auth.json; callers bring Entra tokens from the simulator, the device only its
own signature on the excluded delivery path).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import SoftwareAuthenticator
from local.entra.demo import DEMO_TENANT_ID
from local.host.process import RunningHost
from local.tls import TlsFiles
from tests.contract import CHECK_ANSWERS, conforms
from tests.e2e.waiting import wait_for
from tests.fixtures.entra import EntraFixture
from tests.fixtures.ingestion import Ingestion
from tests.fixtures.vault import VaultFixture
from tests.telemetry_queries import run, tables, workbook_queries

CONNECTION = {"name": "demo", "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
              "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                           "rotation": {"enabled": True, "group": "Bridge Rotation", "minIntervalMinutes": 0},
                           "passkeys": {"enabled": True}}}


@pytest.fixture(scope="module")
def bridge_values(entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
                  tls_files: TlsFiles) -> dict[str, str]:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    return {"AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps([CONNECTION]),
            "KEY_VAULT_URL": vault.url, "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
            "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
            "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
            "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *", "LOG_FORMAT": "json",
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"}


def api_token(entra: EntraFixture, tls_files: TlsFiles) -> str:
    """A token for the bridge's API, as the demo app (which holds the API's app roles)."""
    with httpx.Client(verify=tls_files.client_context()) as login:
        answer = login.post(f"{entra.url}/{entra.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": entra.client_secret,
            "scope": f"api://{entra.client_id}/.default"})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


@pytest.fixture(params=["auth-off", "auth-on"])
def client(request: pytest.FixtureRequest, function_host: Any, bridge_values: dict[str, str], entra: EntraFixture,
           tls_files: TlsFiles, ingestion: Ingestion) -> Iterator[tuple[httpx.Client, RunningHost]]:
    headers: dict[str, str] = {}
    # Telemetry goes to the local ingestion stand-in, exported every half second.
    values = {**bridge_values, "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
              "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "OTEL_BLRP_SCHEDULE_DELAY": "500"}
    if request.param == "auth-on":
        values.update({"WEBSITE_AUTH_ENABLED": "true", "LOCAL_AUTH_ISSUER": f"{entra.url}/{entra.tenant_id}/v2.0",
                       "LOCAL_AUTH_AUDIENCE": entra.client_id})
        headers["authorization"] = f"Bearer {api_token(entra, tls_files)}"
    host: RunningHost = function_host(values=values)
    # Every answer of the flow is checked against docs/openapi.json as it arrives.
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key, **headers},
                      timeout=60, event_hooks=CHECK_ANSWERS) as c:
        if request.param == "auth-on":
            # Without a token, a path that is not excluded never reaches a function (Return401).
            for path in ("/api/connections/demo/status", "/api/no-such-route"):
                refused = httpx.get(f"{host.url}{path}", headers={"x-functions-key": host.function_key})
                assert refused.status_code == 401, (path, refused.text)
                assert refused.headers["www-authenticate"].startswith("Bearer")
        yield c, host


def device_token(key: ec.EllipticCurvePrivateKey, url: str, device: str) -> str:
    now = int(time.time())
    return jwt.encode({"aud": url, "sub": device, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}, key,
                      algorithm="ES256")


def test_sync_rotate_deliver_enroll_revoke_and_audit(client: tuple[httpx.Client, RunningHost],
                                                    entra: EntraFixture, ingestion: Ingestion) -> None:
    http, host = client
    started = http.post("/api/connections/demo/sync")
    assert started.status_code == 202
    # This run's record, not the one a run of the other parametrisation left on the same storage.
    run_id = started.json()["runId"]
    status = wait_for(lambda: (s := http.get("/api/connections/demo/status").json()).get("lastSync")
                      and s["lastSync"].get("runId") == run_id and s["lastSync"]["outcome"] == "completed" and s)
    assert status["users"]["total"] == 160
    kept = http.get(status["lastSync"]["details"])
    assert kept.status_code == 200, kept.text
    assert len(kept.json()["plannedIds"]["add"]) == min(status["lastSync"]["planned"]["add"], 100)
    assert http.get("/api/connections/demo/runs/sync-unknown").status_code == 404
    users = http.get("/api/connections/demo/users", params={"inRotationGroup": "true", "top": "50"}).json()
    assert users["count"] == 30
    by_upn = {u["userPrincipalName"]: u for u in users["value"]}
    ann = by_upn["ann.lee0@bridge-demo.example"]
    admin = by_upn["ben.lee1@bridge-demo.example"]

    # A device for Ann, then a rotation delivered to it (a new device id per run: removed ids stay taken).
    device = f"dev-ann-{uuid.uuid4().hex[:8]}"
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    put = http.put(f"/api/connections/demo/devices/{device}", json={"user": ann["userPrincipalName"],
                                                                  "displayName": "Ann's key", "publicKey": jwk})
    assert put.status_code == 201, put.text
    assert http.post(f"/api/connections/demo/users/{ann['id']}/rotate").status_code == 202
    wait_for(lambda: http.get(f"/api/connections/demo/users/{ann['id']}").json().get("rotation", {})
             .get("status") == "rotated")
    url = f"{host.url}/api/delivery/connections/demo/devices/{device}/password"
    token = device_token(key, url, device)
    delivered = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    conforms(delivered)
    assert delivered.status_code == 200, delivered.text
    held = entra.admin("GET", f"/_sim/users/{ann['id']}/password")["password"]
    assert delivered.json()["password"] == held
    replay = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    conforms(replay)
    assert replay.status_code == 401
    assert held not in replay.text

    # The Global Administrator in the rotation group is refused, naming the role to grant.
    assert http.post(f"/api/connections/demo/users/{admin['id']}/rotate").status_code == 202
    refused = wait_for(lambda: (r := http.get(f"/api/connections/demo/users/{admin['id']}").json()["rotation"])
                       .get("status") == "refused" and r)
    assert "Privileged Authentication Administrator" in refused["reason"]

    # A passkey registered through the bridge, then revoked when the device goes.
    options = http.post(f"/api/connections/demo/devices/{device}/passkeys/options")
    assert options.status_code == 200, options.text
    credential = SoftwareAuthenticator(fmt="packed-self").register(options.json())
    registered = http.post(f"/api/connections/demo/devices/{device}/passkeys", json={
        "ceremonyId": options.json()["ceremonyId"], "displayName": "Ann's key", "credential": credential})
    assert registered.status_code == 201, registered.text
    assert len(entra.admin("GET", f"/_sim/users/{ann['id']}/fido2")["methods"]) == 1
    removal = http.delete(f"/api/connections/demo/devices/{device}")
    assert removal.status_code == 202
    operation = removal.json()["operationId"]
    wait_for(lambda: http.get(f"/api/connections/demo/operations/{operation}").json().get("status") == "completed")
    assert entra.admin("GET", f"/_sim/users/{ann['id']}/fido2")["methods"] == []

    # The audit log holds every step and its chains verify.
    today = dt.datetime.now(dt.UTC).date().isoformat()
    audit = http.get("/api/audit", params={"connection": "demo", "from": today, "to": today, "top": "1000"}).json()
    actions = {r["action"] for r in audit["value"]}
    assert {"sync.completed", "vault.put", "rotation.completed", "password.delivered",
            "rotation.refused", "passkey.registered", "passkey.revoked", "device.removed"} <= actions
    assert held not in json.dumps(audit)
    verified = http.get("/api/audit/verify", params={"connection": "demo", "from": today, "to": today}).json()
    assert verified["intact"], verified
    log = host.process.log_path.read_text()
    assert held not in log

    # What the app sent to Application Insights fills each activity panel of the workbook, with no password.
    activity = {name: query for name, query in workbook_queries().items() if name not in ("poison", "throttling")}
    wait_for(lambda: all(run(query, tables(ingestion.items)) for query in activity.values()), timeout=30)
    assert held not in json.dumps(ingestion.items)
