"""Events to the provider without I/O: stable ids, no secret, the outbox's contract, the publisher, the cursor."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence

import pytest

from shared.adapters.events import TableEventOutbox
from shared.domain.events import Event, EventRefused, EventType, new_event
from shared.errors import InvalidInput, Throttled
from shared.services.events import ChangeFeed, EventPublisher, decode_cursor, encode_cursor
from tests.fake_repositories import FakeLeases
from tests.fakes import FakeClock, FakeEntityStore

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def event(n: int, change: str = "1") -> Event:
    return new_event(EventType.PASSKEY_REVOKED, connection="contoso", subject=f"u{n}", change=change, time=NOW,
                     userId=f"u{n}", passkeyId=f"m{n}")


def test_the_id_is_the_change_same_change_same_id() -> None:
    assert event(1).id == event(1).id
    assert event(1).id != event(1, change="2").id
    assert event(1).id != event(2).id
    other = new_event(EventType.PASSKEY_REGISTERED, connection="contoso", subject="u1", change="1", time=NOW)
    assert other.id != event(1).id  # the type is part of the change


def test_the_cloudevent_round_trips() -> None:
    doc = event(1).to_json()
    assert doc["specversion"] == "1.0"
    assert doc["source"] == "/connections/contoso"
    assert doc["type"] == "bridge.passkey.revoked"
    assert doc["time"] == "2026-05-01T12:00:00Z"
    assert Event.from_json(doc) == event(1)


@pytest.mark.parametrize("member", ["password", "newPassword", "clientSecret", "privateKey", "token", "key",
                                    "credential", "pem"])
def test_a_secret_looking_member_is_refused(member: str) -> None:
    with pytest.raises(EventRefused, match=member):
        new_event(EventType.PASSWORD_ROTATED, connection="c", subject="u", change="v", time=NOW,
                  **{member: "hunter2"})


def test_only_short_scalars_and_lists_of_ids_are_carried() -> None:
    with pytest.raises(EventRefused, match="type dict"):
        new_event(EventType.USER_UPDATED, connection="c", subject="u", change="v", time=NOW, extra={"a": 1})
    with pytest.raises(EventRefused, match="characters"):
        new_event(EventType.USER_UPDATED, connection="c", subject="u", change="v", time=NOW, note="x" * 600)
    ok = new_event(EventType.PASSWORD_ROTATED, connection="c", subject="u", change="v", time=NOW,
                   secretVersion="abc", rotationId="r1", groupIds=["g1"])
    assert ok.data == {"secretVersion": "abc", "rotationId": "r1", "groupIds": ["g1"]}


async def test_a_change_recorded_twice_is_one_event() -> None:
    outbox = TableEventOutbox(FakeEntityStore(), FakeClock())
    assert await outbox.record([event(1), event(2), event(1)]) == 2
    assert await outbox.record([event(1)]) == 0
    assert [p.event.id for p in await outbox.pending("contoso", 10)] == [event(1).id, event(2).id]


async def test_release_publishes_only_the_proven_events_of_a_run() -> None:
    outbox = TableEventOutbox(FakeEntityStore(), FakeClock())
    await outbox.hold("contoso", "run-1", [event(1), event(2)])
    assert await outbox.pending("contoso", 10) == []
    assert {e.id for e in (await outbox.held("contoso"))["run-1"]} == {event(1).id, event(2).id}
    await outbox.release("contoso", "run-1", {event(2).id})
    assert [p.event.id for p in await outbox.pending("contoso", 10)] == [event(2).id]
    assert await outbox.held("contoso") == {}
    assert await outbox.record([event(1)]) == 1  # the dropped one was never announced: it may come again


class Sink:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.sent: list[str] = []

    async def publish(self, events: Sequence[Event]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent += [e.id for e in events]


async def test_a_throttled_topic_leaves_events_pending_and_the_lease_free() -> None:
    clock = FakeClock()
    outbox = TableEventOutbox(FakeEntityStore(), clock)
    leases = FakeLeases(clock)
    await outbox.record([event(1), event(2)])
    with pytest.raises(Throttled):
        await EventPublisher(log_=outbox, leases=leases, sink=Sink(Throttled("busy", retry_after=3)),
                             clock=clock).drain("contoso")
    sink = Sink()
    drained = await EventPublisher(log_=outbox, leases=leases, sink=sink, clock=clock).drain("contoso")
    assert drained.published == 2
    assert sink.sent == [event(1).id, event(2).id]
    assert await outbox.pending("contoso", 10) == []
    # Sequenced before the failed publish, kept: the feed holds each event once, in order.
    feed = await ChangeFeed(outbox).page("contoso", after=None)
    assert [e.id for e in feed.events] == [event(1).id, event(2).id]


async def test_a_second_publisher_waits_for_the_lease() -> None:
    clock = FakeClock()
    outbox = TableEventOutbox(FakeEntityStore(), clock)
    leases = FakeLeases(clock)
    await outbox.record([event(1)])
    assert await leases.take("events", "contoso", "other", 60)
    assert (await EventPublisher(log_=outbox, leases=leases, sink=Sink(), clock=clock).drain("contoso")).busy
    clock.advance(seconds=61)  # a lease that was not given back expires
    assert (await EventPublisher(log_=outbox, leases=leases, sink=Sink(), clock=clock).drain("contoso")).published == 1


async def test_events_past_thirty_days_are_purged_from_the_feed() -> None:
    clock = FakeClock()
    outbox = TableEventOutbox(FakeEntityStore(), clock)
    leases = FakeLeases(clock)
    publisher = EventPublisher(log_=outbox, leases=leases, sink=None, clock=clock)
    await outbox.record([event(1)])
    await publisher.drain("contoso")
    clock.advance(days=29)
    await outbox.record([event(2)])
    await publisher.drain("contoso")
    clock.advance(days=2)
    assert await publisher.purge("contoso") == 1
    assert [e.id for e in (await ChangeFeed(outbox).page("contoso", after=None)).events] == [event(2).id]


def test_cursors_are_opaque_and_checked() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    assert decode_cursor(None) == 0
    for forged in ("not-a-cursor", base64.urlsafe_b64encode(b"v1:-5").decode(),
                   base64.urlsafe_b64encode(b"v2:5").decode(), "%%%"):
        with pytest.raises(InvalidInput, match="after"):
            decode_cursor(forged)


async def test_top_is_bounded() -> None:
    feed = ChangeFeed(TableEventOutbox(FakeEntityStore(), FakeClock()))
    for top in (0, 1001):
        with pytest.raises(InvalidInput, match="top"):
            await feed.page("contoso", after=None, top=top)


async def test_the_syncs_recovery_leaves_another_services_held_run_alone() -> None:
    from shared.services.events import recover_user_events

    outbox = TableEventOutbox(FakeEntityStore(), FakeClock())
    await outbox.hold("contoso", "enrollment-x", [new_event(EventType.ENROLLMENT_CHANGED, connection="contoso",
                                                            subject="u1", change="a", time=NOW, enrollment="x")])
    async def no_rows(ids: object) -> dict[str, object]:
        return {}

    assert await recover_user_events(outbox, "contoso", no_rows) == 0
    assert list(await outbox.held("contoso")) == ["enrollment-x"]
