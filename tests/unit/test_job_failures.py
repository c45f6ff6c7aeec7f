"""Failures on paths no caller waits for: token errors in the taxonomy, job problems kept for status,
queue messages retried only when that may help, delta links of another Graph host read in full."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from functions import devices as devices_functions
from functions import sync as sync_functions
from functions import work
from shared.adapters.devices import TableDeviceOperations
from shared.adapters.graph.gateway import request_builders
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.identity import get_token, token_error
from shared.adapters.leases import TableLeases
from shared.adapters.problems import TableJobProblems
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.errors import BridgeError, Configuration, Gone, Stop, Transient, root_cause, translated
from shared.messages import WorkMessage
from shared.services.devices import DeviceService
from shared.services.directory import Directory
from shared.services.problems import JobProblems, lines
from shared.services.sync import SyncService
from shared.services.sync_jobs import SyncJobs
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories

GOV = "https://graph.microsoft.us/.default"
TENANT = "00000000-0000-0000-0000-000000000001"


def _app_with(*blueprints: Any) -> list[Any]:
    app = func.FunctionApp()
    for bp in blueprints:
        app.register_functions(bp)
    return list(app.get_functions())


@pytest.mark.parametrize(("answer", "names"), [
    ("AADSTS500011: The resource principal named https://graph.microsoft.us was not found in the tenant named "
     "Contoso.", ["`cloud`", "https://graph.microsoft.us", "AADSTS500011"]),
    ("AADSTS90002: Tenant '0000' not found.", ["`tenantId`", "`cloud`"]),
    ("AADSTS7000215: Invalid client secret provided.", ["auth.secretName"]),
    # The local simulator's managed identity endpoint names no AADSTS code.
    ("ManagedIdentityCredential authentication unavailable. Resource 'https://graph.microsoft.us' is not known.",
     ["`cloud`", "audience https://graph.microsoft.us"]),
])
def test_a_refused_token_names_the_setting_to_fix(answer: str, names: list[str]) -> None:
    err = token_error(ClientAuthenticationError(message=answer), connection="gov", scope=GOV)
    assert isinstance(err, Configuration)
    assert err.setting == "CONNECTIONS"
    assert "connection 'gov' cannot get a token" in err.detail
    for name in names:
        assert name in err.detail


def test_an_unreachable_authority_is_transient_and_names_the_cloud() -> None:
    err = token_error(ServiceRequestError("Name or service not known"), connection="gov", scope=GOV)
    assert isinstance(err, Transient)
    assert "`cloud`" in err.detail


class RefusingCredential:
    """A credential whose every token request fails as azure-identity fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise self.error

    async def close(self) -> None:
        return None


async def test_get_token_translates_and_drops_the_sdk_chain() -> None:
    credential = RefusingCredential(ClientAuthenticationError(message="AADSTS500011: The resource principal named "
                                                                      "https://graph.microsoft.us was not found."))
    with pytest.raises(Configuration) as raised:
        await get_token(credential, GOV, connection="gov")  # type: ignore[arg-type]
    assert raised.value.__cause__ is None


# ------------------------------------------------------------------ delta links of another host


