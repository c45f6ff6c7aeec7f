"""Every workbook panel and alert of infra/ finds rows in what the app really sends to Application Insights.

The app's emitters run (the audit sink, the Graph gateway's throttling event, the queue functions' last
delivery watch) with telemetry pointed at a local ingestion stand-in; every workbook and alert query's
filters then run on what was captured (tests/telemetry_queries.py), and a panel or alert with no row
fails. The end-to-end flow (tests/e2e/test_bridge_flow.py) checks the workbook panels again on the
events of a real run of the app in the local host.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from functions.work import MAX_DEQUEUE_COUNT, watch_last_delivery
from shared.adapters import telemetry
from shared.adapters.audit import TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.graph import GraphGateway
from shared.topology import Queue
from tests.fakes import FakeClock, FakeEntityStore, FakeSecretStore
from tests.fixtures.ingestion import Ingestion
from tests.telemetry_queries import alert_queries, run, tables, workbook_queries

ROOT = Path(__file__).resolve().parents[3]

#: Audit actions the workbook and alerts look for, each as the services record it.
AUDITED = [("sync.completed", "completed"), ("rotation.completed", "rotated"), ("rotation.failed", "failed"),
           ("passkey.registered", "registered"), ("device.registered", "registered"),
           ("passkey.revoked", "revoked"), ("device.removed", "removed"),
           ("federation.certificate.expiring", "30d")]


def test_the_interpreter_reads_the_operators_as_kusto_does() -> None:
    rows = {"t": [{"a": "passkey.revoked", "b": "X"}]}
    assert run('t | where a has "passkey"', rows)
    assert not run('t | where a has "revoke"', rows)  # has matches whole terms only
    assert run('t | where a contains "revoke" and b =~ "x" and b in ("X", "Y")', rows)
    assert not run('t | where (a startswith "sync" or b != "X") and a !contains "revoke"', rows)


@pytest.fixture
async def captured(ingestion: Ingestion) -> dict[str, list[dict[str, Any]]]:
    """Everything the app's emitters send, as the tables customEvents (workbook) and AppEvents (alerts)."""
    assert telemetry.send_events(ingestion.connection_string, disable_offline_storage=True) is not None
    try:
        clock, vault = FakeClock(), FakeSecretStore(FakeClock())
        sink = TableAuditSink(FakeEntityStore(), clock, VaultAuditKeys(lambda: vault, clock),
                              VaultAuditAnchors(lambda: vault))
        for action, outcome in AUDITED:
            await sink.record(connection="demo", actor="bridge", action=action, target="user-1", outcome=outcome,
                              correlation_id="corr-1")
        gateway = SimpleNamespace(connection="demo")
        GraphGateway._throttled(gateway, "GET /v1.0/users", 2.0)  # type: ignore[arg-type]

        @watch_last_delivery(Queue.ROTATION)
        async def failing(msg: func.QueueMessage) -> None:
            raise RuntimeError("Graph is down")

        for count in (1, MAX_DEQUEUE_COUNT):
            with pytest.raises(RuntimeError):
                await failing(QueueMessage(id=f"m{count}", body=b"{}", dequeue_count=count))  # type: ignore[no-untyped-call]
    finally:
        telemetry.stop_events()
    assert ingestion.events(), "nothing reached the ingestion endpoint"
    return tables(ingestion.items)


def test_the_audited_actions_are_the_ones_the_services_record() -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared" / "services").rglob("*.py"))
    for action, _ in AUDITED:
        assert f'"{action}"' in sources, f"no service records {action}"


async def test_every_workbook_panel_has_rows(captured: dict[str, list[dict[str, Any]]]) -> None:
    queries = workbook_queries()
    assert len(queries) >= 10
    empty = [name for name, query in queries.items() if not run(query, captured)]
    assert empty == []
    # Each activity panel shows its own actions and no other's.
    enrolled = {r["action"] for r in run(queries["enrollment-table"], captured)}
    revoked = {r["action"] for r in run(queries["revocation-table"], captured)}
    assert enrolled == {"passkey.registered", "device.registered"}
    assert revoked == {"passkey.revoked", "device.removed"}
    assert {r["action"] for r in run(queries["rotation-table"], captured)} == {"rotation.completed", "rotation.failed"}


async def test_every_alert_fires_on_what_the_app_sends(captured: dict[str, list[dict[str, Any]]]) -> None:
    queries = alert_queries()
    assert set(queries) == {"poison-messages", "rotation-failures", "sustained-throttling", "certificate-expiry"}
    empty = [key for key, query in queries.items() if not run(query, captured)]
    assert empty == []
    poisoned = run(queries["poison-messages"], captured)
    assert [r["Properties"]["dequeueCount"] for r in poisoned] == [str(MAX_DEQUEUE_COUNT)]  # the last delivery only
