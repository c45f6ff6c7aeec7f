"""The simulator's delta queries, group writes and licenses against Microsoft's documented examples.

Each test names the learn.microsoft.com page its example comes from (source in the
microsoft-graph-docs-contrib repository).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conformance.entra.test_documented_examples import is_graph_error
from tests.fixtures.entra import EntraFixture


@pytest.fixture
def pilot(graph: httpx.Client) -> Iterator[str]:
    # https://learn.microsoft.com/graph/api/group-post-groups, "Create a security group": 201 with the group.
    created = graph.post("/groups", json={"description": "Self help community for library", "displayName":
                                          "Library Assist", "groupTypes": [], "mailEnabled": False,
                                          "mailNickname": "library", "securityEnabled": True})
    assert created.status_code == 201
    body = created.json()
    assert body["@odata.context"].endswith("$metadata#groups/$entity")
    assert body["displayName"] == "Library Assist"
    assert body["description"] == "Self help community for library"
    yield body["id"]
    # https://learn.microsoft.com/graph/api/group-delete: 204 No Content.
    assert graph.delete(f"/groups/{body['id']}").status_code == 204


def test_group_delta_without_select_carries_members_delta(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/group-delta, Request 1 / Response 1.
    answer = graph.get("/groups/delta")
    assert answer.status_code == 200
    body = answer.json()
    assert body["@odata.context"].endswith("$metadata#groups")
    assert ("@odata.nextLink" in body) != ("@odata.deltaLink" in body)
    sync = next(g for g in body["value"] if g["displayName"] == "Bridge Sync")
    assert sync["members@delta"][0] == {"@odata.type": "#microsoft.graph.user", "id": sync["members@delta"][0]["id"]}
    # Bridge Sync nests "Sync Team A": nested groups appear as group members.
    assert "#microsoft.graph.group" in {m["@odata.type"] for m in sync["members@delta"]}


def test_group_delta_with_select_returns_only_selected(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/group-delta, Request 2 / Response 2.
    body = graph.get("/groups/delta", params={"$select": "displayName,description,mailNickname"}).json()
    assert set(body["value"][0]) <= {"id", "displayName", "description", "mailNickname"}


def test_users_delta_from_now(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/delta-query-overview: `$deltatoken=latest` gives no resource data and
    # a deltaLink.
    body = graph.get("/users/delta", params={"$deltatoken": "latest"}).json()
    assert body["value"] == []
    assert "@odata.nextLink" not in body
    assert "$deltatoken=" in body["@odata.deltaLink"]
    again = graph.get(body["@odata.deltaLink"])
    assert again.status_code == 200


def test_add_and_remove_member_with_ref(graph: httpx.Client, pilot: str) -> None:
    user = graph.get("/users", params={"$top": "1", "$select": "id"}).json()["value"][0]["id"]
    # https://learn.microsoft.com/graph/api/group-post-members, Example 1: 204 No Content.
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user}"}
    assert graph.post(f"/groups/{pilot}/members/$ref", json=ref).status_code == 204
    # Adding it again: 400 naming the existing reference.
    again = graph.post(f"/groups/{pilot}/members/$ref", json=ref)
    is_graph_error(again, 400, "Request_BadRequest")
    assert "already exist" in again.json()["error"]["message"]
    # https://learn.microsoft.com/graph/api/group-delete-members: 204 No Content.
    assert graph.delete(f"/groups/{pilot}/members/{user}/$ref").status_code == 204
    is_graph_error(graph.delete(f"/groups/{pilot}/members/{user}/$ref"), 404, "Request_ResourceNotFound")


def test_add_members_with_odata_bind(graph: httpx.Client, pilot: str) -> None:
    users = [u["id"] for u in graph.get("/users", params={"$top": "21", "$select": "id"}).json()["value"]]
    # https://learn.microsoft.com/graph/api/group-post-members, Example 2: PATCH with members@odata.bind, 204.
    binds = [f"https://graph.microsoft.com/v1.0/directoryObjects/{u}" for u in users]
    assert graph.patch(f"/groups/{pilot}", json={"members@odata.bind": binds[:3]}).status_code == 204
    # Up to 20 members in one request.
    is_graph_error(graph.patch(f"/groups/{pilot}", json={"members@odata.bind": binds}), 400, "Request_BadRequest")
    members = graph.get(f"/groups/{pilot}/members", params={"$select": "id"}).json()["value"]
    assert [m["id"] for m in members] == users[:3]


def test_subscribed_skus(graph: httpx.Client, entra: EntraFixture) -> None:
    # https://learn.microsoft.com/graph/api/subscribedsku-list, Response.
    body = graph.get("/subscribedSkus").json()
    assert body["@odata.context"].endswith("$metadata#subscribedSkus")
    sku = body["value"][0]
    assert set(sku) >= {"capabilityStatus", "consumedUnits", "id", "prepaidUnits", "servicePlans", "skuId",
                        "skuPartNumber", "appliesTo", "subscriptionIds", "accountId", "accountName"}
    assert sku["id"] == f"{entra.tenant_id}_{sku['skuId']}"
    assert set(sku["prepaidUnits"]) == {"enabled", "suspended", "warning", "lockedOut"}
    assert set(sku["servicePlans"][0]) >= {"servicePlanId", "servicePlanName", "provisioningStatus", "appliesTo"}


def test_assign_license_needs_its_permission(graph: httpx.Client) -> None:
    # https://learn.microsoft.com/graph/api/user-assignlicense, Permissions: LicenseAssignment.ReadWrite.All
    # (or User.ReadWrite.All, Directory.ReadWrite.All), which the bridge is not granted.
    user = graph.get("/users", params={"$top": "1", "$select": "id"}).json()["value"][0]["id"]
    answer = graph.post(f"/users/{user}/assignLicense", json={"addLicenses": [], "removeLicenses": []})
    is_graph_error(answer, 403, "Authorization_RequestDenied")


def test_expired_delta_token_is_410(graph: httpx.Client, entra: EntraFixture) -> None:
    # https://learn.microsoft.com/graph/delta-query-overview: an expired token means a full resync.
    link = graph.get("/users/delta", params={"$deltatoken": "latest"}).json()["@odata.deltaLink"]
    entra.admin("POST", "/_sim/delta/expire")
    is_graph_error(graph.get(link), 410, "syncStateNotFound")
