"""Change notifications on the simulator: the bridge's service subscribes (Graph's handshake), a change
queues one sync, a burst one run, forged notifications are refused and audited, lifecycle events are
answered, and subscriptions are renewed before they expire and removed on uninstall."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import pytest

from local.entra.demo import DEMO_TENANT_ID
from shared.adapters.graph.subscriptions import GraphSubscriptions
from shared.adapters.leases import TableLeases
from shared.adapters.subscription_records import TableSubscriptionRecords
from shared.config import Connection
from shared.errors import Forbidden
from shared.services.notifications import (
    QUEUED_SCOPE,
    NotificationCollection,
    NotificationService,
    SubscriptionApi,
    client_state_name,
)
from shared.topology import Table
from tests.e2e.waiting import settle
from tests.fakes import FakeAuditSink, FakeEntityStore, FakeSecretStore
from tests.fixtures.entra import InProcessEntra
from tests.fixtures.notifications import Receiver, SimGraph


def _conn(name: str, tenant: str = DEMO_TENANT_ID) -> Connection:
    return Connection.model_validate({"name": name, "tenantId": tenant, "cloud": "local",
                                      "auth": {"kind": "managedIdentity"},
                                      "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]}}})


@dataclass
class Requests:
    """The sync runs queued (SyncRequester)."""

    runs: list[str] = field(default_factory=list)

    async def request(self, conn: Connection, *, actor: str, correlation_id: str, dry_run: bool = False,
                      full: bool = False, notified: bool = False) -> str:
        assert notified
        self.runs.append(conn.name)
        return f"sync-{len(self.runs)}"


@dataclass
class KnownUsers:
    """The directory's users (UserLookup)."""

    ids: set[str] = field(default_factory=set)

    async def get(self, connection: str, user_id: str) -> object | None:
        return {"id": user_id} if user_id in self.ids else None


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@dataclass
class Bridge:
    service: NotificationService
    entities: FakeEntityStore
    vault: FakeSecretStore
    audit: FakeAuditSink
    runs: Requests
    api: SubscriptionApi
    conns: dict[str, Connection]
    users: KnownUsers


@pytest.fixture
def bridge(entra_inprocess: InProcessEntra, receiver: Receiver) -> Bridge:
    entities, vault, audit = FakeEntityStore(), FakeSecretStore(), FakeAuditSink()
    runs, users = Requests(), KnownUsers()
    clock = SystemClock()
    service = NotificationService(sync=runs, subscriptions=TableSubscriptionRecords(entities),
                                  leases=TableLeases(entities, clock), secrets_store=vault, audit=audit, clock=clock,
                                   base_url=receiver.url, users=users)
    api = GraphSubscriptions(SimGraph(entra_inprocess))
    conns = {c.name: c for c in (_conn("a"), _conn("b"))}

    async def forward(path: str, raw: bytes) -> int:
        # What functions/notifications.py does with a POST from Graph.
        name = path.split("/")[4]
        body = NotificationCollection.model_validate_json(raw)
        try:
            if path.endswith("/lifecycle"):
                async def graph() -> SubscriptionApi:
                    return api
                await service.lifecycle(conns[name], body, graph, correlation_id="c")
            else:
                await service.notified(conns[name], body, correlation_id="c")
        except Forbidden:
            return 403
        return 202

    receiver.forward = forward
    return Bridge(service, entities, vault, audit, runs, api, conns, users)


def _sync_group(entra: InProcessEntra) -> str:
    return next(g.id for g in entra.sim.tenant.groups.values() if g.displayName == "Bridge Sync")


async def _add_members(entra: InProcessEntra, count: int) -> list[str]:
    group = _sync_group(entra)
    spare = [u for u in entra.sim.tenant.users if u not in entra.sim.tenant.groups[group].members][:count]
    for user in spare:
        assert (await entra.client.post(f"/_sim/groups/{group}/members", json={"ids": [user]})).status_code == 200
    return spare


