"""The simulator's /_sim/ admin API, in-process: members, deleted users, passwords, counters, faults, limits."""

from __future__ import annotations

from pathlib import Path

import httpx

from local.entra.app import build
from local.entra.core import Simulator
from local.entra.demo import BRIDGE_CLIENT_ID, demo_tenant
from local.entra.state import Store
from local.entra.tokens import Signer
from tests.fixtures.entra import InProcessEntra


async def test_the_admin_api_is_off_unless_enabled(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "entra", demo_tenant(60))
    sim = Simulator(store, Signer(tmp_path / "entra"), base_url="https://127.0.0.1:8443")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build(sim)), base_url=sim.base_url) as client:
        assert (await client.get("/_sim/tenant")).status_code == 404
        assert (await client.put("/_sim/faults", json={"errorRate": 1})).status_code == 404


async def test_summary_users_deleted_users_and_restore(entra_inprocess: InProcessEntra) -> None:
    client, tenant = entra_inprocess.client, entra_inprocess.sim.tenant
    summary = (await client.get("/_sim/tenant")).json()
    assert (summary["tenantId"], summary["users"]) == (tenant.tenantId, 300)
    assert BRIDGE_CLIENT_ID in {a["clientId"] for a in summary["apps"]}
    created = await client.post("/_sim/users", json={"userPrincipalName": "new.person@bridge-demo.example",
                                                     "displayName": "New Person"})
    assert created.status_code == 201
    uid = created.json()["id"]
    headers = entra_inprocess.headers()
    assert (await client.get("/v1.0/users/new.person@bridge-demo.example", headers=headers)).json()["id"] == uid
    group = next(g for g in tenant.groups.values() if g.displayName == "Marketing")
    await client.post(f"/_sim/groups/{group.id}/members", json={"ids": [uid]})
    assert (await client.delete(f"/_sim/users/{uid}")).status_code == 204
    assert uid not in tenant.groups[group.id].members
    deleted = (await client.get("/_sim/deletedUsers")).json()["value"]
    assert {"id": uid, "userPrincipalName": "new.person@bridge-demo.example"} in deleted
    assert (await client.delete(f"/_sim/users/{uid}")).status_code == 404
    assert (await client.post(f"/_sim/deletedUsers/{uid}/restore")).json() == {"id": uid}
    assert (await client.get(f"/v1.0/users/{uid}", headers=headers)).status_code == 200
    assert (await client.post(f"/_sim/deletedUsers/{uid}/restore")).status_code == 404


async def test_group_members_add_list_remove(entra_inprocess: InProcessEntra) -> None:
    client, tenant = entra_inprocess.client, entra_inprocess.sim.tenant
    group = next(g for g in tenant.groups.values() if g.displayName == "Bridge Rotation")
    outsider = next(u for u in tenant.users.values() if u.id not in group.members)
    before = (await client.get(f"/_sim/groups/{group.id}/members")).json()
    assert (before["members"], before["transitiveUsers"]) == (group.members, 30)
    added = (await client.post(f"/_sim/groups/{group.id}/members", json={"ids": [outsider.id, outsider.id]})).json()
    assert added["transitiveUsers"] == 31
    assert added["members"].count(outsider.id) == 1
    removed = (await client.request("DELETE", f"/_sim/groups/{group.id}/members", json={"ids": [outsider.id]})).json()
    assert outsider.id not in removed["members"]
    assert (await client.get("/_sim/groups/nope/members")).status_code == 404


