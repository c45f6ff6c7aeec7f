"""The simulator's delta queries, group writes and licenses, served in-process over ASGI.

Shapes follow learn.microsoft.com/graph/api/user-delta, group-delta, group-post-members,
group-delete-members, group-post-groups, subscribedsku-list and user-assignlicense.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.entra.app import build
from local.entra.core import Simulator
from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_PRINCIPAL_ID, GRAPH_PERMISSIONS, demo_tenant
from local.entra.routes import delta as delta_routes
from local.entra.state import Store
from local.entra.tokens import Signer

BASE = "https://127.0.0.1:1"


class Graph:
    """An in-process client holding a token with chosen roles."""

    def __init__(self, sim: Simulator, client: httpx.AsyncClient) -> None:
        self.sim, self.client = sim, client
        self.roles = list(GRAPH_PERMISSIONS)

    def headers(self) -> dict[str, str]:
        token, _ = self.sim.signer.issue(issuer=self.sim.issuer(), audience="https://graph.microsoft.com",
                                         tenant_id=self.sim.tenant.tenantId, app_id=BRIDGE_CLIENT_ID,
                                         object_id=BRIDGE_PRINCIPAL_ID, roles=self.roles)
        return {"authorization": f"Bearer {token}"}

    async def call(self, method: str, url: str, body: Any = None, **headers: str) -> httpx.Response:
        return await self.client.request(method, url, json=body, headers={**self.headers(), **headers})

    async def all_pages(self, url: str, **headers: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        while True:
            answer = await self.call("GET", url, **headers)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            items.extend(body["value"])
            if "@odata.deltaLink" in body:
                assert "@odata.nextLink" not in body
                return items, str(body["@odata.deltaLink"])
            url = body["@odata.nextLink"]


@pytest.fixture
async def graph(tmp_path: Path) -> AsyncIterator[Graph]:
    sim = Simulator(Store.open(tmp_path, demo_tenant()), Signer(tmp_path), base_url=BASE, admin=True, limits=False)
    app = build(sim)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Graph(sim, client)


def group_named(graph: Graph, name: str) -> str:
    return next(g.id for g in graph.sim.tenant.groups.values() if g.displayName == name)


async def test_users_delta_first_round_pages_then_reports_changes(graph: Graph) -> None:
    users, link = await graph.all_pages("/v1.0/users/delta?$select=displayName,accountEnabled",
                                        prefer="odata.maxpagesize=120")
    assert len(users) == 300
    assert len({u["id"] for u in users}) == 300
    assert set(users[0]) == {"id", "displayName", "accountEnabled"}
    victim, renamed = users[10]["id"], users[11]["id"]
    assert (await graph.call("PATCH", f"/v1.0/users/{renamed}", {"accountEnabled": False})).status_code == 204
    assert (await graph.call("DELETE", f"/_sim/users/{victim}")).status_code == 204
    changes, link2 = await graph.all_pages(link)
    by_id = {c["id"]: c for c in changes}
    assert by_id[renamed]["accountEnabled"] is False
    assert set(by_id[renamed]) == {"id", "displayName",
                                                                                  "accountEnabled"}
    assert by_id[victim]["@removed"] == {"reason": "changed"}
    again, _ = await graph.all_pages(link2)
    assert again == []


async def test_latest_token_skips_the_current_state(graph: Graph) -> None:
    answer = (await graph.call("GET", "/v1.0/users/delta?$deltatoken=latest")).json()
    assert answer["value"] == []
    assert "$deltatoken=" in answer["@odata.deltaLink"]


async def test_groups_delta_reports_member_changes_with_removed(graph: Graph) -> None:
    rotation = group_named(graph, "Bridge Rotation")
    groups, link = await graph.all_pages(f"/v1.0/groups/delta?$select=displayName,members&$filter=id eq '{rotation}'")
    assert [g["id"] for g in groups] == [rotation]
    members = groups[0]["members@delta"]
    assert len(members) == 30
    assert members[0]["@odata.type"] == "#microsoft.graph.user"
    leaving = members[0]["id"]
    joining = next(u for u in graph.sim.tenant.users if u not in {m["id"] for m in members})
    answer = await graph.call("POST", f"/v1.0/groups/{rotation}/members/$ref",
                              {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{joining}"})
    assert answer.status_code == 204
    assert (await graph.call("DELETE", f"/v1.0/groups/{rotation}/members/{leaving}/$ref")).status_code == 204
    changes, _ = await graph.all_pages(link)
    assert len(changes) == 1
    assert changes[0]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": joining},
        {"@odata.type": "#microsoft.graph.user", "id": leaving, "@removed": {"reason": "deleted"}}]


async def test_expired_or_dropped_delta_tokens_answer_410(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    _, link = await graph.all_pages("/v1.0/users/delta", prefer="odata.maxpagesize=999")
    # Every token is now older than the lifetime: as if seven days had passed.
    monkeypatch.setattr(delta_routes, "TOKEN_LIFETIME_SECONDS", -1)
    answer = await graph.call("GET", link)
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "syncStateNotFound"
    monkeypatch.undo()
    graph.sim.tenant.deltaFloor = graph.sim.tenant.sequence + 1
    assert (await graph.call("GET", link)).status_code == 410


async def test_delta_refuses_top_and_bad_tokens(graph: Graph) -> None:
    assert (await graph.call("GET", "/v1.0/users/delta?$top=5")).status_code == 400
    assert (await graph.call("GET", "/v1.0/users/delta?$deltatoken=garbage")).status_code == 400
    graph.roles = ["Organization.Read.All"]
    answer = await graph.call("GET", "/v1.0/groups/delta")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "Authorization_RequestDenied"


async def test_member_add_twice_is_400_and_remove_of_non_member_is_404(graph: Graph) -> None:
    rotation = group_named(graph, "Bridge Rotation")
    member = graph.sim.tenant.groups[rotation].members[0]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{member}"}
    answer = await graph.call("POST", f"/v1.0/groups/{rotation}/members/$ref", ref)
    assert answer.status_code == 400
    assert "already exist" in answer.json()["error"]["message"]
    outsider = graph.sim.tenant.groups[group_named(graph, "Marketing")].members[0]
    assert (await graph.call("DELETE", f"/v1.0/groups/{rotation}/members/{outsider}/$ref")).status_code == 404
    missing = {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/00000000-0000-0000-0000-000000000000"}
    assert (await graph.call("POST", f"/v1.0/groups/{rotation}/members/$ref", missing)).status_code == 404


async def test_create_group_with_members_bind_then_patch_and_delete(graph: Graph) -> None:
    users = list(graph.sim.tenant.users)[:25]
    binds = [f"https://graph.microsoft.com/v1.0/users/{u}" for u in users]
    body = {"displayName": "Pilot", "mailNickname": "pilot", "mailEnabled": False, "securityEnabled": True}
    assert (await graph.call("POST", "/v1.0/groups", {**body, "members@odata.bind": binds})).status_code == 400
    created = await graph.call("POST", "/v1.0/groups", {**body, "members@odata.bind": binds[:20]})
    assert created.status_code == 201, created.text
    gid = created.json()["id"]
    assert created.json()["displayName"] == "Pilot"
    answer = await graph.call("PATCH", f"/v1.0/groups/{gid}", {"members@odata.bind": binds[20:]})
    assert answer.status_code == 204
    assert graph.sim.tenant.groups[gid].members == users
    assert (await graph.call("POST", "/v1.0/groups", {"displayName": "x"})).status_code == 400
    assert (await graph.call("DELETE", f"/v1.0/groups/{gid}")).status_code == 204
    assert (await graph.call("GET", f"/v1.0/groups/{gid}")).status_code == 404


async def test_subscribed_skus_and_assign_license(graph: Graph) -> None:
    skus = (await graph.call("GET", "/v1.0/subscribedSkus")).json()["value"]
    ems = next(s for s in skus if s["skuPartNumber"] == "EMS")
    assert ems["id"] == f"{graph.sim.tenant.tenantId}_{ems['skuId']}"
    assert ems["consumedUnits"] == 0
    user = next(iter(graph.sim.tenant.users.values()))
    graph.roles = [*GRAPH_PERMISSIONS, "LicenseAssignment.ReadWrite.All"]
    answer = await graph.call("POST", f"/v1.0/users/{user.id}/assignLicense",
                              {"addLicenses": [{"skuId": ems["skuId"], "disabledPlans": []}], "removeLicenses": []})
    assert answer.status_code == 200, answer.text
    assert answer.json()["assignedLicenses"] == [{"skuId": ems["skuId"], "disabledPlans": []}]
    skus = (await graph.call("GET", "/v1.0/subscribedSkus")).json()["value"]
    assert next(s for s in skus if s["skuPartNumber"] == "EMS")["consumedUnits"] == 1
    user.usageLocation = None
    other = {"addLicenses": [{"skuId": skus[0]["skuId"]}], "removeLicenses": []}
    assert (await graph.call("POST", f"/v1.0/users/{user.id}/assignLicense", other)).status_code == 400
    bogus = {"addLicenses": [{"skuId": "00000000-0000-0000-0000-000000000001"}], "removeLicenses": []}
    assert (await graph.call("POST", f"/v1.0/users/{user.id}/assignLicense", bogus)).status_code == 400
    graph.roles = list(GRAPH_PERMISSIONS)
    assert (await graph.call("POST", f"/v1.0/users/{user.id}/assignLicense", other)).status_code == 403


async def test_changes_survive_a_reload(graph: Graph, tmp_path: Path) -> None:
    rotation = group_named(graph, "Bridge Rotation")
    member = graph.sim.tenant.groups[rotation].members[0]
    assert (await graph.call("DELETE", f"/v1.0/groups/{rotation}/members/{member}/$ref")).status_code == 204
    graph.sim.store.save()
    reloaded = Store.open(tmp_path, demo_tenant()).tenant
    assert reloaded.sequence == graph.sim.tenant.sequence
    assert reloaded.changeLog[-1]["removed"] == [member]
    assert reloaded.skus == graph.sim.tenant.skus
