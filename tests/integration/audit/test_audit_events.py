"""Audit records reach Application Insights as custom events (a local ingestion endpoint stands in)."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from shared.adapters import telemetry


class _Ingestion(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        text = raw.decode()
        items = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                         if line.strip()]
        _Ingestion.received.extend(items)
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def ingestion(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setenv("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingestion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_an_audit_line_becomes_a_custom_event_with_its_fields(ingestion: str) -> None:
    connection_string = f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint={ingestion}"
    provider = telemetry.send_audit_events(connection_string, disable_offline_storage=True)
    assert provider is not None
    try:
        assert telemetry.send_audit_events(connection_string) is provider  # attached once per process
        logging.getLogger(telemetry.AUDIT_LOGGER).info("audit %s %s %s", "rotation.done", "ok", "user-1", extra={
            "custom_dimensions": {"event": "audit", "connection": "demo", "action": "rotation.done", "outcome": "ok",
                                  "target": "user-1", "graphRequestId": None, "seq": 7}})
        provider.force_flush()
    finally:
        for handler in list(logging.getLogger(telemetry.AUDIT_LOGGER).handlers):
            if isinstance(handler, telemetry.AuditEventHandler):
                logging.getLogger(telemetry.AUDIT_LOGGER).removeHandler(handler)
        provider.shutdown()
        telemetry._provider = None
    events = [e for e in _Ingestion.received if e["data"]["baseType"] == "EventData"]
    assert len(events) == 1
    data = events[0]["data"]["baseData"]
    assert data["name"] == telemetry.EVENT_NAME
    assert data["properties"]["action"] == "rotation.done"
    assert data["properties"]["connection"] == "demo"
    assert "graphRequestId" not in data["properties"]
    assert "custom_dimensions" not in data["properties"]


def test_nothing_is_attached_without_a_connection_string() -> None:
    assert telemetry.send_audit_events(None) is None
    assert telemetry.send_audit_events("") is None