class LinkGraph:
    """The GraphApi port with one delta page, recording what was requested."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.requests = request_builders(base)
        self.paths: list[str] = []

    async def pages(self, path: Any, *, params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None, api: str = "v1.0") -> AsyncIterator[dict[str, Any]]:
        self.paths.append(path)
        yield {"value": [], "@odata.deltaLink": f"{self.base}/v1.0/users/delta?$deltatoken=next"}


@pytest.mark.parametrize("kind", ["users", "groups"])
async def test_a_delta_link_of_another_host_is_gone_before_any_request(kind: str) -> None:
    graph = LinkGraph("https://127.0.0.1:9443")
    reader = GraphDirectoryReader(graph)  # type: ignore[arg-type]
    stale = "https://127.0.0.1:8443/v1.0/users/delta?$deltatoken=abc"
    read = reader.users_delta(stale) if kind == "users" else reader.groups_delta(link=stale)
    with pytest.raises(Gone, match=re.escape("127.0.0.1:8443")):
        await read
    assert graph.paths == []
    same = await reader.users_delta("https://127.0.0.1:9443/v1.0/users/delta?$deltatoken=abc")
    assert same.link.endswith("$deltatoken=next")


# ------------------------------------------------------------------ job problems and retries


@pytest.fixture
def problems(monkeypatch: pytest.MonkeyPatch) -> JobProblems:
    kept = JobProblems(TableJobProblems(FakeEntityStore()), FakeClock())
    monkeypatch.setattr(work, "bridge", lambda: SimpleNamespace(problems=kept))
    return kept


async def test_a_timer_job_keeps_its_problem_until_it_succeeds(problems: JobProblems) -> None:
    async with work.job("federation_monitor", "demo", "c1"):
        raise Configuration("connection 'demo' cannot get a token - check `cloud`", setting="CONNECTIONS")
    found = await problems.all("demo")
    assert [p["job"] for p in found] == ["federation_monitor"]
    assert found[0]["correlationId"] == "c1"
    assert lines(found) == ["federation_monitor: connection 'demo' cannot get a token - check `cloud` "
                            "(setting CONNECTIONS)"]
    async with work.job("federation_monitor", "demo", "c2"):
        pass
    assert await problems.all("demo") == []


async def test_a_root_cause_is_kept_not_its_wrapper(problems: JobProblems) -> None:
    async with work.job("rotation_timer", "demo", "c1"):
        try:
            raise Configuration("KEY_VAULT_URL is not set", setting="KEY_VAULT_URL")
        except Configuration as err:
            raise Stop("stopped") from err
    (found,) = await problems.all("demo")
    assert found["problem"]["type"] == "urn:entra-bridge:problem:configuration"
    assert found["problem"]["setting"] == "KEY_VAULT_URL"


async def test_a_queue_message_is_retried_only_when_that_may_help(problems: JobProblems) -> None:
    with pytest.raises(Transient):
        async with work.job("rotation_work", "demo", "c1", queue=True):
            raise Transient("storage could not be reached")
    # Not retryable: settled (kept in status), so the host does not deliver it four more times.
    async with work.job("rotation_work", "demo", "c2", queue=True):
        raise Configuration("no token", setting="CONNECTIONS")
    assert [p["correlationId"] for p in await problems.all("demo")] == ["c2"]


async def test_an_unexpected_exception_becomes_the_taxonomy_without_its_text(problems: JobProblems) -> None:
    async with work.job("sync_timer", "demo", "c1"):
        raise KeyError("password=hunter2")
    (found,) = await problems.all("demo")
    assert found["problem"]["type"] == "urn:entra-bridge:problem:error"
    assert "KeyError" in found["problem"]["detail"]
    assert "hunter2" not in str(found)
    with pytest.raises(Transient):
        async with work.job("sync_work", "demo", "c2", queue=True, record=False):
            raise ConnectionResetError("reset")


def test_translated_keeps_taxonomy_errors() -> None:
    err = Configuration("x", setting="S")
    assert translated(err) is err
    assert type(translated(ValueError("v"))) is BridgeError


# ------------------------------------------------------------------ a device removal that cannot finish


DEVICE_FUNCTIONS = {str(f.get_function_name()): f.get_user_function() for f in _app_with(devices_functions.bp)}


@pytest.mark.parametrize(("error", "dequeue_count", "status", "raised"), [
    (Configuration("connection 'demo' cannot get a token", setting="CONNECTIONS"), 1, "failed", False),
    (Transient("Graph did not answer"), 1, "running", True),
    (Transient("Graph did not answer"), work.MAX_DEQUEUE_COUNT, "failed", True),
])
async def test_a_device_removal_that_fails_shows_on_its_operation(
        monkeypatch: pytest.MonkeyPatch, error: BridgeError, dequeue_count: int, status: str, raised: bool) -> None:
    entities = FakeEntityStore()
    devices = DeviceService(directory=Directory(TableUsers(entities)), **device_repositories(entities),
                            audit=FakeAuditSink(), queue=FakeWorkQueue(), clock=FakeClock())
    kept = JobProblems(TableJobProblems(entities), FakeClock())
    await TableDeviceOperations(entities).start("demo", "op1", {"status": "queued"})

    async def no_directory(conn: Connection) -> Any:
        raise error

    app = SimpleNamespace(connection=lambda name: Connection.model_validate({"name": name, "tenantId": TENANT}),
                          passkey_directory=no_directory, devices=devices, problems=kept)
    monkeypatch.setattr(devices_functions, "bridge", lambda: app)
    monkeypatch.setattr(work, "bridge", lambda: app)
    message = WorkMessage(connection="demo", kind="device-removal", target="dev1", idempotency_key="op1",
                          correlation_id="c1")
    queued = func.QueueMessage(id="m1", body=message.to_json().encode())
    monkeypatch.setattr(type(queued), "dequeue_count", property(lambda self: dequeue_count))
    if raised:
        with pytest.raises(type(error)):
            await DEVICE_FUNCTIONS["device_work"](queued)
    else:
        await DEVICE_FUNCTIONS["device_work"](queued)
    operation = await devices.operation("demo", "op1")
    assert operation["status"] == status
    if status == "failed":
        assert operation["problem"]["type"] == root_cause(error).type_uri
    assert [p["job"] for p in await kept.all("demo")] == ["device_work"]


SYNC_FUNCTIONS = {str(f.get_function_name()): f.get_user_function() for f in _app_with(sync_functions.bp)}


async def test_a_sync_whose_graph_client_cannot_be_built_is_a_failed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    entities = FakeEntityStore()
    audit = FakeAuditSink()
    clock = FakeClock()
    sync = SyncService(directory=Directory(TableUsers(entities)), state=TableSyncState(entities),
                       leases=TableLeases(entities, clock), audit=audit, queue=FakeWorkQueue(), clock=clock)
    conn = Connection.model_validate({"name": "demo", "tenantId": TENANT, "auth": {
        "kind": "clientSecret", "clientId": TENANT, "secretName": "bridge-secret"},
        "features": {"sync": {"enabled": True, "groups": ["Sync"]}}})

    async def no_reader(conn: Connection) -> Any:
        raise Configuration("connection 'demo' keeps its credential in Key Vault (auth.secretName) but KEY_VAULT_URL "
                            "is not set", setting="KEY_VAULT_URL")

    def unused() -> Any:
        raise AssertionError("not needed by a run that cannot start")

    async def no_passkeys(conn: Connection) -> Any:
        raise AssertionError("a failed run reconciles no passkeys")

    jobs = SyncJobs(sync=sync, notifications=unused, passkeys=unused, reader=no_reader, passkey_directory=no_passkeys)
    app = SimpleNamespace(connection=lambda name: conn, sync_jobs=jobs,
                          problems=JobProblems(TableJobProblems(entities), FakeClock()))
    monkeypatch.setattr(sync_functions, "bridge", lambda: app)
    monkeypatch.setattr(work, "bridge", lambda: app)
    message = WorkMessage(connection="demo", kind="sync", target="demo", idempotency_key="sync-1", correlation_id="c1")
    await SYNC_FUNCTIONS["sync_work"](func.QueueMessage(id="m1", body=message.to_json().encode()))
    status = await sync.status("demo")
    assert status.last_run is not None
    assert (status.last_run["runId"], status.last_run["outcome"]) == ("sync-1", "failed")
    assert status.problems()[0].endswith("(setting KEY_VAULT_URL)")
    assert status.running is None
    assert "sync.failed" in audit.actions()
