"""The HTTP layer: strict bodies, problem+json, correlation ids, App Service Authentication roles."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from pydantic import BaseModel, ConfigDict

from functions.http import ADMIN, Call, Reply, route
from shared.config import settings
from shared.errors import NotFound

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int


@route(bp, "things/{id}", "PUT", body=Thing, roles=[ADMIN])
async def put_thing(call: Call[Thing]) -> Reply:
    assert call.body is not None
    if call.params["id"] == "missing":
        raise NotFound("thing missing does not exist")
    if call.params["id"] == "boom":
        raise RuntimeError("internal detail with password=hunter22")
    return Reply(201, {"id": call.params["id"], "name": call.body.name, "actor": call.actor})


def _functions() -> dict[str, Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]]:
    app = func.FunctionApp()
    app.register_functions(bp)
    return {f.get_function_name(): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    settings.cache_clear()
    yield
    settings.cache_clear()


def request(thing: str, body: Any, headers: dict[str, str] | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest("PUT", f"http://127.0.0.1/api/things/{thing}", headers={
        "content-type": "application/json", **(headers or {})}, route_params={"id": thing}, body=raw)


async def call(req: func.HttpRequest) -> tuple[int, dict[str, Any], func.HttpResponse]:
    response = await FUNCTIONS["put_thing"](req)
    body = json.loads(response.get_body()) if response.get_body() else {}
    return response.status_code, body, response


def principal(*roles: str) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": "ops@contoso.example"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name",
                                        "role_typ": "roles"}).encode()).decode()


async def test_a_good_request_gets_the_reply_and_its_correlation_id_back() -> None:
    status, body, response = await call(request("t1", {"name": "a", "size": 2}, {"x-correlation-id": "abc-123"}))
    assert (status, body["id"], body["actor"]) == (201, "t1", "function-key")
    assert response.headers["x-correlation-id"] == "abc-123"


@pytest.mark.parametrize(("payload", "field"), [
    ({"name": "a", "size": 2, "extra": 1}, "extra"),
    ({"name": "a", "size": "2"}, "size"),
    ({"name": "a"}, "size"),
    (b"{not json", "body"),
])
async def test_bad_bodies_are_400_problems_naming_the_field(payload: Any, field: str) -> None:
    status, body, response = await call(request("t1", payload))
    assert status == 400
    assert response.mimetype == "application/problem+json"
    assert body["type"] == "urn:entra-bridge:problem:invalid-input"
    assert field in body["field"]
    assert body["correlationId"]


async def test_a_large_body_is_413() -> None:
    status, body, _ = await call(request("t1", {"name": "x" * 5000, "size": 1}))
    assert (status, body["status"]) == (413, 413)


async def test_errors_map_to_their_status_and_internals_stay_inside() -> None:
    status, body, _ = await call(request("missing", {"name": "a", "size": 1}))
    assert (status, body["title"]) == (404, "Not found")
    status, body, _ = await call(request("boom", {"name": "a", "size": 1}))
    assert status == 500
    assert "hunter22" not in json.dumps(body)
    assert "internal detail" not in json.dumps(body)


async def test_roles_are_checked_when_app_service_authentication_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    settings.cache_clear()
    status, _, _ = await call(request("t1", {"name": "a", "size": 1}))
    assert status == 401
    status, body, _ = await call(request("t1", {"name": "a", "size": 1},
                                         {"x-ms-client-principal": principal("Bridge.Devices")}))
    assert (status, body["requiredRoles"]) == (403, [ADMIN])
    status, body, _ = await call(request("t1", {"name": "a", "size": 1},
                                         {"x-ms-client-principal": principal(ADMIN)}))
    assert (status, body["actor"]) == (201, "ops@contoso.example")


async def test_correlation_comes_from_traceparent_or_is_made() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    _, _, response = await call(request("t1", {"name": "a", "size": 1}, parent))
    assert response.headers["x-correlation-id"] == trace
    _, _, response = await call(request("t1", {"name": "a", "size": 1}, {"x-correlation-id": "bad id\nwith newline"}))
    made = response.headers["x-correlation-id"]
    assert len(made) == 36
    assert "newline" not in made


async def test_a_problem_has_every_rfc_9457_member() -> None:
    status, body, response = await call(request("missing", {"name": "a", "size": 1}, {"x-correlation-id": "c-1"}))
    assert status == 404
    assert set(body) >= {"type", "title", "status", "detail", "instance", "correlationId"}
    assert body["instance"] == "http://127.0.0.1/api/things/missing"
    assert body["correlationId"] == response.headers["x-correlation-id"] == "c-1"


@pytest.mark.parametrize(("body", "headers", "field"), [
    (b"", {}, "body"),
    (b'{"name": "a", "size": 1}', {"content-type": "text/plain"}, "Content-Type"),
])
async def test_missing_bodies_and_wrong_content_types_are_named(body: bytes, headers: dict[str, str],
                                                               field: str) -> None:
    status, problem, _ = await call(request("t1", body, headers))
    assert (status, problem["field"]) == (400, field)


async def test_roles_may_use_the_role_claim_uri_and_are_not_needed_when_auth_is_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    uri = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    encoded = base64.b64encode(json.dumps({"claims": [{"typ": uri, "val": ADMIN}]}).encode()).decode()
    status, _, _ = await call(request("t1", {"name": "a", "size": 1}))
    assert status == 201
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    settings.cache_clear()
    status, _, _ = await call(request("t1", {"name": "a", "size": 1}, {"x-ms-client-principal": encoded}))
    assert status == 201
    status, body, _ = await call(request("t1", {"name": "a", "size": 1}, {"x-ms-client-principal": "%%%"}))
    assert (status, body["status"]) == (401, 401)
