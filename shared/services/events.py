"""Events to the provider: publish what the outbox holds, and serve the change feed (docs/events.md).

Services record an event with a stable id after the state change it reports, on every path that makes
or replays that change (a redelivered message records it again; the outbox keeps one per id). The
publisher here takes the connection's lease (so the feed's order is the publishing order), gives each
pending event its feed sequence, publishes to Event Grid, and marks it published. A crash anywhere
leaves the event pending; the next drain publishes it again with the same id, which subscribers
deduplicate.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.directory import UserRow, UserState
from shared.domain.events import RETENTION, Event, EventType, digest, new_event
from shared.domain.sync import SyncPlan
from shared.errors import InvalidInput, Throttled
from shared.services.ports import Clock, EventLog, EventOutbox, EventSink, FeedItem, Leases

log = logging.getLogger(__name__)

#: Events taken from the outbox per round.
ROUND = 100
#: How long one drain may hold the connection's lease.
LEASE_SECONDS = 60.0
#: The scope of a connection's publishing lease (shared.services.ports.Leases).
LEASE_SCOPE = "events"
MAX_TOP = 1000
#: A nudge that finds another publisher at work comes back this often, then the sweep takes over.
MAX_DEFERRALS = 3


@dataclass(frozen=True)
class Drained:
    """What one drain did: events published, and whether another publisher held the lease."""

    published: int
    busy: bool = False


class EventPublisher:
    """Publishes each connection's pending events, one publisher per connection at a time."""

    def __init__(self, *, log_: EventLog, leases: Leases, sink: EventSink | None, clock: Clock) -> None:
        self._log = log_
        self._leases = leases
        self._sink = sink
        self._clock = clock

    async def nudged(self, connection: str, *, deferrals: int) -> float | None:
        """A nudge's drain. Returns the seconds after which to look again when another instance holds the lease
        (it may have read the list before this event arrived) or Event Grid is throttling, while the nudge was
        put back fewer than MAX_DEFERRALS times; None when done (the timer's sweep takes over from there)."""
        try:
            drained = await self.drain(connection)
        except Throttled as err:
            return max(1.0, err.retry_after) if deferrals < MAX_DEFERRALS else None
        return 1.0 if drained.busy and deferrals < MAX_DEFERRALS else None

    async def drain(self, connection: str, *, limit: int = 10_000) -> Drained:
        """Publish pending events of `connection` until none is left (or `limit`)."""
        owner = uuid.uuid4().hex
        lease = await self._leases.take(LEASE_SCOPE, connection, owner, LEASE_SECONDS)
        if lease is None:
            return Drained(0, busy=True)
        done = 0
        try:
            while done < limit:
                pending = await self._log.pending(connection, ROUND)
                if not pending:
                    break
                # One id once per round (a change recorded twice at the same moment has two tickets).
                events = list({p.event.id: p.event for p in pending}.values())
                await self._log.sequence(connection, events)
                if self._sink is not None:
                    await self._sink.publish(events)
                await self._log.published(connection, [p.ticket for p in pending])
                done += len(events)
                lease = await self._leases.take(LEASE_SCOPE, connection, owner, LEASE_SECONDS) or lease
        finally:
            await self._leases.release(lease)
        if done:
            log.info("events: %d published for %s", done, connection)
        return Drained(done)

    async def purge(self, connection: str) -> int:
        """Forget events older than the retention (30 days)."""
        return await self._log.purge(connection, self._clock.now() - RETENTION)


# ----------------------------------------------------------------------------- the change feed


class FeedEvent(BaseModel):
    """One CloudEvent as the feed returns it."""

    model_config = ConfigDict(populate_by_name=True)

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    data: dict[str, Any]


class FeedPage(BaseModel):
    """GET connections/{c}/events: the events after a cursor, in order, and the cursor to ask next."""

    model_config = ConfigDict(populate_by_name=True)

    events: list[FeedEvent]
    cursor: Annotated[str, Field(description="pass as `after` to read on; unchanged when nothing is new")]
    has_more: Annotated[bool, Field(alias="hasMore")]


