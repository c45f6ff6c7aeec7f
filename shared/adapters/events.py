"""Events to the provider: the outbox and change feed in Table storage, and the Event Grid topic.

Table `events`, one partition per connection (so every row of a connection can be written in one
entity-group transaction, https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions):

- `e|<event id>`: the event, recorded once per id (with its feed sequence once it has one);
- `q|<recorded at, ms>|<order in the process>|<event id>`: the pending list (with the event), written in
  the same transaction as a ready `e|` row and deleted once the event is published;
- `h|<run>|<event id>`: an event of a run, held until the run is released;
- `s|<sequence>`: the change feed, written in the same transaction as the `e|` row gets its sequence;
- `seq`: the next feed sequence. The one publisher of a connection holds its lease in shared/adapters/leases.py.

Publishing uses azure-eventgrid's EventGridPublisherClient with azure-core's CloudEvent, on a topic's
key (`aeg-sas-key`, local stand-in) or the app's identity (the EventGrid Data Sender role).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

from shared.adapters.tables import check_key
from shared.domain.events import Event
from shared.errors import BridgeError, Conflict, InvalidInput, PermissionDenied, Throttled, Transient
from shared.services.ports import BatchEntityStore, Entity, EntityStore, FeedItem, Pending
from shared.topology import Table

log = logging.getLogger(__name__)

SENDER_ROLE = "EventGrid Data Sender"
#: Events per publish call: Event Grid takes 1 MB per request (https://learn.microsoft.com/azure/event-grid/quotas-limits);
#: the bridge's events are well under 1 KB each.
PUBLISH_BATCH = 100
# Two rows per event (e| and s|, or e| and q|) and 100 rows per transaction: 50 events per transaction.
_PAIRS = 50
_SEQ = "seq"
Nudge = Callable[[str], Awaitable[None]]
_ORDER = itertools.count()


def _ms(moment: dt.datetime) -> str:
    return f"{int(moment.timestamp() * 1000):015d}"


def _feed_key(sequence: int) -> str:
    return f"s|{sequence:012d}"


class TableEventOutbox:
    """EventOutbox and EventLog of shared.services.ports on Table storage."""

    def __init__(self, entities: EntityStore, clock: Any, nudge: Nudge | None = None) -> None:
        self._entities = entities
        self._clock = clock
        self._nudge = nudge

    # ------------------------------------------------------------------ writing rows

    async def _write(self, rows: Sequence[Entity]) -> None:
        """Rows of one partition, in all-or-nothing groups where the store can (pairs kept together)."""
        if isinstance(self._entities, BatchEntityStore):
            for start in range(0, len(rows), 2 * _PAIRS):
                await self._entities.upsert_many(Table.EVENTS, rows[start:start + 2 * _PAIRS])
        else:
            for row in rows:
                await self._entities.upsert(Table.EVENTS, row)

    def _event_row(self, event: Event, **extra: Any) -> Entity:
        data = {"event": event.to_json(), "type": event.type.value, "recordedAt": self._clock.now().isoformat(),
                **extra}
        return Entity(event.connection, f"e|{event.id}", data)

    async def _new(self, events: Sequence[Event]) -> list[Event]:
        """The events whose id is not recorded yet (one id once, even twice in `events`)."""
        unique = list({e.id: e for e in events}.values())
        found = await asyncio.gather(*(self._entities.get(Table.EVENTS, e.connection, f"e|{e.id}") for e in unique))
        return [e for e, row in zip(unique, found, strict=True) if row is None]

    # ------------------------------------------------------------------ EventOutbox

    async def record(self, events: Sequence[Event]) -> int:
        """Record events for publishing (an id already recorded is skipped); nudge the publisher."""
        fresh = await self._new(events)
        by_connection: dict[str, list[Event]] = {}
        for event in fresh:
            by_connection.setdefault(event.connection, []).append(event)
        for connection, items in by_connection.items():
            await self._write(self._ready_rows(items))
            if self._nudge is not None:
                await self._nudge(connection)
        return len(fresh)

    def _ready_rows(self, events: Sequence[Event]) -> list[Entity]:
        now = self._clock.now()
        rows: list[Entity] = []
        for event in events:
            rows.append(self._event_row(event))
            # The process's own counter keeps its records in order within one millisecond.
            rows.append(Entity(event.connection, f"q|{_ms(now)}|{next(_ORDER) % 10**9:09d}|{event.id}",
                               {"id": event.id, "event": event.to_json()}))
        return rows

    async def hold(self, connection: str, run: str, events: Sequence[Event]) -> None:
        """Keep a run's events back (rows `h|<run>|<id>`) until `release`."""
        check_key("run", run)
        unique = {e.id: e for e in events}.values()
        await self._write([Entity(connection, f"h|{run}|{e.id}", {"event": e.to_json()}) for e in unique])

    async def held(self, connection: str) -> dict[str, list[Event]]:
        """Held events of runs never released, per run (one query over the `h|` rows)."""
        found: dict[str, list[Event]] = {}
        async for row in self._entities.query(Table.EVENTS, connection, row_key_from="h|", row_key_to="h}"):
            run = row.row_key[2:].rpartition("|")[0]
            found.setdefault(run, []).append(Event.from_json(row.data["event"]))
        return found

    async def release(self, connection: str, run: str, ids: Collection[str] | None = None, *,
                      held: Sequence[Event] | None = None) -> None:
        """Record the run's held events for publishing (only `ids` when given), then forget the held rows.

        `held`: the events the caller held under `run` itself, in its order (their rows are not read back).
        """
        if held is None:
            rows = [row async for row in self._entities.query(Table.EVENTS, connection, row_key_from=f"h|{run}|",
                                                              row_key_to=f"h|{run}}}")]
            keys = [r.row_key for r in rows]
            keep = [Event.from_json(r.data["event"]) for r in rows]
        else:
            keep = list({e.id: e for e in held}.values())
            keys = [f"h|{run}|{e.id}" for e in keep]
        if ids is not None:
            keep = [e for e in keep if e.id in ids]
        fresh = await self._new(keep)
        await self._write(self._ready_rows(fresh))
        await asyncio.gather(*(self._entities.delete(Table.EVENTS, connection, k) for k in keys))
        if fresh and self._nudge is not None:
            await self._nudge(connection)

    # ------------------------------------------------------------------ EventLog

    async def pending(self, connection: str, limit: int) -> list[Pending]:
        """Ready events in the order they were recorded (each `q|` row carries its event: one query)."""
        found: list[Pending] = []
        async for row in self._entities.query(Table.EVENTS, connection, row_key_from="q|", row_key_to="q}",
                                              limit=limit):
            found.append(Pending(Event.from_json(row.data["event"]), row.row_key))
        return found

    async def _allocate(self, connection: str, count: int) -> int:
        """The first of `count` new feed sequences (the counter row is ETag-guarded)."""
        for _ in range(20):
            found = await self._entities.get(Table.EVENTS, connection, _SEQ)
            first = int(found.data.get("next", 1)) if found else 1
            row = Entity(connection, _SEQ, {"next": first + count}, found.etag if found else None)
            try:
                await (self._entities.update(Table.EVENTS, row) if found else self._entities.insert(Table.EVENTS, row))
            except Conflict:
                continue
            return first
        raise Transient(f"the feed sequence of {connection} is contended; try again")

    async def sequence(self, connection: str, events: Sequence[Event]) -> list[FeedItem]:
        """Give events a feed sequence (keeping one already given) and write the feed rows with them."""
        rows = await asyncio.gather(*(self._entities.get(Table.EVENTS, connection, f"e|{e.id}") for e in events))
        items: list[FeedItem] = []
        new = [(e, r) for e, r in zip(events, rows, strict=True) if r is None or "sequence" not in r.data]
        first = await self._allocate(connection, len(new)) if new else 0
        writes: list[Entity] = []
        numbers = {e.id: first + i for i, (e, _) in enumerate(new)}
        for event, row in zip(events, rows, strict=True):
            number = int(row.data["sequence"]) if row is not None and "sequence" in row.data else numbers[event.id]
            items.append(FeedItem(number, event))
            if event.id in numbers:
                data = dict(row.data) if row is not None else self._event_row(event).data
                writes.append(Entity(connection, f"e|{event.id}", {**data, "sequence": number}))
                writes.append(Entity(connection, _feed_key(number), {"id": event.id, "event": event.to_json(),
                                                                     "at": self._clock.now().isoformat()}))
        await self._write(writes)
        return items

    async def published(self, connection: str, tickets: Sequence[str]) -> None:
        """Drop published events from the pending list (their `e|` rows keep their feed sequence)."""
        await asyncio.gather(*(self._entities.delete(Table.EVENTS, connection, t) for t in tickets))

    async def feed(self, connection: str, after: int, top: int) -> list[FeedItem]:
        """Feed items after a sequence, in order."""
        items: list[FeedItem] = []
        async for row in self._entities.query(Table.EVENTS, connection, row_key_from=_feed_key(after + 1),
                                              row_key_to="s}", limit=top):
            items.append(FeedItem(int(row.row_key[2:]), Event.from_json(row.data["event"])))
        return items

    async def purge(self, connection: str, before: dt.datetime) -> int:
        """Delete feed items and published events recorded before `before`."""
        gone = 0
        async for row in self._entities.query(Table.EVENTS, connection, row_key_from="s|", row_key_to="s}"):
            if dt.datetime.fromisoformat(str(row.data.get("at"))) >= before:
                break
            await self._entities.delete(Table.EVENTS, connection, row.row_key)
            gone += 1
        async for row in self._entities.query(Table.EVENTS, connection, row_key_from="e|", row_key_to="e}"):
            if "sequence" in row.data and dt.datetime.fromisoformat(str(row.data.get("recordedAt"))) < before:
                await self._entities.delete(Table.EVENTS, connection, row.row_key)
        return gone


