"""The composition root's per-connection scope: the gateway and every adapter and service bound to a
connection are built once, with the connection's cloud; route() resolves `{c}` to the connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import azure.functions as func
import pytest

from functions.http import ADMIN, Plain, Reply, route
from shared import bootstrap
from shared.bootstrap import Bridge
from shared.config import load_settings, settings
from shared.errors import NotFound
from tests.unit.test_config import TENANT, aliases

CONNECTIONS = [{"name": "contoso", "tenantId": TENANT},
               {"name": "local", "tenantId": TENANT, "cloud": "local"}]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in aliases():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONNECTIONS", json.dumps(CONNECTIONS))
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    settings.cache_clear()
    monkeypatch.setattr(bootstrap, "_bridge", None)
    yield
    settings.cache_clear()


@pytest.fixture
async def app() -> AsyncIterator[Bridge]:
    bridge = Bridge(load_settings())
    yield bridge
    await bridge.close()


async def test_a_scope_is_built_once_per_connection_and_shares_its_gateway(app: Bridge) -> None:
    scope = await app.scope("contoso")
    assert await app.scope(app.connection("contoso")) is scope
    assert scope.gateway is await app.graph(scope.conn)
    assert scope.tester is scope.tester
    assert scope.federation is scope.federation
    assert scope.password_directory is await app.password_directory(scope.conn)
    assert scope.passkey_directory is await app.passkey_directory(scope.conn)
    assert scope.export_directory is await app.export_directory(scope.conn)
    assert scope.subscriptions is await app.subscription_api(scope.conn)
    # A reader counts the resource units of one run: each run gets its own.
    assert scope.directory_reader() is not scope.directory_reader()
    assert (await app.scope("local")).gateway is not scope.gateway


async def test_each_connection_has_its_own_metadata_source_on_the_process_trust(app: Bridge) -> None:
    # Its own: only the local stand-ins may fetch metadata from private addresses (docs/federation.md).
    public, local = await app.scope("contoso"), await app.scope("local")
    assert public.metadata is public.metadata
    assert public.metadata is not local.metadata
    assert app.tls is app.tls


async def test_an_unknown_connection_names_the_setting(app: Bridge) -> None:
    with pytest.raises(NotFound) as raised:
        await app.scope("fabrikam")
    assert "CONNECTIONS" in raised.value.detail


bp = func.Blueprint()  # type: ignore[no-untyped-call]


@route(bp, "connections/{c}/probe", "GET", roles=[ADMIN])
async def probe(call: Plain) -> Reply:
    """Answers the resolved connection."""
    return Reply(200, {"name": call.connection.name, "cloud": call.connection.cloud.value})


def _probe() -> func.FunctionBuilder:
    host = func.FunctionApp()
    host.register_functions(bp)
    (found,) = [f for f in host.get_functions() if f.get_function_name() == "probe"]
    return found


async def test_route_resolves_the_connection_or_answers_404_naming_connections() -> None:
    function = _probe().get_user_function()

    async def get(name: str) -> tuple[int, dict[str, str]]:
        response = await function(func.HttpRequest("GET", f"http://127.0.0.1/api/connections/{name}/probe",
                                                   route_params={"c": name}, body=b""))
        return response.status_code, json.loads(response.get_body())

    assert await get("local") == (200, {"name": "local", "cloud": "local"})
    status, problem = await get("fabrikam")
    assert status == 404
    assert "CONNECTIONS" in problem["detail"]
