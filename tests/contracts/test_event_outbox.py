"""The EventOutbox and EventLog contract, over the in-memory store and over Azurite."""

from __future__ import annotations

import datetime as dt
import uuid

from local.memory import FakeClock
from shared.domain.events import Event, EventType, new_event
from shared.services.ports import EventLog, EventOutbox

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


class Outbox(EventOutbox, EventLog):
    """Both views of one outbox."""


def connection() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def event(conn: str, n: int, change: str = "1") -> Event:
    return new_event(EventType.PASSKEY_REVOKED, connection=conn, subject=f"u{n}", change=change, time=NOW,
                     userId=f"u{n}", passkeyId=f"m{n}")


async def test_an_event_is_recorded_once_and_pending_in_order(event_outbox: Outbox) -> None:
    conn = connection()
    assert await event_outbox.record([event(conn, 1), event(conn, 2), event(conn, 1)]) == 2
    assert await event_outbox.record([event(conn, 1), event(conn, 3)]) == 1
    pending = await event_outbox.pending(conn, 10)
    assert [p.event for p in pending] == [event(conn, 1), event(conn, 2), event(conn, 3)]
    assert len({p.ticket for p in pending}) == 3
    assert [p.event for p in await event_outbox.pending(conn, 2)] == [event(conn, 1), event(conn, 2)]
    assert await event_outbox.pending(connection(), 10) == []


async def test_held_events_wait_for_their_run(event_outbox: Outbox) -> None:
    conn = connection()
    await event_outbox.hold(conn, "run-1", [event(conn, 1), event(conn, 2), event(conn, 1)])
    await event_outbox.hold(conn, "run-2", [event(conn, 3)])
    assert await event_outbox.pending(conn, 10) == []
    held = await event_outbox.held(conn)
    assert {run: sorted(e.subject for e in events) for run, events in held.items()} == {
        "run-1": ["u1", "u2"], "run-2": ["u3"]}
    await event_outbox.release(conn, "run-1", {event(conn, 2).id})
    assert [p.event for p in await event_outbox.pending(conn, 10)] == [event(conn, 2)]
    assert set(await event_outbox.held(conn)) == {"run-2"}
    # The dropped one was never announced: the same change may be recorded later.
    assert await event_outbox.record([event(conn, 1)]) == 1
    await event_outbox.release(conn, "run-2", held=[event(conn, 3)])
    assert [p.event.subject for p in await event_outbox.pending(conn, 10)] == ["u2", "u1", "u3"]
    assert await event_outbox.held(conn) == {}


async def test_sequencing_gives_each_event_one_place_and_the_feed_pages(event_outbox: Outbox) -> None:
    conn = connection()
    await event_outbox.record([event(conn, n) for n in range(1, 6)])
    pending = await event_outbox.pending(conn, 10)
    first = await event_outbox.sequence(conn, [p.event for p in pending[:3]])
    assert [i.sequence for i in first] == [1, 2, 3]
    again = await event_outbox.sequence(conn, [p.event for p in pending])
    assert [i.sequence for i in again] == [1, 2, 3, 4, 5]
    await event_outbox.published(conn, [p.ticket for p in pending[:4]])
    assert [p.event for p in await event_outbox.pending(conn, 10)] == [event(conn, 5)]
    feed = await event_outbox.feed(conn, 0, 10)
    assert [(i.sequence, i.event) for i in feed] == [(n, event(conn, n)) for n in range(1, 6)]
    assert [i.sequence for i in await event_outbox.feed(conn, 2, 2)] == [3, 4]
    assert await event_outbox.feed(conn, 5, 10) == []


async def test_purge_forgets_feed_items_older_than_the_cut(event_outbox: Outbox, contract_clock: FakeClock) -> None:
    conn = connection()
    await event_outbox.record([event(conn, 1)])
    await event_outbox.sequence(conn, [p.event for p in await event_outbox.pending(conn, 10)])
    contract_clock.advance(days=10)
    await event_outbox.record([event(conn, 2)])
    pending = await event_outbox.pending(conn, 10)
    await event_outbox.sequence(conn, [p.event for p in pending])
    await event_outbox.published(conn, [p.ticket for p in pending])
    assert await event_outbox.purge(conn, contract_clock.now() - dt.timedelta(days=5)) == 1
    assert [i.sequence for i in await event_outbox.feed(conn, 0, 10)] == [2]