# ----------------------------------------------------------------------------- Event Grid


def cloud_event(event: Event) -> CloudEvent[Any]:
    """azure-core's CloudEvent for one event (the SDK serialises it as CloudEvents 1.0 JSON)."""
    return CloudEvent(source=event.source, type=event.type.cloud_type, data=event.data, subject=event.subject,
                      id=event.id, time=event.time, datacontenttype="application/json")


def translate(exc: Exception, endpoint: str) -> BridgeError:
    """Event Grid's answer in the taxonomy; the role or setting to fix is named."""
    if isinstance(exc, ClientAuthenticationError):
        return PermissionDenied(f"Event Grid refused the publish to {endpoint}: grant the app's identity the "
                                f"'{SENDER_ROLE}' role on the topic, or check EVENTGRID_TOPIC_KEY", role=SENDER_ROLE)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        headers = getattr(exc.response, "headers", None) or {}
        if status in (429, 503):
            try:
                after = max(float(headers.get("Retry-After") or 1), 0.0)
            except ValueError:
                after = 1.0
            return Throttled(f"Event Grid is throttling publishes to {endpoint} ({status})", retry_after=after,
                             scope="eventgrid")
        if status == 403:
            return PermissionDenied(f"Event Grid refused the publish to {endpoint}: grant the app's identity the "
                                    f"'{SENDER_ROLE}' role on the topic", role=SENDER_ROLE)
        if status >= 500 or status == 408:
            return Transient(f"Event Grid failed with {status} on {endpoint}")
        return InvalidInput(f"Event Grid rejected the events ({status}): {exc.reason or ''}".strip())
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError)):
        return Transient(f"Event Grid at {endpoint} could not be reached: {type(exc).__name__}")
    return Transient(f"unexpected failure publishing to {endpoint}: {type(exc).__name__}")


