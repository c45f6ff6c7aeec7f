"""The Event Grid stand-in, driven by azure-eventgrid's own publisher client (EventGridSink)."""

from __future__ import annotations

import datetime as dt
import urllib.error
import uuid
from typing import Any

import pytest

from local.eventgrid.app import retry_delay
from local.eventgrid.process import RunningTopic
from shared.adapters.events import EventGridSink
from shared.domain.events import Event, EventType, new_event
from shared.errors import PermissionDenied
from tests.e2e.waiting import settle

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _event(n: int, kind: EventType = EventType.USER_IMPORTED) -> Event:
    return new_event(kind, connection="contoso", subject=f"user-{n}", change=str(n), time=NOW, userId=f"user-{n}")


def _sink(eventgrid: RunningTopic, types: list[str] | None = None, **policy: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    eventgrid.subscribe(name, eventgrid.sink_url(name), types, **policy)
    return name


async def test_the_sdk_publishes_and_a_subscriber_receives_each_cloudevent(eventgrid: RunningTopic,
                                                                          tls_files: Any) -> None:
    sink = _sink(eventgrid, [EventType.USER_IMPORTED.cloud_type])
    client = EventGridSink(eventgrid.endpoint, key=eventgrid.key, verify=str(tls_files.ca))
    try:
        await client.publish([_event(1), _event(2), _event(3, EventType.PASSWORD_ROTATED)])
    finally:
        await client.close()
    received = await settle(lambda: len(eventgrid.received(sink)) >= 2 and eventgrid.received(sink), within=20.0)
    assert {e["subject"] for e in received} == {"user-1", "user-2"}  # the filter kept the rotation out
    first = received[0]
    assert first["specversion"] == "1.0"
    assert first["source"] == "/connections/contoso"
    assert first["type"] == "bridge.user.imported"
    assert first["id"] == _event(int(first["subject"][5:])).id


async def test_a_wrong_key_is_refused_with_the_role_named(eventgrid: RunningTopic, tls_files: Any) -> None:
    client = EventGridSink(eventgrid.endpoint, key="not-the-key", verify=str(tls_files.ca), retry_total=0)
    try:
        with pytest.raises(PermissionDenied, match="EventGrid Data Sender"):
            await client.publish([_event(9)])
    finally:
        await client.close()


def test_a_subscription_whose_endpoint_fails_the_handshake_is_refused(eventgrid: RunningTopic) -> None:
    # The topic's own publish URL does not answer OPTIONS with WebHook-Allowed-Origin.
    with pytest.raises(urllib.error.HTTPError) as refused:
        eventgrid.subscribe("no-handshake", eventgrid.endpoint)
    assert refused.value.code == 400
    assert "WebhookValidationFailed" in refused.value.read().decode()


async def test_a_failing_subscriber_is_retried_on_the_schedule_then_gets_the_event(eventgrid: RunningTopic,
                                                                                    tls_files: Any) -> None:
    sink = _sink(eventgrid)
    eventgrid.call("PUT", f"/_admin/sinks/{sink}", {"failNext": 3, "status": 503})
    client = EventGridSink(eventgrid.endpoint, key=eventgrid.key, verify=str(tls_files.ca))
    try:
        await client.publish([_event(20)])
    finally:
        await client.close()
    received = await settle(lambda: eventgrid.received(sink), within=20.0)
    assert [e["subject"] for e in received] == ["user-20"]
    assert eventgrid.call("GET", f"/_sink/{sink}")["attempts"] == 4
    delivered = [d for d in eventgrid.call("GET", "/_admin/deliveries")["delivered"] if d["subscription"] == sink]
    assert delivered[0]["attempts"] == 4


async def test_after_the_attempt_limit_the_event_is_dead_lettered(eventgrid: RunningTopic, tls_files: Any) -> None:
    sink = _sink(eventgrid, maxDeliveryAttempts=3)
    eventgrid.call("PUT", f"/_admin/sinks/{sink}", {"failNext": 10, "status": 500})
    client = EventGridSink(eventgrid.endpoint, key=eventgrid.key, verify=str(tls_files.ca))
    try:
        await client.publish([_event(30)])
    finally:
        await client.close()
    dead = await settle(lambda: [d for d in eventgrid.call("GET", "/_admin/deadletters")
                                if d["subscription"] == sink], within=20.0)
    assert dead[0]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert dead[0]["attempts"] == 3
    assert eventgrid.received(sink) == []


async def test_a_400_from_the_subscriber_is_not_retried(eventgrid: RunningTopic, tls_files: Any) -> None:
    sink = _sink(eventgrid)
    eventgrid.call("PUT", f"/_admin/sinks/{sink}", {"failNext": 1, "status": 400})
    client = EventGridSink(eventgrid.endpoint, key=eventgrid.key, verify=str(tls_files.ca))
    try:
        await client.publish([_event(40)])
    finally:
        await client.close()
    dead = await settle(lambda: [d for d in eventgrid.call("GET", "/_admin/deadletters")
                                if d["subscription"] == sink], within=20.0)
    assert dead[0]["attempts"] == 1


def test_the_schedule_is_event_grids() -> None:
    assert [retry_delay(n) for n in range(1, 11)] == [10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200]
    assert retry_delay(30) == 43200


def test_publishes_are_checked_as_event_grid_checks_them(eventgrid: RunningTopic, tls_files: Any) -> None:
    import httpx

    good = [{"specversion": "1.0", "id": "1", "source": "/x", "type": "t"}]
    url = f"{eventgrid.endpoint}?api-version=2018-01-01"
    batch = {"content-type": "application/cloudevents-batch+json; charset=utf-8"}
    with httpx.Client(verify=tls_files.client_context()) as http:
        assert http.post(url, json=good, headers=batch).status_code == 401  # no key
        unsigned = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJodHRwczovL2V2ZW50Z3JpZC5henVyZS5uZXQifQ."
        forged = {**batch, "Authorization": f"Bearer {unsigned}"}
        assert http.post(url, json=good, headers=forged).status_code == 401  # an unsigned token
        keyed = {**batch, "aeg-sas-key": eventgrid.key}
        assert http.post(url, json=good, headers=keyed).status_code == 200
        wrong_type = {"content-type": "application/json", "aeg-sas-key": eventgrid.key}
        assert http.post(url, json=good, headers=wrong_type).status_code == 400
        old = [{**good[0], "specversion": "0.3"}]
        assert "1.0 is required" in http.post(url, json=old, headers=keyed).text
        missing = [{"specversion": "1.0", "source": "/x", "type": "t"}]
        assert "'id'" in http.post(url, json=missing, headers=keyed).text
        assert http.post(url, content=b"x" * (1024 * 1024 + 1), headers=keyed).status_code == 413


def test_the_subscribe_command_adds_a_validated_subscription(eventgrid: RunningTopic,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from local.eventgrid.__main__ import main

    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert main(["subscribe", "--endpoint", eventgrid.sink_url(name), "--types", "bridge.user.imported",
                 "--name", name, "--topic", eventgrid.url]) == 0
    found = {s["name"]: s for s in eventgrid.call("GET", "/_admin/subscriptions")}
    assert found[name]["types"] == ["bridge.user.imported"]
    assert main(["subscribe", "--endpoint", eventgrid.endpoint, "--name", f"{name}-x", "--topic", eventgrid.url]) == 1
    assert "WebhookValidationFailed" in capsys.readouterr().err


async def test_the_apps_identity_publishes_with_an_entra_token(run_dir: Any, tls_files: Any, entra: Any) -> None:
    from azure.identity.aio import ClientSecretCredential

    from local.eventgrid.process import running

    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    with running(data_dir=run_dir / "eventgrid-entra", tls=tls_files, time_scale=1000, authority=entra.url,
                 tenant=entra.tenant_id) as topic:
        sink = f"t-{uuid.uuid4().hex[:10]}"
        topic.subscribe(sink, topic.sink_url(sink))
        client = EventGridSink(topic.endpoint, credential=credential, verify=str(tls_files.ca))
        try:
            await client.publish([_event(50)])
        finally:
            await client.close()
            await credential.close()
        received = await settle(lambda: topic.received(sink), within=20.0)
        assert [e["subject"] for e in received] == ["user-50"]
