"""What every queue and timer function shares: the host's retry limit, message parsing, and failure handling."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import azure.functions as func

from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection
from shared.errors import BridgeError, translated, worth_retrying
from shared.messages import WorkMessage
from shared.topology import Queue

#: Operational events for Application Insights (shared/adapters/telemetry.py): the alerts read them.
events = logging.getLogger("bridge.events")

log = logging.getLogger(__name__)


def _max_dequeue_count() -> int:
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text(encoding="utf-8"))
    return int(host.get("extensions", {}).get("queues", {}).get("maxDequeueCount", 5))


#: host.json extensions.queues.maxDequeueCount: after this many deliveries the host poisons a message.
MAX_DEQUEUE_COUNT = _max_dequeue_count()


def work_message(msg: func.QueueMessage) -> WorkMessage:
    """The message's envelope; a malformed one raises InvalidInput (and ends in the poison queue)."""
    return WorkMessage.from_json(msg.get_body())


def watch_last_delivery(queue: Queue) -> Callable[[Callable[[func.QueueMessage], Awaitable[None]]],
                                                  Callable[[func.QueueMessage], Awaitable[None]]]:
    """Report a `queue.poisoned` event when the last allowed delivery of a message fails.

    The host then moves the message to `queue.poison`; the poison alert and the workbook count these
    events. Put it under the `queue_trigger` decorator; the function's signature is kept.
    """
    def decorate(function: Callable[[func.QueueMessage], Awaitable[None]]) -> Callable[[func.QueueMessage],
                                                                                       Awaitable[None]]:
        @functools.wraps(function)
        async def watched(msg: func.QueueMessage) -> None:
            try:
                await function(msg)
            except Exception:
                count = msg.dequeue_count or 1
                if count >= MAX_DEQUEUE_COUNT:
                    events.error("message %s failed delivery %d of %d and moves to the poison queue %s", msg.id,
                                 count, MAX_DEQUEUE_COUNT, queue.poison, extra={"custom_dimensions": {
                                     "event": "queue", "action": "queue.poisoned", "outcome": "poisoned",
                                     "queue": queue.value, "poisonQueue": queue.poison, "messageId": msg.id,
                                     "dequeueCount": count}})
                raise
        return watched
    return decorate


@contextlib.asynccontextmanager
async def job(name: str, connection: str, correlation_id: str, *, queue: bool = False,
              record: bool = True) -> AsyncIterator[None]:
    """One connection's part of a timer or queue job.

    Any failure is translated into the taxonomy, logged, and (with `record`) kept as the job's problem in
    the connection's status until the job next succeeds. A timer goes on with the next connection; a queue
    message is raised for the host to deliver again only when that may help, else it is settled here.
    """
    try:
        yield
    except Exception as exc:
        err = translated(exc)
        if err is exc:
            log.error("%s of %s failed: %s: %s", name, connection, err.title, err.detail)
        else:
            log.exception("%s of %s failed unexpectedly", name, connection)
        if record:
            try:
                await bridge().problems.record(connection, name, err, correlation_id=correlation_id)
            except BridgeError as unrecorded:
                log.error("the problem of %s of %s could not be kept: %s", name, connection, unrecorded.detail)
        if queue and worth_retrying(err):
            if err is exc:
                raise
            raise err from exc
    else:
        if record:
            try:
                await bridge().problems.clear(connection, name)
            except BridgeError as uncleared:
                log.warning("the problem of %s of %s could not be cleared: %s", name, connection, uncleared.detail)


async def each_connection(name: str, step: Callable[[Connection, str], Awaitable[None]], *,
                          wanted: Callable[[Connection], bool] = lambda conn: True) -> None:
    """A timer's pass over the connections: one correlation id, and each wanted connection's `step` run as its
    own `job` (a connection that fails is kept in its status and the next one goes on)."""
    correlation_id = str(uuid.uuid4())
    with logs.correlation(correlation_id):
        for conn in bridge().connections():
            if wanted(conn):
                async with job(name, conn.name, correlation_id):
                    await step(conn, correlation_id)
