"""What every queue function shares: the host's retry limit and message parsing."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func

from shared.messages import WorkMessage


def _max_dequeue_count() -> int:
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text(encoding="utf-8"))
    return int(host.get("extensions", {}).get("queues", {}).get("maxDequeueCount", 5))


#: host.json extensions.queues.maxDequeueCount: after this many deliveries the host poisons a message.
MAX_DEQUEUE_COUNT = _max_dequeue_count()


def work_message(msg: func.QueueMessage) -> WorkMessage:
    """The message's envelope; a malformed one raises InvalidInput (and ends in the poison queue)."""
    return WorkMessage.from_json(msg.get_body())
