"""The WorkQueue and PoisonQueues contract, on the in-memory queues and on the Storage queue adapter with Azurite."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.topology import Queue
from tests.fixtures.contracts import QueueSubject


async def test_sent_messages_arrive_as_json_in_order(queue_subject: QueueSubject) -> None:
    await queue_subject.port.send(Queue.SYNC, {"connection": "c", "n": 1, "nested": {"k": [1, "2"]}})
    await queue_subject.port.send(Queue.SYNC, {"connection": "c", "n": 2})
    assert await queue_subject.visible(Queue.SYNC) == [{"connection": "c", "n": 1, "nested": {"k": [1, "2"]}},
                                                       {"connection": "c", "n": 2}]
    assert await queue_subject.visible(Queue.ROTATION) == []


async def test_a_delayed_message_is_not_visible_yet(queue_subject: QueueSubject) -> None:
    await queue_subject.port.send(Queue.SYNC, {"n": "later"}, delay_seconds=60)
    await queue_subject.port.send(Queue.SYNC, {"n": "now"})
    assert await queue_subject.visible(Queue.SYNC) == [{"n": "now"}]


async def test_a_message_over_64_kib_after_base64_is_invalid_input(queue_subject: QueueSubject) -> None:
    with pytest.raises(InvalidInput):
        await queue_subject.port.send(Queue.SYNC, {"blob": "x" * 50_000})
    await queue_subject.port.send(Queue.SYNC, {"blob": "x" * 40_000})
    assert len(await queue_subject.visible(Queue.SYNC)) == 1


async def test_poison_messages_are_peeked_without_change(queue_subject: QueueSubject) -> None:
    assert await queue_subject.port.poison_messages(Queue.SYNC) == ([], 0)
    for n in range(3):
        await queue_subject.poison(Queue.SYNC, {"kind": "sync", "n": n})
    for _ in range(2):
        found, count = await queue_subject.port.poison_messages(Queue.SYNC)
        assert count == 3
        assert [m.body for m in found] == [{"kind": "sync", "n": n} for n in range(3)]
        assert all(m.id for m in found)
        assert len({m.id for m in found}) == 3
    assert await queue_subject.port.poison_messages(Queue.ROTATION) == ([], 0)


async def test_a_peek_shows_at_most_32_but_counts_all(queue_subject: QueueSubject) -> None:
    for n in range(34):
        await queue_subject.poison(Queue.SYNC, {"n": n})
    found, count = await queue_subject.port.poison_messages(Queue.SYNC)
    assert (len(found), count) == (32, 34)


async def test_replay_sends_the_chosen_messages_back_and_leaves_the_others(queue_subject: QueueSubject) -> None:
    for n in range(3):
        await queue_subject.poison(Queue.SYNC, {"n": n})
    found, _ = await queue_subject.port.poison_messages(Queue.SYNC)
    chosen = {found[0].id, found[2].id}
    handled = await queue_subject.port.take_poison(Queue.SYNC, chosen, replay=True)
    assert sorted(m.body["n"] for m in handled if m.body) == [0, 2]
    assert sorted(m["n"] for m in await queue_subject.visible(Queue.SYNC)) == [0, 2]
    left, count = await queue_subject.port.poison_messages(Queue.SYNC)
    assert ([m.body for m in left], count) == ([{"n": 1}], 1)


async def test_drop_all_empties_the_poison_queue_without_replaying(queue_subject: QueueSubject) -> None:
    for n in range(2):
        await queue_subject.poison(Queue.ROTATION, {"n": n})
    handled = await queue_subject.port.take_poison(Queue.ROTATION, None, replay=False)
    assert len(handled) == 2
    assert await queue_subject.port.poison_messages(Queue.ROTATION) == ([], 0)
    assert await queue_subject.visible(Queue.ROTATION) == []
    assert await queue_subject.port.take_poison(Queue.ROTATION, None, replay=True) == []
