"""The SCIM routes as the host calls them: one function per method and resource type, the app role
Bridge.Export (and no other) with App Service Authentication on, SCIM error bodies, and a SCIM service
that is off unless the connection's export is on."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from functions import scim as scim_functions
from shared import bootstrap
from shared.config import settings

CONNECTIONS = [{"name": "off", "tenantId": "11111111-2222-3333-4444-555555555555"}]


def _functions() -> dict[str, Any]:
    app = func.FunctionApp()
    app.register_functions(scim_functions.bp)
    return {f.get_function_name(): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@pytest.fixture(autouse=True)
def auth_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    monkeypatch.setenv("CONNECTIONS", json.dumps(CONNECTIONS))
    settings.cache_clear()
    monkeypatch.setattr(bootstrap, "_bridge", None)
    yield
    settings.cache_clear()


def _principal(*roles: str) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles]
    return base64.b64encode(json.dumps({"claims": claims, "role_typ": "roles"}).encode()).decode()


async def _get(name: str, roles: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
    req = func.HttpRequest("GET", "http://127.0.0.1/api/scim/v2/off/Users", headers={
        "x-ms-client-principal": _principal(*roles)}, route_params={"c": "off"}, body=b"")
    response = await FUNCTIONS[name](req)
    assert response.mimetype == "application/scim+json"
    return response.status_code, json.loads(response.get_body())


def test_each_method_and_resource_type_is_its_own_function() -> None:
    names = set(FUNCTIONS)
    for verb in ("scim_create", "scim_list", "scim_get", "scim_replace", "scim_patch", "scim_delete"):
        assert {f"{verb}_users", f"{verb}_groups"} <= names
    assert {"scim_service_provider_config", "scim_resource_types", "scim_schemas", "scim_bulk",
            "export_work"} <= names


async def test_only_the_export_role_opens_the_scim_service() -> None:
    status, body = await _get("scim_list_users", ("Bridge.Admin", "Bridge.Devices", "Bridge.Audit.Read"))
    assert status == 403
    assert "Bridge.Export" in body["detail"]
    # Refused by the HTTP layer, still a SCIM error (RFC 7644 section 3.12).
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert body["status"] == "403"
    # With the role, the request reaches the service: this connection's export is off, said as a SCIM error.
    status, body = await _get("scim_list_users", ("Bridge.Export",))
    assert status == 404
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert "features.export.enabled" in body["detail"]