async def test_handshake_then_a_membership_change_queues_one_incremental_sync(
        bridge: Bridge, entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    report = await bridge.service.maintain(bridge.conns["a"], bridge.api, correlation_id="t")
    assert sorted(report.created) == ["groups", "users"]
    # Graph validated both URLs of both subscriptions, with the handshake answered as text/plain.
    assert sorted(c.path for c in receiver.validations()) == sorted(
        ["/api/notifications/connections/a", "/api/notifications/connections/a/lifecycle"] * 2)
    state = bridge.vault.secrets[client_state_name("a")][0].value
    assert state is not None
    assert len(state) >= 43
    assert "notifications.subscribed" in bridge.audit.actions()

    await _add_members(entra_inprocess, 1)
    await settle(lambda: bridge.runs.runs)
    assert bridge.runs.runs == ["a"]
    # Graph's body is never stored: the only rows written are the subscriptions and the queued-run mark.
    rows = {k for (p, k) in bridge.entities.tables[Table.SYNCSTATE] if p == "a"}
    assert rows == {"subscription.groups", "subscription.users"}
    assert {k for k in bridge.entities.tables[Table.LEASES]} == {("a", QUEUED_SCOPE)}
    assert not any(state in json.dumps(r.detail) for r in bridge.audit.records)


async def test_a_burst_of_changes_is_one_queued_run_until_the_run_starts(
        bridge: Bridge, entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    await bridge.service.maintain(bridge.conns["a"], bridge.api, correlation_id="t")
    await _add_members(entra_inprocess, 20)
    await settle(lambda: len(receiver.notifications()) >= 1)
    await asyncio.sleep(0.3)
    assert len([n for c in receiver.notifications() for n in json.loads(c.body)["value"]]) >= 20
    assert bridge.runs.runs == ["a"]
    # The run starts (sync_work releases the marker): the next change queues the next run.
    await bridge.service.release("a")
    await _add_members(entra_inprocess, 1)
    await settle(lambda: len(bridge.runs.runs) == 2)


async def test_forged_missing_and_other_connections_notifications_are_refused_and_audited(
        bridge: Bridge, entra_inprocess: InProcessEntra) -> None:
    a, b = bridge.conns["a"], bridge.conns["b"]
    await bridge.service.maintain(a, bridge.api, correlation_id="t")
    await bridge.service.maintain(b, bridge.api, correlation_id="t")
    rows = await bridge.service.recorded("a")
    sub_a = str(rows["groups"]["subscriptionId"])
    state_a = bridge.vault.secrets[client_state_name("a")][0].value
    state_b = bridge.vault.secrets[client_state_name("b")][0].value
    assert state_a != state_b

    def body(**item: Any) -> NotificationCollection:
        return NotificationCollection.model_validate({"value": [{"changeType": "updated", "resource": "Groups/x",
                                                                 "tenantId": DEMO_TENANT_ID, **item}]})

    forged = {
        "forged clientState": body(subscriptionId=sub_a, clientState=secrets.token_urlsafe(48)),
        "missing clientState": body(subscriptionId=sub_a),
        "unknown subscription": body(subscriptionId="00000000-0000-0000-0000-000000000000", clientState=state_a),
        "other tenant": body(subscriptionId=sub_a, clientState=state_a,
                             tenantId="11111111-1111-1111-1111-111111111111"),
    }
    for what, forged_body in forged.items():
        with pytest.raises(Forbidden):
            await bridge.service.notified(a, forged_body, correlation_id=what)
    # Connection a's genuine notification sent to connection b's endpoint.
    with pytest.raises(Forbidden):
        await bridge.service.notified(b, body(subscriptionId=sub_a, clientState=state_a), correlation_id="swap")
    with pytest.raises(Forbidden):
        await bridge.service.lifecycle(b, body(subscriptionId=sub_a, clientState=state_a, lifecycleEvent="missed"),
                                       _api(bridge), correlation_id="swap")
    assert bridge.runs.runs == []
    assert not bridge.entities.tables.get(Table.LEASES)
    refused = [r for r in bridge.audit.records if r.action == "notification.refused"]
    assert len(refused) == len(forged) + 2
    assert {r.connection for r in refused} == {"a", "b"}
    reasons = {reason for r in refused for reason in r.detail["reasons"]}
    assert reasons == {"clientState does not match", "clientState missing",
                       "subscription not recorded for this connection", "tenantId is not the connection's tenant"}
    for record in bridge.audit.records:
        assert state_a not in json.dumps(record.detail)
        assert state_b not in json.dumps(record.detail)
    # The genuine one is taken.
    outcome = await bridge.service.notified(a, body(subscriptionId=sub_a, clientState=state_a), correlation_id="ok")
    assert outcome.queued == "sync-1"


def _api(bridge: Bridge) -> Any:
    async def graph() -> SubscriptionApi:
        return bridge.api
    return graph


async def test_lifecycle_events_reauthorize_resubscribe_and_catch_up(
        bridge: Bridge, entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    a = bridge.conns["a"]
    await bridge.service.maintain(a, bridge.api, correlation_id="t")
    groups = str((await bridge.service.recorded("a"))["groups"]["subscriptionId"])

    sent = await entra_inprocess.client.post(f"/_sim/subscriptions/{groups}/lifecycle",
                                             json={"event": "reauthorizationRequired"})
    assert sent.json()["sent"]
    sim_sub = next(s for s in (await entra_inprocess.client.get("/_sim/subscriptions")).json()["value"]
                   if s["id"] == groups)
    assert "reauthorizedAt" in sim_sub
    assert bridge.runs.runs == []

    await entra_inprocess.client.post(f"/_sim/subscriptions/{groups}/lifecycle", json={"event": "missed"})
    assert bridge.runs.runs == ["a"]
    await bridge.service.release("a")

    await entra_inprocess.client.post(f"/_sim/subscriptions/{groups}/lifecycle", json={"event": "subscriptionRemoved"})
    fresh = str((await bridge.service.recorded("a"))["groups"]["subscriptionId"])
    assert fresh != groups
    listed = (await entra_inprocess.client.get("/_sim/subscriptions")).json()["value"]
    assert fresh in {s["id"] for s in listed}
    assert groups not in {s["id"] for s in listed}
    assert bridge.runs.runs == ["a", "a"]  # changes may have been missed meanwhile
    events = [r.outcome for r in bridge.audit.records if r.action == "notification.lifecycle"]
    assert events == ["reauthorizationRequired", "missed", "subscriptionRemoved"]


async def test_renewed_before_expiry_recreated_when_gone_and_removed_on_uninstall(
        bridge: Bridge, entra_inprocess: InProcessEntra) -> None:
    a = bridge.conns["a"]
    await bridge.service.maintain(a, bridge.api, correlation_id="t")
    again = await bridge.service.maintain(a, bridge.api, correlation_id="t")
    assert sorted(again.kept) == ["groups", "users"]

    # Two days left on both (the timer renews with three days to go); one is also gone at Graph.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    for key in ("groups", "users"):
        row = bridge.entities.tables[Table.SYNCSTATE][("a", f"subscription.{key}")]
        row.data["expires"] = soon
    users = str((await bridge.service.recorded("a"))["users"]["subscriptionId"])
    await bridge.api.delete(users)
    renewed = await bridge.service.maintain(a, bridge.api, correlation_id="t")
    assert renewed.renewed == ["groups"]
    assert renewed.created == ["users"]
    rows = await bridge.service.recorded("a")
    for key in ("groups", "users"):
        expires = dt.datetime.fromisoformat(str(rows[key]["expires"]))
        assert expires > dt.datetime.now(dt.UTC) + dt.timedelta(days=28)
    assert "notifications.renewed" in bridge.audit.actions()

    # A subscription Graph made but whose answer was lost (never recorded) is deleted by the next round.
    from shared.services.notifications import notification_urls
    url, lifecycle = notification_urls(bridge.service.base_url or "", "a")
    lost = await bridge.api.create(resource="groups", change_type="updated", notification_url=url,
                                   lifecycle_url=lifecycle, expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                                   client_state="x")
    cleaned = await bridge.service.maintain(a, bridge.api, correlation_id="t")
    assert cleaned.removed == [f"unrecorded groups {lost.id}"]
    assert lost.id not in {s["id"] for s in (await entra_inprocess.client.get("/_sim/subscriptions")).json()["value"]}

    removed = await bridge.service.remove(a, bridge.api, correlation_id="u")
    assert sorted(removed) == ["groups", "users"]
    assert await bridge.service.recorded("a") == {}
    assert (await entra_inprocess.client.get("/_sim/subscriptions")).json()["value"] == []


async def test_without_group_read_all_the_problem_names_the_permission(
        bridge: Bridge, entra_inprocess: InProcessEntra) -> None:
    weak = GraphSubscriptions(SimGraph(entra_inprocess, roles=["GroupMember.Read.All", "User.Read.All"]))
    report = await bridge.service.maintain(bridge.conns["a"], weak, correlation_id="t")
    assert report.created == ["users"]
    assert len(report.problems) == 1
    assert "Group.Read.All" in report.problems[0]
    status = await bridge.service.status("a")
    assert "Group.Read.All" in status["subscriptions"]["groups"]["problem"]


async def test_a_run_meeting_a_held_lease_comes_back_soon_unless_another_is_queued() -> None:
    from shared.services.notifications import REQUEUE_SECONDS
    from shared.topology import Queue
    from tests.fakes import FakeClock, FakeWorkQueue

    entities, queue, clock, runs = FakeEntityStore(), FakeWorkQueue(), FakeClock(), Requests()
    service = NotificationService(sync=runs, subscriptions=TableSubscriptionRecords(entities),
                                  leases=TableLeases(entities, clock), secrets_store=FakeSecretStore(),
                                  audit=FakeAuditSink(), clock=clock, base_url="https://bridge.example", queue=queue)
    conn = _conn("a")
    message = {"connection": "a", "kind": "sync", "args": {"notified": True}}
    assert await service.requeue(conn, message, correlation_id="c")
    assert queue.sent[Queue.SYNC] == [(message, REQUEUE_SECONDS)]
    # That message is the queued run: notifications meanwhile add nothing.
    assert await service.queue_sync(conn, correlation_id="n") is None
    assert runs.runs == []
    # Its run starts; a notification during the run queues the next one, and the lease-blocked copy of
    # that one is dropped because a newer run is queued.
    await service.release("a")
    assert await service.queue_sync(conn, correlation_id="n") == "sync-1"
    assert not await service.requeue(conn, message, correlation_id="c")
    assert len(queue.sent[Queue.SYNC]) == 1
    # A marker whose message was lost (older than 15 minutes) does not block notifications for ever.
    clock.advance(minutes=16)
    assert await service.queue_sync(conn, correlation_id="n") == "sync-2"


async def test_no_client_state_in_logs_or_answers(bridge: Bridge, entra_inprocess: InProcessEntra,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    a = bridge.conns["a"]
    await bridge.service.maintain(a, bridge.api, correlation_id="t")
    state = bridge.vault.secrets[client_state_name("a")][0].value
    assert state is not None
    sub = str((await bridge.service.recorded("a"))["groups"]["subscriptionId"])
    forged = NotificationCollection.model_validate({"value": [{"subscriptionId": sub, "clientState": state[::-1]}]})
    with pytest.raises(Forbidden) as refused:
        await bridge.service.notified(a, forged, correlation_id="x")
    assert state not in str(refused.value.problem())
    assert state[::-1] not in caplog.text
    assert state not in caplog.text
    assert state not in json.dumps(await bridge.service.status("a"))


async def test_user_changes_run_a_sync_only_for_users_the_bridge_holds(
        bridge: Bridge, entra_inprocess: InProcessEntra, receiver: Receiver) -> None:
    a = bridge.conns["a"]
    await bridge.service.maintain(a, bridge.api, correlation_id="t")
    def made(n: int) -> str:
        return f"n{n}-{secrets.token_hex(3)}@bridge-demo.example"

    # A new user (a user change) the bridge does not hold: Graph notifies, the bridge answers and skips it.
    stranger = (await entra_inprocess.client.post("/_sim/users", json={"userPrincipalName": made(1)})).json()["id"]
    await settle(lambda: [c for c in receiver.notifications() if stranger.encode() in c.body])
    assert bridge.runs.runs == []
    held = secrets.token_hex(4)
    bridge.users.ids.add(held)
    created = await entra_inprocess.client.post("/_sim/users", json={"id": held, "userPrincipalName": made(2)})
    assert created.status_code == 201
    await settle(lambda: bridge.runs.runs)
    assert bridge.runs.runs == ["a"]
