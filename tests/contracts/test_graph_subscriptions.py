"""SubscriptionApi (change notifications) on the in-memory tenant and on the Graph adapter against the
simulator: create (Graph validates the URLs first), renew, reauthorize, list, delete; a refused validation as
Configuration, a subscription gone as NotFound, and deleting one gone as done."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from shared.errors import Configuration, InvalidInput, NotFound
from tests.fixtures.graph_contracts import GraphSubject
from tests.fixtures.notifications import Receiver


def _in(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_subscription_is_created_renewed_listed_and_deleted(graph: GraphSubject, receiver: Receiver) -> None:
    made = await graph.subscriptions.create(
        resource="groups", change_type="updated", notification_url=f"{receiver.url}/hook",
        lifecycle_url=f"{receiver.url}/life", expires=_in(600), client_state="contract-state")
    try:
        assert made.id
        assert made.resource == "groups"
        assert made.notification_url == f"{receiver.url}/hook"
        assert abs((made.expires - _in(600)).total_seconds()) < 120
        assert made.expires.tzinfo is not None
        assert made.id in {s.id for s in await graph.subscriptions.list()}

        renewed = await graph.subscriptions.renew(made.id, _in(2000))
        assert renewed.id == made.id
        assert abs((renewed.expires - _in(2000)).total_seconds()) < 120
        await graph.subscriptions.reauthorize(made.id)
        with pytest.raises(InvalidInput):
            await graph.subscriptions.renew(made.id, _in(60 * 24 * 40))  # past Graph's 41,760 minutes
    finally:
        await graph.subscriptions.delete(made.id)
    assert made.id not in {s.id for s in await graph.subscriptions.list()}
    await graph.subscriptions.delete(made.id)  # gone counts as deleted
    with pytest.raises(NotFound):
        await graph.subscriptions.renew(made.id, _in(600))
    with pytest.raises(NotFound):
        await graph.subscriptions.reauthorize(made.id)


async def test_a_short_expiry_is_moved_to_graphs_shortest(graph: GraphSubject, receiver: Receiver) -> None:
    made = await graph.subscriptions.create(
        resource="users", change_type="updated", notification_url=f"{receiver.url}/hook",
        lifecycle_url=f"{receiver.url}/life", expires=_in(5), client_state="contract-state")
    try:
        assert made.expires >= _in(44)
    finally:
        await graph.subscriptions.delete(made.id)


async def test_a_url_that_fails_validation_is_a_configuration_error(graph: GraphSubject) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/hook"
    await graph.admin.unreachable(url)
    with pytest.raises(Configuration):
        await graph.subscriptions.create(resource="groups", change_type="updated", notification_url=url,
                                         lifecycle_url=url, expires=_in(600), client_state="contract-state")
