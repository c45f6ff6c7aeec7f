"""The HTTP API's OpenAPI 3.1 description, generated from the app itself, served at GET /api/openapi.json.

Which routes exist, their methods and auth levels come from the app's own binding metadata (every
HTTP function of function_app); bodies, answers and query strings from the pydantic models each route
declares (functions/http.py `route`, functions/answers.py); problem types from shared/errors.py. A
route without a description fails the generation. docs/openapi.json is its output, kept in step by
tests/unit/test_openapi.py; regenerate it with `make openapi`.

https://spec.openapis.org/oas/v3.1.0
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import azure.functions as func
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from functions.answers import OpenAnswer
from functions.http import ADMIN, AUDIT_READ, DEVICES, EXPORT, PROBLEM, ROUTES, Reply, RouteDoc, route
from shared import __version__
from shared.config import Settings
from shared.errors import ALL_ERRORS, PROBLEM_TYPE_PREFIX

bp = func.Blueprint()  # type: ignore[no-untyped-call]

OPENAPI = "3.1.0"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{\*?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\??\}")
ROLE_TEXT = {
    ADMIN: "operate the bridge: connections, sync, users, rotation, federation, devices",
    DEVICES: "a provider back end: register devices and their passkeys",
    AUDIT_READ: "read and verify the audit log",
    EXPORT: "the SCIM 2.0 service: push users and groups to export to Entra",
}
#: The local host's own problem types (unknown route, missing function key, ...): `host-` and the status.
HOST_PROBLEM = f"^{re.escape(PROBLEM_TYPE_PREFIX)}host-[0-9]{{3}}$"


class OpenApiDocument(OpenAnswer):
    """This API's OpenAPI 3.1 description."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class Problem(OpenAnswer):
    """An RFC 9457 problem (https://www.rfc-editor.org/rfc/rfc9457); members beyond these name the fix."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    correlationId: str | None = None
    requestId: str | None = None
    field: str | None = None
    errors: list[dict[str, Any]] | None = None
    retryAfterSeconds: float | None = None
    requiredRoles: list[str] | None = None
    missingPermission: str | None = None
    missingRole: str | None = None
    setting: str | None = None


def _route_prefix() -> str:
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text(encoding="utf-8"))
    return "/" + str(host.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")


def _http_functions(app: func.FunctionApp) -> list[tuple[str, str, list[str]]]:
    """(function name, route template, methods) of every HTTP trigger, from the app's function.json."""
    found = []
    for function in app.get_functions():
        spec = json.loads(function.get_function_json())
        trigger = next((b for b in spec.get("bindings", []) if b.get("type") == "httpTrigger"), None)
        if trigger is not None:
            name = str(function.get_function_name())
            found.append((name, str(trigger.get("route") or name),
                          [str(m).upper() for m in trigger.get("methods") or ["GET", "POST"]]))
    return found


def _undescribed(name: str, template: str, methods: list[str]) -> RouteDoc:
    """A function registered without `route` or `describe`: listed, its answers unknown."""
    return RouteDoc(name=name, path=template, method=methods[0], roles=(), anonymous=False, answers={},
                    doc="(not described: register it with functions.http.route or describe)")


def undescribed(app: func.FunctionApp) -> list[str]:
    """HTTP functions of `app` whose answers the description cannot give (tests require none)."""
    return sorted(name for name, _, _ in _http_functions(app) if not (ROUTES.get(name) and ROUTES[name].answers))


def _problem_schema() -> dict[str, Any]:
    types = [{"const": PROBLEM_TYPE_PREFIX + err.slug, "title": err.title,
              "description": f"HTTP {err.status}. {(err.__doc__ or '').strip()}"} for err in ALL_ERRORS]
    types.append({"type": "string", "pattern": HOST_PROBLEM,
                  "description": "Answered by the Functions host itself (no route, no function key, body over "
                                 "the host's limit), with the status in the name"})
    return {"anyOf": types}