class EventGridSink:
    """EventSink on an Event Grid topic (EVENTGRID_TOPIC_ENDPOINT), with azure-core's retries.

    The client retries 408, 429 and 5xx answers itself, honouring Retry-After
    (https://learn.microsoft.com/azure/event-grid/troubleshoot-errors); what is still failing afterwards
    is raised as Throttled or Transient so the publishing message comes back later.
    """

    def __init__(self, endpoint: str, *, key: str | None = None, credential: AsyncTokenCredential | None = None,
                 verify: str | bool = True, retry_total: int = 3) -> None:
        if key is None and credential is None:
            raise InvalidInput("Event Grid needs EVENTGRID_TOPIC_KEY or the app's identity",
                               field="EVENTGRID_TOPIC_KEY")
        self._endpoint = endpoint
        auth: AzureKeyCredential | AsyncTokenCredential
        if key:
            auth = AzureKeyCredential(key)
        else:
            assert credential is not None
            auth = credential
        self._client = EventGridPublisherClient(endpoint, auth, connection_verify=verify,
                                                retry_total=retry_total, retry_backoff_factor=0.2,
                                                retry_backoff_max=5)
        self._id = uuid.uuid4().hex[:8]

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish in batches of PUBLISH_BATCH events."""
        for start in range(0, len(events), PUBLISH_BATCH):
            batch = [cloud_event(e) for e in events[start:start + PUBLISH_BATCH]]
            try:
                await self._client.send(batch)
            except Exception as exc:
                raise translate(exc, self._endpoint) from None

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._client.close()
