"""What Graph takes that a strict reading of its pages would not, and the error format on every error.

Graph reads URL segments ignoring case, takes type casts in the short form the SDKs send, takes
batch item urls with or without the leading slash, and puts `innerError` (date, request-id,
client-request-id) in every error: https://learn.microsoft.com/graph/errors and
https://learn.microsoft.com/graph/json-batching.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conformance.entra.test_documented_examples import is_graph_error

POLICY = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/"


def group_id(graph: httpx.Client, name: str = "Bridge Sync") -> str:
    return str(graph.get("/groups", params={"$filter": f"displayName eq '{name}'"}).json()["value"][0]["id"])


def test_url_segments_are_read_ignoring_case(graph: httpx.Client) -> None:
    spellings = ["fido2", "Fido2", "FIDO2"]
    answers = [graph.get(POLICY + s) for s in spellings]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["id"] for a in answers} == {"Fido2"}
    group = group_id(graph)
    assert graph.get(f"/Groups/{group}/TransitiveMembers/Microsoft.Graph.User").status_code == 200
    # Values keep their case: an unknown id is still a 404 of that id, not a different object.
    is_graph_error(graph.get("/USERS/00000000-0000-0000-0000-00000000000A"), 404, "Request_ResourceNotFound")


def test_type_casts_in_the_short_form_msgraph_sdk_sends(graph: httpx.Client) -> None:
    group = group_id(graph)
    long_form = graph.get(f"/groups/{group}/transitiveMembers/microsoft.graph.user", params={"$top": "999"})
    short_form = graph.get(f"/groups/{group}/transitiveMembers/graph.user", params={"$top": "999"})
    assert short_form.status_code == 200, short_form.text
    assert [m["id"] for m in short_form.json()["value"]] == [m["id"] for m in long_form.json()["value"]]
    user = graph.get("/users", params={"$top": "1", "$select": "id"}).json()["value"][0]["id"]
    assert graph.get(f"/users/{user}/transitiveMemberOf/graph.directoryRole").status_code == 200


def test_batch_item_urls_with_or_without_the_leading_slash(graph: httpx.Client) -> None:
    answer = graph.post("/$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "organization"},
        {"id": "2", "method": "GET", "url": "/organization"},
        {"id": "3", "method": "GET", "url": POLICY.lstrip("/") + "Fido2"}]})
    assert answer.status_code == 200
    assert [r["status"] for r in answer.json()["responses"]] == [200, 200, 200]
    is_graph_error(graph.post("/$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/organization"}]}), 400, "BadRequest")


def test_every_error_carries_inner_error(graph: httpx.Client) -> None:
    unknown_user = "00000000-0000-0000-0000-000000000000"
    errors = {
        "unknown segment": (graph.get("/nothingHere"), 400, "BadRequest"),
        "unknown method": (graph.put("/users"), 405, "Request_BadRequest"),
        "no token": (graph.get("/users", headers={"authorization": "Basic eDp5"}), 401, "InvalidAuthenticationToken"),
        "bad filter": (graph.get("/users", params={"$filter": "startswith(x)"}), 400, "Request_UnsupportedQuery"),
        "missing user": (graph.get(f"/users/{unknown_user}"), 404, "Request_ResourceNotFound"),
    }
    for name, (answer, status, code) in errors.items():
        assert answer.status_code == status, name
        is_graph_error(answer, status, code)
    assert errors["unknown method"][0].json()["error"]["innerError"]["client-request-id"] == "conformance"
    batch: dict[str, Any] = graph.post("/$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{unknown_user}"},
        {"id": "2", "method": "GET", "url": "/organization", "dependsOn": ["1"]}]}).json()
    for item in batch["responses"]:
        assert set(item["body"]["error"]["innerError"]) >= {"date", "request-id", "client-request-id"}
