"""Failures that show and links that recover, on the Entra simulator and Azurite through the production
composition: a connection whose cloud gives it no token (`cloud: usgov` against the simulator, whose
managed identity knows no https://graph.microsoft.us) is a failed run with a problem naming the setting,
through the service, the queue function, the federation timer and the status route; a stored delta link
for another Graph host (the local stack restarted on another port) leads to one audited full read."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.identity.aio import ClientSecretCredential

from bench.sync import open_world
from functions import federation as federation_functions
from functions import status as status_functions
from functions import sync as sync_functions
from local.entra.demo import BRIDGE_CLIENT_ID
from local.tls import TlsFiles
from shared import bootstrap
from shared.adapters.graph import GraphGateway, SystemClock
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.leases import TableLeases
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import TableUsers
from shared.bootstrap import Bridge
from shared.config import Connection, load_settings, settings
from shared.errors import Configuration
from shared.messages import WorkMessage
from shared.services.directory import Directory
from shared.services.sync import SyncService
from tests.fakes import FakeAuditSink, FakeWorkQueue
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture
from tests.unit.test_config import aliases


def _functions(*blueprints: Any) -> dict[str, Callable[..., Awaitable[Any]]]:
    app = func.FunctionApp()
    for bp in blueprints:
        app.register_functions(bp)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions(sync_functions.bp, status_functions.bp, federation_functions.bp)


@pytest.fixture
async def gov(entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: TlsFiles,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bridge]:
    """The function app's composition root with one `cloud: usgov` connection, on the local stand-ins."""
    for name in aliases():
        monkeypatch.delenv(name, raising=False)
    name = f"gov{uuid.uuid4().hex[:8]}"
    connection = {"name": name, "tenantId": entra.tenant_id, "cloud": "usgov", "auth": {"kind": "managedIdentity"},
                  "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                               "federation": {"enabled": True}}}
    values = {"CONNECTIONS": json.dumps([connection]), "AzureWebJobsStorage": azurite_connection_string,
              "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
              "IDENTITY_ENDPOINT": entra.identity_endpoint, "IDENTITY_HEADER": entra.identity_header,
              # The audit trail's key and anchors live in the vault (the app's identity reaches it).
              "KEY_VAULT_URL": vault.url}
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    app = Bridge(load_settings())
    monkeypatch.setattr(bootstrap, "_bridge", app)
    try:
        yield app
    finally:
        await app.close()
        settings.cache_clear()


async def _get_status(name: str) -> dict[str, Any]:
    request = func.HttpRequest(method="GET", url=f"http://127.0.0.1/api/connections/{name}/status",
                               route_params={"c": name}, body=b"")
    response = await FUNCTIONS["connection_status"](request)
    assert response.status_code == 200, response.get_body()
    body: dict[str, Any] = json.loads(response.get_body())
    return body


async def test_the_usgov_token_failure_is_a_failed_run_with_a_problem_through_the_service(gov: Bridge) -> None:
    conn = gov.connections()[0]
    with pytest.raises(Configuration) as raised:
        await gov.sync.run(conn, await gov.directory_reader(conn), run_id="sync-gov1", correlation_id="c1")
    assert "https://graph.microsoft.us" in raised.value.detail
    assert "`cloud`" in raised.value.detail
    status = await gov.sync.status(conn.name)
    assert status.running is None
    assert status.last_run is not None
    assert (status.last_run["runId"], status.last_run["outcome"]) == ("sync-gov1", "failed")
    assert status.last_run["problem"]["setting"] == "CONNECTIONS"
    (line,) = status.problems()
    assert line.startswith(f"sync failed: connection {conn.name!r} cannot get a token for https://graph.microsoft.us: "
                           "Resource 'https://graph.microsoft.us' is not known. - check the connection's `cloud`"), line
    assert line.endswith("(setting CONNECTIONS)")


async def test_the_usgov_token_failure_through_the_queue_function_and_the_status_route(gov: Bridge) -> None:
    conn = gov.connections()[0]
    message = WorkMessage(connection=conn.name, kind="sync", target=conn.name, idempotency_key="sync-gov2",
                          correlation_id="c2", args={"actor": "test"})
    # Not worth retrying: the message is settled (no poison queue after five identical failures).
    await FUNCTIONS["sync_work"](func.QueueMessage(id="m1", body=message.to_json().encode()))
    # The federation timer cannot sign in either: it goes on and keeps the problem for status.
    await FUNCTIONS["federation_monitor"](TimerRequest(past_due=False))
    body = await _get_status(conn.name)
    assert body["lastSync"]["outcome"] == "failed"
    assert body["lastSync"]["runId"] == "sync-gov2"
    assert body["syncRunning"] is None
    problems = body["problems"]
    assert any(p["area"] == "sync" and "`cloud`" in p["detail"] and "graph.microsoft.us" in p["detail"]
               and "CONNECTIONS" in p["fix"] for p in problems), problems
    assert any(p["area"] == "federation_monitor" and "`cloud`" in p["detail"] for p in problems), problems


async def test_a_delta_link_of_another_host_leads_to_one_audited_full_read(
        entra: EntraFixture, azurite_connection_string: str, tls_files: TlsFiles) -> None:
    conn = Connection.model_validate({
        "name": f"moved{uuid.uuid4().hex[:8]}", "tenantId": entra.tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]}}})
    async with open_world(entra.tenant_id, entra.url, azurite_connection_string, str(tls_files.ca)) as world:
        audit = FakeAuditSink()
        clock = SystemClock()
        sync = SyncService(directory=Directory(TableUsers(world.tables)), state=TableSyncState(world.tables),
                           leases=TableLeases(world.tables, clock), audit=audit, queue=FakeWorkQueue(), clock=clock)

        async def run(run_id: str) -> Any:
            return await sync.run(conn, GraphDirectoryReader(world.graph), run_id=run_id, correlation_id=run_id)

        first = await run("r1")
        assert (first.outcome, first.mode) == ("completed", "full")
        # The stack restarted on another port: the stored links name the old one.
        kept = TableSyncState(world.tables)
        state = await kept.delta(conn.name)
        assert state is not None
        here = entra.url.rstrip("/")
        moved = state.users_link.replace(here, "https://127.0.0.1:1")
        assert moved != state.users_link
        state.users_link = moved
        state.group_links = [{**e, "link": str(e["link"]).replace(here, "https://127.0.0.1:1")}
                             for e in state.group_links]
        await kept.save_delta(conn.name, state, changed=(), gone=(), full=False)
        report = await run("r2")
        assert (report.outcome, report.mode, report.added, report.removed) == ("completed", "full", 0, 0)
        assert report.resynced is not None
        assert "https://127.0.0.1:1" in report.resynced
        # The full read stored links of this host: the next run is incremental again.
        again = await run("r3")
        assert (again.outcome, again.mode, again.resynced) == ("completed", "incremental", None)
        resyncs = [r for r in audit.records if r.action == "sync.resync"]
        assert len(resyncs) == 1
        assert "another Graph host" in str(resyncs[0].detail["reason"])


async def test_a_refused_client_secret_names_its_setting_and_never_the_secret(entra: EntraFixture,
                                                                               tls_files: TlsFiles) -> None:
    wrong = "not-the-secret-" + uuid.uuid4().hex
    credential = ClientSecretCredential(entra.tenant_id, BRIDGE_CLIENT_ID, wrong, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    gateway = GraphGateway(connection="demo", tenant_id=entra.tenant_id, credential=credential, graph_base=entra.url,
                           scope="https://graph.microsoft.com/.default", verify=tls_files.client_context())
    try:
        with pytest.raises(Configuration) as raised:
            await gateway.get("/organization")
    finally:
        await gateway.close()
    problem = json.dumps(raised.value.problem())
    assert "AADSTS7000215" in problem
    assert "auth.secretName" in problem
    assert wrong not in problem