async def test_the_password_last_set_and_when(entra_inprocess: InProcessEntra) -> None:
    client, tenant = entra_inprocess.client, entra_inprocess.sim.tenant
    user = next(u for u in tenant.users.values() if not tenant.roles_of(u.id))
    assert (await client.get(f"/_sim/users/{user.id}/password")).json() == {"userId": user.id}
    answer = await client.patch(f"/v1.0/users/{user.id}", headers=entra_inprocess.headers(),
                                json={"passwordProfile": {"password": "Kp4#Wz8!Qm2$Rt6v",
                                                          "forceChangePasswordNextSignIn": False}})
    assert answer.status_code == 204
    shown = (await client.get(f"/_sim/users/{user.userPrincipalName}/password")).json()
    assert (shown["userId"], shown["password"], shown["forceChange"]) == (user.id, "Kp4#Wz8!Qm2$Rt6v", "False")
    assert shown["setAt"].endswith("Z")
    assert (await client.get("/_sim/users/nobody/password")).status_code == 404


async def test_counters_per_app_and_buckets(entra_inprocess: InProcessEntra) -> None:
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    await client.get("/v1.0/users", params={"$top": "5"}, headers=headers)  # 2 resource units
    await client.get("/v1.0/organization", headers=headers)  # 1
    counters = (await client.get("/_sim/counters")).json()
    assert (counters["requests"], counters["resourceUnits"], counters["throttled"]) == (2, 3, 0)
    bucket = counters["buckets"][f"ru:{BRIDGE_CLIENT_ID}"]
    assert (bucket["capacity"], bucket["used"]) == (5000, 3)
    assert bucket["remaining"] <= 5000
    assert entra_inprocess.sim.app_counters[BRIDGE_CLIENT_ID]["requests"] == 2


async def test_faults_and_limits_through_the_admin_api(entra_inprocess: InProcessEntra) -> None:
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    shown = (await client.put("/_sim/faults", json={"errorRate": 1, "seed": 7})).json()
    assert (shown["errorRate"], shown["seed"]) == (1, 7)
    failed = await client.get("/v1.0/organization", headers=headers)
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "serviceNotAvailable")
    assert (await client.put("/_sim/faults", json={"errorRate": 5})).status_code == 400
    assert (await client.get("/_sim/faults")).json()["errorRate"] == 1
    await client.put("/_sim/faults", json={"errorRate": 0})
    assert (await client.get("/v1.0/organization", headers=headers)).status_code == 200
    # PUT replaces the whole set: what the new one leaves out is off again (an empty one clears all).
    await client.put("/_sim/faults", json={"errorRate": 0.5, "latencyMs": 5, "seed": 3,
                                           "routes": [{"path": "^/users$", "throttleRate": 1}]})
    replaced = (await client.put("/_sim/faults", json={"dropRate": 0.25})).json()
    assert replaced == {"latencyMs": 0, "errorRate": 0, "throttleRate": 0, "dropRate": 0.25, "ambiguousRate": 0,
                        "seed": None, "routes": []}
    assert (await client.put("/_sim/faults", json={})).json()["dropRate"] == 0
    assert (await client.get("/v1.0/users", headers=headers)).status_code == 200
    assert (await client.put("/_sim/limits", json={"enabled": False})).json() == {"enabled": False}
    assert entra_inprocess.sim.limits is False


async def test_save_writes_the_tenant_file_now(entra_inprocess: InProcessEntra) -> None:
    client, sim = entra_inprocess.client, entra_inprocess.sim
    created = await client.post("/_sim/users", json={"userPrincipalName": "saved.now@bridge-demo.example"})
    assert sim.store.dirty
    answer = (await client.post("/_sim/save")).json()
    assert answer["users"] == len(sim.tenant.users)
    assert not sim.store.dirty
    assert created.json()["id"] in sim.store.path.read_text(encoding="utf-8")
    # A filter by id or UPN finds users by lookup, in any case, and only those asked for.
    headers = entra_inprocess.headers()
    upn, uid = "Saved.Now@bridge-demo.example", created.json()["id"]
    for expression in (f"id in ('{uid.upper()}', 'missing')", f"userPrincipalName eq '{upn}'"):
        found = (await client.get("/v1.0/users", params={"$filter": expression}, headers=headers)).json()["value"]
        assert [u["id"] for u in found] == [uid]
