"""Audit records to Application Insights as custom events, when a connection string is configured.

The audit adapter logs each record on the `bridge.audit` logger with its fields in `custom_dimensions`.
This module adds one handler to that logger which exports through the Azure Monitor OpenTelemetry
exporter; a log record carrying the attribute `microsoft.custom_event.name` is stored in the
`customEvents` table rather than `traces`
(https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify?tabs=python#send-custom-events).
The fields become the event's custom dimensions. Nothing else is exported from here: the Functions
host already collects the app's log lines as traces.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

AUDIT_LOGGER = "bridge.audit"
EVENT_NAME = "BridgeAudit"
CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"


_provider: LoggerProvider | None = None


class AuditEventHandler(LoggingHandler):
    """Sends `bridge.audit` lines as custom events, their fields as flat attributes."""

    def emit(self, record: logging.LogRecord) -> None:
        dimensions = getattr(record, "custom_dimensions", None) or {}
        fields = {k: v for k, v in record.__dict__.items() if k != "custom_dimensions"}
        # Attribute values must be primitives; None means "not applicable" and is left out.
        fields.update({str(k): v for k, v in dimensions.items() if isinstance(v, str | int | float | bool)})
        fields[CUSTOM_EVENT_ATTRIBUTE] = EVENT_NAME
        super().emit(logging.makeLogRecord(fields))


def send_audit_events(connection_string: str | None, **exporter_options: Any) -> LoggerProvider | None:
    """Attach the custom-event exporter to the audit logger once; None when telemetry is not configured."""
    global _provider  # one exporter per process
    if not connection_string:
        return None
    if _provider is not None:
        return _provider
    audit = logging.getLogger(AUDIT_LOGGER)
    provider = _provider = LoggerProvider()
    exporter = AzureMonitorLogExporter(connection_string=connection_string, **exporter_options)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    audit.addHandler(AuditEventHandler(level=logging.INFO, logger_provider=provider))
    if audit.getEffectiveLevel() > logging.INFO:
        audit.setLevel(logging.INFO)
    return provider
