"""Poison queues: what the host gave up on, sent back to its queue or dropped by an operator, audited."""

from __future__ import annotations

from dataclasses import dataclass

from shared.services.audit_context import AuditContext
from shared.services.ports import AuditSink, PoisonMessage, PoisonQueues
from shared.topology import Queue

#: The audit connection of a message whose body names none (not a JSON work message).
NO_CONNECTION = "-"


@dataclass(frozen=True)
class PoisonListing:
    """The first messages of a poison queue, and how many it holds."""

    queue: Queue
    messages: list[PoisonMessage]
    approximate_count: int


class PoisonService:
    """Lists, replays and drops poison messages; each replay or drop is an audited operator action."""

    def __init__(self, queues: PoisonQueues, audit: AuditSink) -> None:
        self._queues = queues
        self._audit = audit

    async def listing(self, queue: Queue) -> PoisonListing:
        """A peek at `queue`'s poison queue (nothing changes)."""
        messages, count = await self._queues.poison_messages(queue)
        return PoisonListing(queue, messages, max(count, len(messages)))

    async def replay(self, queue: Queue, ids: set[str] | None, *, actor: str,
                     correlation_id: str) -> list[PoisonMessage]:
        """Send the chosen poison messages (all when `ids` is None) back to `queue`, unchanged."""
        return await self._take(queue, ids, replay=True, actor=actor, correlation_id=correlation_id)

    async def drop(self, queue: Queue, ids: set[str] | None, *, actor: str,
                   correlation_id: str) -> list[PoisonMessage]:
        """Delete the chosen poison messages (all when `ids` is None)."""
        return await self._take(queue, ids, replay=False, actor=actor, correlation_id=correlation_id)

    async def _take(self, queue: Queue, ids: set[str] | None, *, replay: bool, actor: str,
                    correlation_id: str) -> list[PoisonMessage]:
        taken = await self._queues.take_poison(queue, ids, replay=replay)
        for message in taken:
            body = message.body or {}
            # Each message names its own connection: one context per record.
            audit = AuditContext(self._audit, connection=str(body.get("connection") or NO_CONNECTION), actor=actor,
                                 correlation_id=correlation_id)
            await audit.record("poison.replayed" if replay else "poison.dropped", message.id, "completed",
                               queue=queue.value, kind=body.get("kind"), messageTarget=body.get("target"),
                               idempotencyKey=body.get("idempotencyKey"), dequeueCount=message.dequeue_count)
        return taken
