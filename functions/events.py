"""Events to the provider: the publisher (queue nudge and timer sweep) and the change feed (docs/events.md)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

import azure.functions as func
from pydantic import Field

from functions.answers import Query
from functions.http import ADMIN, DEVICES, Plain, Reply, route
from functions.work import work_message
from shared import logs
from shared.bootstrap import bridge
from shared.services.events import MAX_TOP, FeedPage
from shared.topology import Queue

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("events_work")
@bp.queue_trigger(arg_name="msg", queue_name=Queue.EVENTS.value, connection="AzureWebJobsStorage")
async def events_work(msg: func.QueueMessage) -> None:
    """Publish the connection's pending events; failures are raised so the host retries the nudge."""
    message = work_message(msg)
    app = bridge()
    with logs.correlation(message.correlation_id):
        deferrals = int(message.args.get("deferrals", 0))
        delay = await app.event_publisher.nudged(app.connection(message.connection).name, deferrals=deferrals)
        if delay is not None:
            again = message.model_copy(update={"args": {**message.args, "deferrals": deferrals + 1}})
            await app.queue.send(Queue.EVENTS, again.model_dump(mode="json", by_alias=True), delay_seconds=delay)


@bp.function_name("events_timer")
@bp.timer_trigger(arg_name="timer", schedule="%EVENTS_SCHEDULE%", run_on_startup=False)
async def events_timer(timer: func.TimerRequest) -> None:
    """The safety net: release the enrollment, passkey and export events a stopped process left held when their
    change is stored (drop the others), and publish what a nudge missed."""
    app = bridge()
    with logs.correlation(str(uuid.uuid4())):
        for conn in app.connections():
            await app.devices.recover_enrollment_events(conn.name)
            await app.export.recover_events(conn.name)
            await app.event_publisher.drain(conn.name)


@bp.function_name("events_purge")
@bp.timer_trigger(arg_name="timer", schedule="0 15 3 * * *", run_on_startup=False)
async def events_purge(timer: func.TimerRequest) -> None:
    """Once a day: forget events and feed items older than 30 days."""
    app = bridge()
    with logs.correlation(str(uuid.uuid4())):
        for conn in app.connections():
            gone = await app.event_publisher.purge(conn.name)
            log.info("events: %d feed items of %s past 30 days removed", gone, conn.name)


class EventsQuery(Query):
    """GET connections/{c}/events: where to read on, and how many."""

    after: Annotated[str | None, Field(description="the `cursor` of the previous page; absent: from the oldest")] = None
    top: Annotated[int, Field(ge=1, le=MAX_TOP, description="events per page")] = 100


@route(bp, "connections/{c}/events", "GET", roles=[ADMIN, DEVICES], query=EventsQuery, answers={200: FeedPage})
async def change_feed(call: Plain) -> Reply:
    """The connection's published events (CloudEvents, docs/events.md) after the cursor `after`, in order."""
    query = EventsQuery.model_validate(dict(call.query))
    page = await bridge().change_feed.page(call.connection.name, after=query.after, top=query.top)
    return Reply(200, page.model_dump(mode="json", by_alias=True))
