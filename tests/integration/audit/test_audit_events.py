"""Audit records reach Application Insights as custom events (a local ingestion endpoint stands in)."""

from __future__ import annotations

import logging

from shared.adapters import telemetry
from tests.fixtures.ingestion import Ingestion


def test_an_audit_line_becomes_a_custom_event_with_its_fields(ingestion: Ingestion) -> None:
    provider = telemetry.send_events(ingestion.connection_string, disable_offline_storage=True)
    assert provider is not None
    try:
        assert telemetry.send_events(ingestion.connection_string) is provider  # attached once per process
        logging.getLogger(telemetry.AUDIT_LOGGER).info("audit %s %s %s", "rotation.done", "ok", "user-1", extra={
            "custom_dimensions": {"event": "audit", "connection": "demo", "action": "rotation.done", "outcome": "ok",
                                  "target": "user-1", "graphRequestId": None, "seq": 7}})
    finally:
        telemetry.stop_events()
    events = ingestion.events()
    assert len(events) == 1
    data = events[0]["data"]["baseData"]
    assert data["name"] == telemetry.EVENT_NAME
    assert data["properties"]["action"] == "rotation.done"
    assert data["properties"]["connection"] == "demo"
    assert "graphRequestId" not in data["properties"]
    assert "custom_dimensions" not in data["properties"]


def test_nothing_is_attached_without_a_connection_string() -> None:
    assert telemetry.send_events(None) is None
    assert telemetry.send_events("") is None
