"""Events through the local host: the passkey demo's changes reach a webhook through the Event Grid stand-in,
and the change feed serves the same events (docs/events.md)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from local.demo_passkey import run_demo
from local.eventgrid.process import RunningTopic
from local.tls import TlsFiles
from tests.e2e.test_passkey_demo import CONNECTION
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture


def test_demo_changes_are_delivered_once_and_readable_in_the_feed(function_host: Any, entra: EntraFixture,
                                                                   azurite_connection_string: str,
                                                                   tls_files: TlsFiles, vault: VaultFixture,
                                                                   eventgrid: RunningTopic) -> None:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")  # the audit key and anchors
    sink = f"e2e-{uuid.uuid4().hex[:8]}"
    eventgrid.subscribe(sink, eventgrid.sink_url(sink))
    host = function_host(values={
        "AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps([CONNECTION]),
        "KEY_VAULT_URL": vault.url, "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
        "SSL_CERT_FILE": str(tls_files.bundle),
        "REQUESTS_CA_BUNDLE": str(tls_files.bundle), "IDENTITY_ENDPOINT": entra.identity_endpoint,
        "IDENTITY_HEADER": entra.identity_header, "SYNC_SCHEDULE": "0 0 0 1 1 *",
        "ROTATION_SCHEDULE": "0 0 0 1 1 *", "EVENTS_SCHEDULE": "0 0 0 1 1 *",
        "EVENTGRID_TOPIC_ENDPOINT": eventgrid.endpoint, "EVENTGRID_TOPIC_KEY": eventgrid.key,
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"})
    with httpx.Client(base_url=host.url, headers={"x-functions-key": host.function_key}, timeout=60) as http:
        before = http.get("/api/connections/demo/events", params={"top": "1000"}).json()
        cursor = before["cursor"]
        while before["hasMore"]:
            before = http.get("/api/connections/demo/events", params={"after": cursor, "top": "1000"}).json()
            cursor = before["cursor"]
        assert http.post("/api/connections/demo/sync").status_code == 202
        deadline = time.monotonic() + 120
        while (http.get("/api/connections/demo/status").json().get("lastSync") or {}).get("outcome") != "completed":
            assert time.monotonic() < deadline, "the sync did not complete"
            time.sleep(0.3)
        result = run_demo(http)
        wanted = {"bridge.passkey.registered", "bridge.passkey.revoked", "bridge.device.removed"}
        deadline = time.monotonic() + 60
        while not wanted <= {e["type"] for e in eventgrid.received(sink)}:
            assert time.monotonic() < deadline, f"delivered: {eventgrid.received(sink)}"
            time.sleep(0.3)
        time.sleep(1.0)
        got = eventgrid.received(sink)
        mine = [e for e in got if e["data"].get("deviceId") == result.device_id]
        assert sorted(e["type"] for e in mine) == sorted(wanted)
        assert len({e["id"] for e in got}) == len(got)  # each change once
        feed = http.get("/api/connections/demo/events", params={"after": cursor, "top": "1000"})
        assert feed.status_code == 200
        ids = [e["id"] for e in feed.json()["events"]]
        assert {e["id"] for e in mine} <= set(ids)
        bad = http.get("/api/connections/demo/events", params={"after": "not-a-cursor"})
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "after" in bad.json()["detail"]
