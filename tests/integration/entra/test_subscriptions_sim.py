"""The simulator's /subscriptions as Microsoft documents it: the validation call, limits, renewal, deletion,
delivery with clientState, lifecycle events, and injected delivery faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from local.entra.demo import BRIDGE_CLIENT_ID
from tests.e2e.waiting import settle
from tests.fixtures.entra import InProcessEntra
from tests.fixtures.notifications import Receiver


def _in(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _group(entra: InProcessEntra, name: str) -> str:
    return next(g.id for g in entra.sim.tenant.groups.values() if g.displayName == name)


async def _subscribe(entra: InProcessEntra, receiver: Receiver, **extra: Any) -> Any:
    body = {"changeType": "updated", "resource": "groups", "notificationUrl": f"{receiver.url}/hook",
            "lifecycleNotificationUrl": f"{receiver.url}/life", "expirationDateTime": _in(600),
            "clientState": "s3cret-state", **extra}
    return await entra.client.post("/v1.0/subscriptions", json=body, headers=entra.headers())


async def test_create_validates_both_urls_then_delivers_changes_with_client_state(
        entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    created = await _subscribe(entra_inprocess, receiver)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["clientState"] == "s3cret-state"
    assert sub["changeType"] == "updated"
    checks = receiver.validations()
    assert [c.path for c in checks] == ["/hook", "/life"]
    assert all(c.content_type.startswith("text/plain") for c in checks)

    group = _group(entra_inprocess, "Bridge Sync")
    users = [u for u in entra_inprocess.sim.tenant.users if u not in entra_inprocess.sim.tenant.groups[group].members]
    added = await entra_inprocess.client.post(f"/_sim/groups/{group}/members", json={"ids": users[:1]})
    assert added.status_code == 200
    got = await settle(receiver.notifications)
    item = json.loads(got[0].body)["value"][0]
    assert got[0].path == "/hook"
    assert item["subscriptionId"] == sub["id"]
    assert item["clientState"] == "s3cret-state"
    assert item["changeType"] == "updated"
    assert item["resourceData"]["id"] == group
    assert item["tenantId"] == entra_inprocess.sim.tenant.tenantId


@pytest.mark.parametrize("mode", ["wrong", "json", "error"])
async def test_a_failed_validation_refuses_the_subscription(entra_inprocess: InProcessEntra, receiver: Receiver,
                                                           mode: str) -> None:
    receiver.mode = mode
    refused = await _subscribe(entra_inprocess, receiver)
    assert refused.status_code == 400
    assert "validation" in refused.json()["error"]["message"].lower()
    listed = await entra_inprocess.client.get("/v1.0/subscriptions", headers=entra_inprocess.headers())
    assert listed.json()["value"] == []


async def test_an_unreachable_endpoint_and_plain_http_elsewhere_are_refused(entra_inprocess: InProcessEntra,
                                                                           receiver: Receiver) -> None:
    from local.servers import free_port

    gone = await _subscribe(entra_inprocess, receiver, notificationUrl=f"http://127.0.0.1:{free_port()}/x")
    assert gone.status_code == 400
    plain = await _subscribe(entra_inprocess, receiver, notificationUrl="http://bridge.example/hook")
    assert plain.status_code == 400
    assert "https" in plain.json()["error"]["message"]


async def test_expiry_limits_for_directory_resources(entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    too_long = await _subscribe(entra_inprocess, receiver, expirationDateTime=_in(41760 + 5))
    assert too_long.status_code == 400
    assert "41760" in too_long.json()["error"]["message"]
    short = await _subscribe(entra_inprocess, receiver, expirationDateTime=_in(5))
    assert short.status_code == 201
    expires = dt.datetime.fromisoformat(short.json()["expirationDateTime"].replace("Z", "+00:00"))
    assert expires >= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=44)  # moved up to 45 minutes
    created = await _subscribe(entra_inprocess, receiver, resource="users", changeType="updated,deleted",
                               expirationDateTime=_in(41700))
    assert created.status_code == 201
    unsupported = await _subscribe(entra_inprocess, receiver, resource="devices")
    assert unsupported.status_code == 400
    created_type = await _subscribe(entra_inprocess, receiver, changeType="created")
    assert created_type.status_code == 400


async def test_renew_delete_and_other_apps_and_permissions(entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    sub = (await _subscribe(entra_inprocess, receiver)).json()
    headers = entra_inprocess.headers()
    renewed = await entra_inprocess.client.patch(f"/v1.0/subscriptions/{sub['id']}", headers=headers,
                                                 json={"expirationDateTime": _in(3000)})
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] != sub["expirationDateTime"]
    beyond = await entra_inprocess.client.patch(f"/v1.0/subscriptions/{sub['id']}", headers=headers,
                                                json={"expirationDateTime": _in(50000)})
    assert beyond.status_code == 400
    reauthorized = await entra_inprocess.client.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=headers)
    assert reauthorized.status_code == 204
    # Another app of the tenant sees nothing of it.
    other = next(c for c in entra_inprocess.sim.tenant.apps if c != BRIDGE_CLIENT_ID)
    stranger = {"authorization": f"Bearer {entra_inprocess.token(other)}"}
    assert (await entra_inprocess.client.get(f"/v1.0/subscriptions/{sub['id']}", headers=stranger)).status_code == 404
    # Without Group.Read.All (or broader) no subscription to groups.
    weak = {"authorization": f"Bearer {entra_inprocess.token(roles=['GroupMember.Read.All', 'User.Read.All'])}"}
    denied = await entra_inprocess.client.post("/v1.0/subscriptions", headers=weak, json={
        "changeType": "updated", "resource": "groups", "notificationUrl": f"{receiver.url}/hook",
        "expirationDateTime": _in(600), "clientState": "x"})
    assert denied.status_code == 403
    deleted = await entra_inprocess.client.delete(f"/v1.0/subscriptions/{sub['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await entra_inprocess.client.get(f"/v1.0/subscriptions/{sub['id']}", headers=headers)).status_code == 404


async def test_lifecycle_events_and_delivery_faults(entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    sub = (await _subscribe(entra_inprocess, receiver)).json()
    sent = await entra_inprocess.client.post(f"/_sim/subscriptions/{sub['id']}/lifecycle",
                                             json={"event": "reauthorizationRequired"})
    assert sent.json()["sent"] is True
    event = json.loads(receiver.calls[-1].body)["value"][0]
    assert receiver.calls[-1].path == "/life"
    assert event["lifecycleEvent"] == "reauthorizationRequired"
    assert event["clientState"] == "s3cret-state"

    group = _group(entra_inprocess, "Bridge Sync")
    spare = [u for u in entra_inprocess.sim.tenant.users if u not in entra_inprocess.sim.tenant.groups[group].members]
    # Every delivery lost: nothing arrives.
    await entra_inprocess.client.put("/_sim/faults", json={"routes": [{"path": "^/_notifications", "dropRate": 1}]})
    before = len(receiver.calls)
    await entra_inprocess.client.post(f"/_sim/groups/{group}/members", json={"ids": spare[:1]})
    await asyncio.sleep(0.3)
    assert len(receiver.calls) == before
    # Every delivery failing: Graph gives up and says so with `missed`.
    await entra_inprocess.client.put("/_sim/faults", json={"routes": [{"path": "^/_notifications", "errorRate": 1,
                                                                       "latencyMs": 50}]})
    await entra_inprocess.client.post(f"/_sim/groups/{group}/members", json={"ids": spare[1:2]})
    missed = await settle(lambda: [c for c in receiver.calls[before:] if b'"missed"' in c.body])
    assert missed[0].path == "/life"
    listed = (await entra_inprocess.client.get("/_sim/subscriptions")).json()["value"][0]["deliveries"]
    assert listed["dropped"] == 1
    assert listed["failed"] == 1

    removed = await entra_inprocess.client.post(f"/_sim/subscriptions/{sub['id']}/lifecycle",
                                                json={"event": "subscriptionRemoved"})
    assert removed.status_code == 200
    gone = await entra_inprocess.client.get(f"/v1.0/subscriptions/{sub['id']}", headers=entra_inprocess.headers())
    assert gone.status_code == 404
