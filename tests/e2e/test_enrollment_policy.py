"""Enrollment policy through the local host, on Azurite, the Entra simulator and the Key Vault emulator:
under `optional` a refused passkey answers `passkey-skipped` and the device is enrolled without one; under
`required` (with withholdPasswordsUntilPasskey) the device is pending in status and gets no password until
its passkey is registered in Entra."""

from __future__ import annotations

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
from tests.e2e.waiting import wait_for
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture


def _connection(name: str, passkeys: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
            "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                         "rotation": {"enabled": True, "group": "Bridge Rotation", "minIntervalMinutes": 0},
                         "passkeys": {"enabled": True, **passkeys}}}


CONNECTIONS = [_connection("opt", {"policy": "optional"}),
               _connection("req", {"policy": "required", "withholdPasswordsUntilPasskey": True})]


@pytest.fixture(scope="module")
def policy_values(entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
                  tls_files: TlsFiles) -> dict[str, str]:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    return {"AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps(CONNECTIONS),
            "KEY_VAULT_URL": vault.url, "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
            "SSL_CERT_FILE": str(tls_files.bundle), "REQUESTS_CA_BUNDLE": str(tls_files.bundle),
            "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
            "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *", "LOG_FORMAT": "json",
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"}


@pytest.fixture
def client(function_host: Any, policy_values: dict[str, str]) -> Iterator[tuple[httpx.Client, RunningHost]]:
    host: RunningHost = function_host(values=policy_values)
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key}, timeout=60) as c:
        yield c, host


def _synced_user(http: httpx.Client, conn: str, upn: str) -> dict[str, Any]:
    assert http.post(f"/api/connections/{conn}/sync").status_code == 202
    wait_for(lambda: ((http.get(f"/api/connections/{conn}/status").json().get("lastSync") or {})
                      .get("outcome") == "completed"))
    users = http.get(f"/api/connections/{conn}/users", params={"inRotationGroup": "true", "top": "50"}).json()
    return next(dict(u) for u in users["value"] if u["userPrincipalName"] == upn)


def _device(http: httpx.Client, conn: str, device: str, user: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    put = http.put(f"/api/connections/{conn}/devices/{device}", json={
        "user": user["userPrincipalName"], "displayName": "key",
        "publicKey": json.loads(ECAlgorithm.to_jwk(key.public_key()))})
    assert put.status_code == 201, put.text
    return key


def _register(http: httpx.Client, conn: str, device: str, **authenticator: Any) -> httpx.Response:
    options = http.post(f"/api/connections/{conn}/devices/{device}/passkeys/options")
    assert options.status_code == 200, options.text
    credential = SoftwareAuthenticator(**authenticator).register(options.json())
    return http.post(f"/api/connections/{conn}/devices/{device}/passkeys", json={
        "ceremonyId": options.json()["ceremonyId"], "displayName": "key", "credential": credential})


def _password(host: RunningHost, key: ec.EllipticCurvePrivateKey, conn: str, device: str) -> httpx.Response:
    url = f"{host.url}/api/delivery/connections/{conn}/devices/{device}/password"
    now = int(time.time())
    token = jwt.encode({"aud": url, "sub": device, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex}, key,
                       algorithm="ES256")
    return httpx.get(url, headers={"authorization": f"Bearer {token}"})


def test_optional_and_required(client: tuple[httpx.Client, RunningHost], entra: EntraFixture) -> None:
    http, host = client

    # optional: a passkey refused by the bridge's checks is skippable; the device is enrolled without one.
    _device(http, "opt", "dev-opt", _synced_user(http, "opt", "ann.lee0@bridge-demo.example"))
    refused = _register(http, "opt", "dev-opt", fmt="packed-self", origin="https://evil.example")
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"] == "urn:entra-bridge:problem:passkey-skipped"
    assert (problem["skippable"], problem["passkey"]) == (True, "skipped")
    assert problem["cause"] == "urn:entra-bridge:problem:invalid-input"
    assert http.get("/api/connections/opt/devices/dev-opt").json()["passkey"] == "skipped"
    assert http.get("/api/connections/opt/status").json()["passkeys"]["devices"]["skipped"] == 1

    # required: pending in status, no password until the passkey is registered in Entra.
    user = _synced_user(http, "req", "ann.lee0@bridge-demo.example")
    key = _device(http, "req", "dev-req", user)
    assert http.post(f"/api/connections/req/users/{user['id']}/rotate").status_code == 202
    wait_for(lambda: http.get(f"/api/connections/req/users/{user['id']}").json().get("rotation", {})
             .get("status") == "rotated")
    withheld = _password(host, key, "req", "dev-req")
    assert withheld.status_code == 403, withheld.text
    assert withheld.json()["type"] == "urn:entra-bridge:problem:passkey-pending"
    assert withheld.json()["setting"] == "features.passkeys.withholdPasswordsUntilPasskey"
    held = entra.admin("GET", f"/_sim/users/{user['id']}/password")["password"]
    assert held not in withheld.text
    status = http.get("/api/connections/req/status").json()["passkeys"]
    assert [d["deviceId"] for d in status["pendingPasskey"]] == ["dev-req"]

    again = _register(http, "req", "dev-req", fmt="packed-self", origin="https://evil.example")
    assert again.status_code == 400, again.text  # required: never skippable
    assert http.get("/api/connections/req/devices/dev-req").json()["passkey"] == "pending"
    registered = _register(http, "req", "dev-req", fmt="packed-self")
    assert registered.status_code == 201, registered.text
    assert registered.json()["passkey"] == "registered"
    assert http.get("/api/connections/req/status").json()["passkeys"]["pendingPasskey"] == []
    delivered = _password(host, key, "req", "dev-req")
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["password"] == held

    # Leave the tenant as it was: removing the device revokes its passkey in Entra.
    removal = http.delete("/api/connections/req/devices/dev-req")
    operation = removal.json()["operationId"]
    wait_for(lambda: http.get(f"/api/connections/req/operations/{operation}").json().get("status") == "completed")
    assert entra.admin("GET", f"/_sim/users/{user['id']}/fido2")["methods"] == []