def _schemas(models: list[tuple[type[BaseModel], JsonSchemaMode]]) -> tuple[dict[Any, Any], dict[str, Any]]:
    refs, top = models_json_schema(models, by_alias=True, ref_template=REF)
    return dict(refs), dict(top.get("$defs", {}))


def _body_limit() -> int:
    return int(Settings.model_fields["max_body_bytes"].default)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _security(doc: RouteDoc) -> list[dict[str, list[str]]]:
    if doc.anonymous:
        # Device delivery authenticates a request signed by the device's key; health and this document nobody.
        return [{"deviceToken": []}] if "deviceId" in doc.path and doc.method == "GET" else []
    return [{key: [], "appRoles": [role]} for key in ("functionKey", "functionKeyQuery")
            for role in doc.roles] or [{"functionKey": []}, {"functionKeyQuery": []}]


def _parameters(template: str, doc: RouteDoc, query_schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [{"name": name, "in": "path", "required": True,
                                     "schema": {"type": "string", "minLength": 1}}
                                    for name in _PARAM.findall(template)]
    required = set(query_schema.get("required", []))
    for name, schema in query_schema.get("properties", {}).items():
        described = _not_null(schema)
        description = described.pop("description", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": described}
        if description:
            param["description"] = description
        params.append(param)
    if not doc.anonymous or doc.roles:
        params.append({"name": "x-correlation-id", "in": "header", "required": False,
                       "description": "echoed back when it is 1 to 128 of A-Z a-z 0-9 . _ : - (else one is made)",
                       "schema": {"type": "string"}})
    return params


def _not_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without pydantic's `None` branch: absent is how a query says none."""
    described = {k: v for k, v in schema.items() if k not in ("title", "default") or v is not None}
    described.pop("title", None)
    options = [o for o in described.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        described.update(options[0])
    elif options:
        described["anyOf"] = options
    return described


def _own_errors(doc: RouteDoc, refs: Mapping[Any, Any], problem: Mapping[str, Any]) -> dict[str, Any]:
    """The refusals of a route with its own error format; the host's own (no function key, body over the
    host's limit) stay problem+json."""
    assert doc.errors is not None
    model = doc.errors.model
    return {"description": f"{_first_line(model.__doc__ or '')} The Functions host's own refusals (no function "
                           "key, a body over its limit) are RFC 9457 problems.",
            "content": {doc.errors.media: {"schema": refs[(model, "serialization")]}, **problem["content"]}}


def _describe_roles(doc: RouteDoc) -> str:
    if doc.anonymous:
        return "No function key."
    roles = " or ".join(doc.roles)
    text = "Function key (`x-functions-key` header or `code` query)."
    if roles:
        text += f" With App Service Authentication on, an Entra token whose app roles include {roles}."
    return text


def build(app: func.FunctionApp) -> dict[str, Any]:
    """The OpenAPI document of every HTTP function of `app`."""
    functions = _http_functions(app)
    docs = [(template, methods, ROUTES.get(name) or _undescribed(name, template, methods))
            for name, template, methods in functions]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for _, _, doc in docs:
        models += [(m, "serialization") for m in doc.answers.values()
                   if m is not None and m is not str and issubclass(m, BaseModel)]
        models += [(doc.body, "validation")] if doc.body is not None else []
        models += [(doc.errors.model, "serialization")] if doc.errors is not None else []
    refs, components = _schemas(list(dict.fromkeys(models)))
    components["Problem"]["properties"]["type"] = _problem_schema()
    problem = {"description": "RFC 9457 problem: `type` names the error, `detail` the cause and the fix, "
                              "`field` the request member at fault",
               "content": {PROBLEM: {"schema": {"$ref": REF.format(model="Problem")}}}}
    correlation = {"x-correlation-id": {"description": "the request's correlation id, as in the logs",
                                        "schema": {"type": "string"}}}
    paths: dict[str, dict[str, Any]] = {}
    for template, methods, doc in sorted(docs, key=lambda d: (d[0], d[2].name)):
        path = "/" + _PARAM.sub(r"{\1}", template.strip("/"))
        query_schema: dict[str, Any] = {}
        if doc.query is not None:
            query_schema = doc.query.model_json_schema(by_alias=True, ref_template=REF)
            components.update(query_schema.pop("$defs", {}))
        responses: dict[str, Any] = {}
        if not doc.answers:
            responses["2XX"] = {"description": "not described yet", "content": {"application/json": {"schema": {}}}}
        for status, model in sorted(doc.answers.items()):
            text_answer = model is str
            answer: dict[str, Any] = {"description": "Text" if text_answer else
                                      _first_line(model.__doc__ or "") if model else "No content"}
            headers = {**correlation, **{name: {"description": text, "schema": {"type": "string"}}
                                         for name, text in doc.headers.items()}}
            answer["headers"] = headers
            if text_answer:
                answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
            elif model is not None and issubclass(model, BaseModel):
                answer["content"] = {doc.media: {"schema": refs[(model, "serialization")]}}
            responses[str(status)] = answer
        responses["4XX"] = responses["5XX"] = problem if doc.errors is None else _own_errors(doc, refs, problem)
        summary, _, rest = doc.doc.strip().partition("\n")
        operation: dict[str, Any] = {
            "operationId": doc.name, "summary": summary.strip(),
            "description": " ".join(part for part in (" ".join(rest.split()), _describe_roles(doc)) if part),
            "security": _security(doc), "parameters": _parameters(template, doc, query_schema),
            "responses": responses}
        if doc.body is not None:
            body_schema = {"schema": refs[(doc.body, "validation")]}
            operation["requestBody"] = {
                "required": doc.body_required, "description": f"JSON of at most {_body_limit()} bytes by default "
                "(the MAX_BODY_BYTES setting; 413 above); unknown members are refused",
                "content": {media: body_schema for media in dict.fromkeys((doc.media, "application/json"))}}
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": OPENAPI,
        "info": {"title": "Entra ID credential bridge", "version": __version__,
                 "description": "The bridge's HTTP API. Errors are RFC 9457 problem+json "
                                "(`application/problem+json`) whose `type` is one of the Problem schema's; the SCIM "
                                "service's (/scim/v2) are SCIM errors (`application/scim+json`, RFC 7644).",
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "servers": [{"url": _route_prefix()}],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": {
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                            "description": "A function key or the host key of the function app"},
            "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code",
                                 "description": "The same key as the `code` query parameter"},
            "appRoles": {"type": "oauth2", "description": (
                "App Service Authentication with Entra ID, when it is on: a token for the bridge's app "
                "registration (client credentials, scope `api://<bridge app id>/.default`, token URL of the "
                "tenant) whose `roles` claim holds one of the route's app roles. "
                "https://learn.microsoft.com/azure/app-service/overview-authentication-authorization"),
                "flows": {"clientCredentials": {
                    "tokenUrl": "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
                    "scopes": ROLE_TEXT}}},
            "deviceToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": "A single-use ES256 JWT signed by the device's registered key, "
                                           "`aud` the request URL, `sub` the device id"},
        }},
    }


def bridge_app() -> func.FunctionApp:
    """A FunctionApp with the blueprints function_app registers (the host's own app may not list its
    functions a second time)."""
    module = importlib.import_module("function_app")
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for blueprint in module._blueprints():
        app.register_functions(blueprint)
    return app


@functools.cache
def document() -> dict[str, Any]:
    """The description of the app the host runs (function_app), made once per process."""
    return build(bridge_app())


def render(doc: Mapping[str, Any]) -> str:
    """The checked-in form: two-space indents, a final newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@route(bp, "openapi.json", "GET", roles=(), auth_level=func.AuthLevel.ANONYMOUS, answers={200: OpenApiDocument})
async def openapi_document(call: Any) -> Reply:
    """This API's OpenAPI 3.1 description."""
    return Reply(200, document())


if __name__ == "__main__":
    sys.stdout.write(render(document()))
