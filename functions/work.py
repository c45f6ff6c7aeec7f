"""What every queue function shares: the host's retry limit and message parsing."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import azure.functions as func

from shared.messages import WorkMessage
from shared.topology import Queue

#: Operational events for Application Insights (shared/adapters/telemetry.py): the alerts read them.
events = logging.getLogger("bridge.events")


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
