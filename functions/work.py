"""What every queue and timer function shares: the host's retry limit, message parsing, and failure handling."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import azure.functions as func

from shared.bootstrap import bridge
from shared.errors import BridgeError, Conflict, root_cause, translated
from shared.messages import WorkMessage

log = logging.getLogger(__name__)


def _max_dequeue_count() -> int:
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text(encoding="utf-8"))
    return int(host.get("extensions", {}).get("queues", {}).get("maxDequeueCount", 5))


#: host.json extensions.queues.maxDequeueCount: after this many deliveries the host poisons a message.
MAX_DEQUEUE_COUNT = _max_dequeue_count()


def work_message(msg: func.QueueMessage) -> WorkMessage:
    """The message's envelope; a malformed one raises InvalidInput (and ends in the poison queue)."""
    return WorkMessage.from_json(msg.get_body())


def worth_retrying(err: BridgeError) -> bool:
    """Whether delivering a message again may succeed: a transient failure, or a lease another run holds."""
    cause = root_cause(err)
    return cause.retryable or isinstance(cause, Conflict)


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
