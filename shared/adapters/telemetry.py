"""Audit records and operational events to Application Insights as custom events.

The audit adapter logs each record on the `bridge.audit` logger, and adapters log operational events
(Graph throttling, a message given up to its poison queue) on the `bridge.events` logger, each with its
fields in `custom_dimensions`. The Python worker forwards the text of log lines to the Functions host
as traces, but not those fields, so this module adds one handler to each of the two loggers which
exports through the Azure Monitor OpenTelemetry exporter: a log record carrying the attribute
`microsoft.custom_event.name` is stored in the `customEvents` table (`AppEvents` in the workspace)
rather than `traces`, with the fields as its custom dimensions (`Properties`)
(https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify?tabs=python#send-custom-events).
The workbook and the alerts (infra/modules) read these events and nothing else of the app.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter

# OpenTelemetry's Python logs SDK is published only under `opentelemetry.sdk._logs` (the logs signal is
# still marked experimental); the exporter's own documented samples import it from there
# (https://learn.microsoft.com/python/api/overview/azure/monitor-opentelemetry-exporter-readme,
# "Export Hello World Log").
# The only alternative, the Azure Monitor distro, brings a dozen web-framework instrumentations the app
# does not use; this module is the one place that names it.
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

from shared import logs

AUDIT_LOGGER = "bridge.audit"
EVENTS_LOGGER = "bridge.events"
#: The custom event's name for each logger.
EVENT_NAMES = {AUDIT_LOGGER: "BridgeAudit", EVENTS_LOGGER: "BridgeEvent"}
EVENT_NAME = EVENT_NAMES[AUDIT_LOGGER]
CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"


_provider: LoggerProvider | None = None


class AuditEventHandler(LoggingHandler):
    """Sends lines of the audit and events loggers as custom events, their fields as flat attributes."""

    def emit(self, record: logging.LogRecord) -> None:
        dimensions = getattr(record, "custom_dimensions", None) or {}
        fields = {k: v for k, v in record.__dict__.items() if k != "custom_dimensions"}
        # Attribute values must be primitives; None means "not applicable" and is left out.
        fields.update({str(k): v for k, v in dimensions.items() if isinstance(v, str | int | float | bool)})
        fields[CUSTOM_EVENT_ATTRIBUTE] = EVENT_NAMES.get(record.name, EVENT_NAMES[EVENTS_LOGGER])
        super().emit(logging.makeLogRecord(fields))


def send_events(connection_string: str | None, **exporter_options: Any) -> LoggerProvider | None:
    """Attach the custom-event exporter to the audit and events loggers once; None without telemetry."""
    global _provider  # one exporter per process
    if not connection_string:
        return None
    if _provider is not None:
        return _provider
    provider = _provider = LoggerProvider()
    exporter = AzureMonitorLogExporter(connection_string=connection_string, **exporter_options)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = AuditEventHandler(level=logging.INFO, logger_provider=provider)
    handler.addFilter(logs.SecretMaskingFilter())
    for name in EVENT_NAMES:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    return provider


def stop_events() -> None:
    """Flush and detach the exporter (tests; the worker's exit flushes it in Azure)."""
    global _provider  # one exporter per process
    if _provider is None:
        return
    for name in EVENT_NAMES:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, AuditEventHandler):
                logger.removeHandler(handler)
    _provider.force_flush()
    _provider.shutdown()
    _provider = None