def encode_cursor(sequence: int) -> str:
    """An opaque cursor for a feed position."""
    return base64.urlsafe_b64encode(f"v1:{sequence}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The feed position of a cursor; InvalidInput names the parameter."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, number = text.partition(":")
        if version != "v1" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("after is not a cursor this feed returned", field="after") from None


class ChangeFeed:
    """Reads a connection's published events in feed order."""

    def __init__(self, log_: EventLog) -> None:
        self._log = log_

    async def page(self, connection: str, *, after: str | None, top: int = 100) -> FeedPage:
        """Up to `top` events after the cursor `after`."""
        if not 1 <= top <= MAX_TOP:
            raise InvalidInput(f"top must be between 1 and {MAX_TOP}", field="top")
        position = decode_cursor(after)
        items: list[FeedItem] = await self._log.feed(connection, position, top + 1)
        more = len(items) > top
        items = items[:top]
        last = items[-1].sequence if items else position
        return FeedPage(events=[FeedEvent.model_validate(i.event.to_json()) for i in items],
                        cursor=encode_cursor(last), has_more=more)


async def announce(outbox: EventOutbox | None, *events: Event) -> None:
    """Record events when the service has an outbox (a service built without one announces nothing)."""
    if outbox is not None and events:
        await outbox.record(list(events))


# ----------------------------------------------------------------------------- the sync's user events


def user_event(connection: str, kind: EventType, row: UserRow, time: dt.datetime) -> Event:
    """A user.* event for `row` as written; its id is derived from the row, so the stored row proves it."""
    stored = row.to_row()
    return new_event(kind, connection=connection, subject=row.id, change=digest(stored), time=time, userId=row.id,
                     state=row.state.value, accountEnabled=row.account_enabled, groupIds=list(row.groups))


USER_TYPES = frozenset({EventType.USER_IMPORTED, EventType.USER_UPDATED, EventType.USER_DEACTIVATED,
                        EventType.USER_REMOVED, EventType.USER_MISSING_IN_ENTRA})


def _kind(old: UserRow | None, new: UserRow) -> EventType:
    if old is None:
        return EventType.USER_IMPORTED
    if new.state is UserState.REMOVED:
        return EventType.USER_REMOVED
    if new.state is UserState.MISSING_IN_ENTRA:
        return EventType.USER_MISSING_IN_ENTRA
    if (new.state is UserState.DEACTIVATED or not new.account_enabled) and old.active:
        return EventType.USER_DEACTIVATED
    return EventType.USER_UPDATED


def user_events(connection: str, existing: Mapping[str, UserRow], changes: SyncPlan, time: dt.datetime) -> list[Event]:
    """One event per planned row: imported, updated, deactivated, removed or missing in Entra."""
    return [user_event(connection, _kind(existing.get(row.id), row), row, time)
            for row in (*changes.add, *changes.update, *changes.remove)]


async def recover_user_events(outbox: EventOutbox | None, connection: str,
                              rows: Callable[[Collection[str]], Awaitable[Mapping[str, UserRow]]]) -> int:
    """Release the held events of a run that stopped before releasing them, when the stored row proves the change.

    A held event whose user row is stored exactly as planned happened and is published; one whose row
    differs (the run stopped before writing it) did not, and is dropped: the next run plans it again.
    Only the rows of the held events' users are read (`rows`: point reads by user id). Returns how many
    were released.
    """
    if outbox is None:
        return 0
    released = 0
    for run, held in (await outbox.held(connection)).items():
        if not all(e.type in USER_TYPES for e in held):
            continue  # another service's held run (enrollment), judged by that service
        stored = await rows({e.subject for e in held})
        proven = {e.id for e in held if e.subject in stored
                  and user_event(connection, e.type, stored[e.subject], e.time).id == e.id}
        await outbox.release(connection, run, proven)
        released += len(proven)
    return released
