"""The API description: generated from the app, valid OpenAPI 3.1, and the checked-in copy in step."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from functions import openapi
from functions.answers import Health, UsersQuery
from functions.http import Plain, Reply, route
from shared.errors import ALL_ERRORS
from tests.contract import SPEC


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.build(openapi.bridge_app())


def test_checked_in_description_is_the_generated_one(doc: dict[str, Any]) -> None:
    assert SPEC.read_text(encoding="utf-8") == openapi.render(doc), (
        "docs/openapi.json is out of date: run `make openapi` and commit it")


def test_it_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    errors = [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(json.loads(json.dumps(doc)))]
    assert errors == []


def test_every_http_function_is_an_operation(doc: dict[str, Any]) -> None:
    http = openapi._http_functions(openapi.bridge_app())
    operations = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert operations == {name for name, _, _ in http}
    assert {"health", "openapi_document", "put_device", "device_password"} <= operations


def test_every_http_function_declares_its_answers() -> None:
    assert openapi.undescribed(openapi.bridge_app()) == [], (
        "declare answers= in functions.http.route (models in functions/answers.py), then run `make openapi`")


def _bare_app() -> func.FunctionApp:
    app = func.FunctionApp()
    app.route(route="bare", methods=["GET"])(_bare)
    return app


def test_a_function_without_description_is_listed_and_named() -> None:
    assert openapi.undescribed(_bare_app()) == ["_bare"]
    operation = openapi.build(_bare_app())["paths"]["/bare"]["get"]
    assert operation["operationId"] == "_bare"
    assert "not described" in operation["summary"]


async def _bare(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("")


def test_security_problem_types_and_roles(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["functionKey"] == {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                      "description": schemes["functionKey"]["description"]}
    assert schemes["functionKeyQuery"]["in"] == "query"
    assert schemes["functionKeyQuery"]["name"] == "code"
    assert set(schemes["appRoles"]["flows"]["clientCredentials"]["scopes"]) == {
        "Bridge.Admin", "Bridge.Devices", "Bridge.Audit.Read", "Bridge.Export"}
    types = {t.get("const") for t in doc["components"]["schemas"]["Problem"]["properties"]["type"]["anyOf"]}
    assert {f"urn:entra-bridge:problem:{e.slug}" for e in ALL_ERRORS} <= types
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    audit = doc["paths"]["/audit"]["get"]["security"]
    assert {"functionKey": [], "appRoles": ["Bridge.Audit.Read"]} in audit
    put = doc["paths"]["/connections/{c}/devices/{deviceId}"]["put"]
    assert {"functionKeyQuery": [], "appRoles": ["Bridge.Devices"]} in put["security"]
    assert put["requestBody"]["required"] is True
    assert put["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Device"}
    assert "application/problem+json" in put["responses"]["4XX"]["content"]
    password = doc["paths"]["/delivery/connections/{c}/devices/{deviceId}/password"]["get"]
    assert password["security"] == [{"deviceToken": []}]
    assert "Cache-Control" in password["responses"]["200"]["headers"]


def test_query_parameters_come_from_the_query_model(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/connections/{c}/users"]["get"]["parameters"]}
    assert set(UsersQuery.model_json_schema(by_alias=True)["properties"]) < set(params)
    assert params["inRotationGroup"]["schema"] == {"type": "boolean"}
    assert params["top"]["schema"] == {"minimum": 1, "type": "integer"}
    assert params["c"]["in"] == "path"
    assert params["c"]["required"] is True
    audit = {p["name"]: p for p in doc["paths"]["/audit"]["get"]["parameters"]}
    assert audit["connection"]["required"] is True
    assert audit["from"]["schema"]["format"] == "date"


def _request(query: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(method="GET", url="http://localhost/api/q", headers={}, params=query, body=b"")


async def test_a_query_model_refuses_with_the_parameter_named() -> None:
    bp = func.Blueprint()  # type: ignore[no-untyped-call]
    seen: list[Plain] = []

    @route(bp, "q", "GET", roles=(), query=UsersQuery, answers={200: Health})
    async def q(call: Plain) -> Reply:
        seen.append(call)
        return Reply(200, {"status": "ok", "version": "x"})

    app = func.FunctionApp()
    app.register_functions(bp)
    endpoint = next(f.get_user_function() for f in app.get_functions() if f.get_function_name() == "q")
    refused = await endpoint(_request({"top": "0", "code": "key"}))
    body = json.loads(refused.get_body())
    assert refused.status_code == 400
    assert body["field"] == "top"
    assert refused.mimetype == "application/problem+json"
    bad_bool = json.loads((await endpoint(_request({"inRotationGroup": "yes"}))).get_body())
    assert bad_bool["field"] == "inRotationGroup"
    assert "true or false" in bad_bool["detail"]
    ok = await endpoint(_request({"top": "5", "inRotationGroup": "TRUE", "code": "key"}))
    assert ok.status_code == 200
    assert seen[-1].query["inRotationGroup"] == "TRUE"


def test_scim_operations_answer_scim_json_and_scim_errors(doc: dict[str, Any]) -> None:
    ref = "#/components/schemas/{}".format
    create = doc["paths"]["/scim/v2/{c}/Users"]["post"]
    assert create["responses"]["201"]["content"] == {"application/scim+json": {"schema": {"$ref": ref("ScimUser")}}}
    assert {"ETag", "Location"} <= set(create["responses"]["201"]["headers"])
    assert create["requestBody"]["content"]["application/scim+json"]["schema"] == {"$ref": ref("ScimUserBody")}
    assert {"functionKey": [], "appRoles": ["Bridge.Export"]} in create["security"]
    for status in ("4XX", "5XX"):
        errors = create["responses"][status]["content"]
        assert errors["application/scim+json"]["schema"] == {"$ref": ref("ScimErrorBody")}
    # SCIM resources are open: extension attributes are the schemas' to refuse, not the description's.
    assert doc["components"]["schemas"]["ScimUserBody"]["additionalProperties"] is True
    assert doc["components"]["schemas"]["ScimUser"]["additionalProperties"] is True
    listing = doc["paths"]["/scim/v2/{c}/Groups"]["get"]
    assert {"filter", "startIndex", "count"} <= {p["name"] for p in listing["parameters"]}
    assert listing["responses"]["200"]["content"]["application/scim+json"]["schema"] == {"$ref": ref("ScimGroupList")}
    delete = doc["paths"]["/scim/v2/{c}/Users/{id}"]["delete"]
    assert "content" not in delete["responses"]["204"]
    patch = doc["paths"]["/scim/v2/{c}/Groups/{id}"]["patch"]
    assert patch["requestBody"]["content"]["application/scim+json"]["schema"] == {"$ref": ref("ScimPatchOp")}
    bulk = doc["paths"]["/scim/v2/{c}/Bulk"]["post"]
    assert bulk["responses"]["200"]["content"]["application/scim+json"]["schema"] == {"$ref": ref("ScimBulkResponse")}
    # Everything else keeps problem+json.
    assert "application/scim+json" not in doc["paths"]["/audit"]["get"]["responses"]["4XX"]["content"]
