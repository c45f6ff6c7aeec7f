"""The events functions: a nudge that finds another publisher, or a throttling topic, comes back later;
the feed route answers a page, with its roles."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest

import functions.events as events_functions
from functions import http
from shared.errors import Throttled
from shared.messages import WorkMessage
from shared.services.events import Drained, EventPublisher, FeedPage
from shared.topology import Queue
from tests.fakes import FakeClock, FakeWorkQueue


def _functions() -> dict[str, Callable[..., Awaitable[Any]]]:
    app = func.FunctionApp()
    app.register_functions(events_functions.bp)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@dataclass
class Conn:
    name: str = "contoso"


class Publisher(EventPublisher):
    """The publisher whose drains answer `outcomes` in turn."""

    def __init__(self, outcomes: list[Any] | None = None) -> None:
        super().__init__(log_=None, leases=None, sink=None, clock=FakeClock())  # type: ignore[arg-type]
        self.outcomes = outcomes or []

    async def drain(self, connection: str, *, limit: int = 10_000) -> Drained:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, Drained)
        return outcome


@dataclass
class App:
    event_publisher: Publisher
    queue: FakeWorkQueue = field(default_factory=FakeWorkQueue)

    def connection(self, name: str) -> Conn:
        return Conn(name)


def nudge(deferrals: int = 0) -> func.QueueMessage:
    message = WorkMessage(connection="contoso", kind="events.publish", target="contoso", idempotency_key="n1",
                          args={"deferrals": deferrals} if deferrals else {})
    return func.QueueMessage(id="m1", body=message.to_json().encode())


@pytest.mark.parametrize(("outcome", "delay"), [(Drained(0, busy=True), 1.0),
                                                (Throttled("busy", retry_after=7), 7.0)])
async def test_a_busy_or_throttled_drain_puts_the_nudge_back(monkeypatch: pytest.MonkeyPatch, outcome: Any,
                                                             delay: float) -> None:
    app = App(Publisher([outcome]))
    monkeypatch.setattr(events_functions, "bridge", lambda: app)
    monkeypatch.setattr(http, "bridge", lambda: app)  # it resolves {c}
    await FUNCTIONS["events_work"](nudge())
    ((sent, seconds),) = app.queue.sent[Queue.EVENTS]
    assert seconds == delay
    assert sent["args"]["deferrals"] == 1


async def test_a_drained_connection_or_a_nudge_put_back_three_times_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(Publisher([Drained(5), Drained(0, busy=True)]))
    monkeypatch.setattr(events_functions, "bridge", lambda: app)
    monkeypatch.setattr(http, "bridge", lambda: app)  # it resolves {c}
    await FUNCTIONS["events_work"](nudge())
    await FUNCTIONS["events_work"](nudge(deferrals=3))  # the minute's sweep takes over from here
    assert app.queue.sent == {}


async def test_the_feed_route_answers_a_page(monkeypatch: pytest.MonkeyPatch) -> None:
    class Feed:
        async def page(self, connection: str, *, after: str | None, top: int) -> FeedPage:
            assert (connection, after, top) == ("contoso", "abc", 5)
            return FeedPage(events=[], cursor="abc", has_more=False)

    app = App(Publisher())
    app.change_feed = Feed()  # type: ignore[attr-defined]
    monkeypatch.setattr(events_functions, "bridge", lambda: app)
    monkeypatch.setattr(http, "bridge", lambda: app)  # it resolves {c}
    request = func.HttpRequest(method="GET", url="http://127.0.0.1/api/connections/contoso/events?after=abc&top=5",
                               route_params={"c": "contoso"}, params={"after": "abc", "top": "5"}, body=b"")
    response = await FUNCTIONS["change_feed"](request)
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"events": [], "cursor": "abc", "hasMore": False}
    bad = func.HttpRequest(method="GET", url="http://127.0.0.1/api/connections/contoso/events?top=x",
                           route_params={"c": "contoso"}, params={"top": "x"}, body=b"")
    answer = await FUNCTIONS["change_feed"](bad)
    assert answer.status_code == 400
    assert "top" in json.loads(answer.get_body())["detail"]


async def test_the_feed_needs_the_admin_or_devices_role(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from shared.config import settings

    class Feed:
        async def page(self, connection: str, *, after: str | None, top: int) -> FeedPage:
            return FeedPage(events=[], cursor="c", has_more=False)

    app = App(Publisher())
    app.change_feed = Feed()  # type: ignore[attr-defined]
    monkeypatch.setattr(events_functions, "bridge", lambda: app)
    monkeypatch.setattr(http, "bridge", lambda: app)  # it resolves {c}
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    settings.cache_clear()

    def as_role(role: str) -> func.HttpRequest:
        claims = [{"typ": "roles", "val": role}, {"typ": "name", "val": "p@contoso.example"}]
        principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name",
                                                 "role_typ": "roles"}).encode()).decode()
        return func.HttpRequest(method="GET", url="http://127.0.0.1/api/connections/contoso/events",
                                route_params={"c": "contoso"}, headers={"x-ms-client-principal": principal},
                                body=b"")

    try:
        assert (await FUNCTIONS["change_feed"](as_role("Bridge.Audit.Read"))).status_code == 403
        assert (await FUNCTIONS["change_feed"](as_role("Bridge.Devices"))).status_code == 200
        assert (await FUNCTIONS["change_feed"](as_role("Bridge.Admin"))).status_code == 200
    finally:
        monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
        settings.cache_clear()
