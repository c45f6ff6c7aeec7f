"""Events to the provider: publishes per second, and the delay from a change to its delivery, p95.

    python -m bench.events [--changes 1000] [--producers 4]

Producers record changes (one event each) into the Table outbox on Azurite, as the services do; each
record nudges the publisher, which drains the outbox through azure-eventgrid into the Event Grid
stand-in, which delivers to a webhook (the stand-in's built-in receiver). The delay of an event runs
from the moment its change was recorded to the moment the receiver holds it (polled every 20 ms). The
goal is a p95 under 2 s locally (docs/events.md). The nudge here wakes the publisher at once; in the
function app it is a queue message, so the host's queue polling (maxPollingInterval, 2 s in host.json,
shorter while messages keep coming) adds to the delay of the first event after a quiet spell.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from local.eventgrid.process import RunningTopic, running
from local.servers import azurite
from local.tls import ensure_tls
from shared.adapters.events import EventGridSink, TableEventOutbox
from shared.adapters.graph import SystemClock
from shared.adapters.leases import TableLeases
from shared.adapters.tables import TableEntityStore
from shared.domain.events import EventType, new_event
from shared.services.events import EventPublisher

GOAL_P95_SECONDS = 2.0


async def measure(storage: str, topic: RunningTopic, changes: int, producers: int) -> str:
    """Record `changes` events from `producers` tasks, publish them, wait for every delivery; one summary line."""
    connection = f"bench{uuid.uuid4().hex[:8]}"
    sink = f"bench-{uuid.uuid4().hex[:8]}"
    topic.subscribe(sink, topic.sink_url(sink))
    store = TableEntityStore.from_connection_string(storage)
    wake = asyncio.Event()

    async def nudge(_: str) -> None:
        wake.set()

    clock = SystemClock()
    outbox = TableEventOutbox(store, clock, nudge)
    sender = EventGridSink(topic.endpoint, key=topic.key, verify=str(topic.tls.ca))
    publisher = EventPublisher(log_=outbox, leases=TableLeases(store, clock), sink=sender, clock=clock)
    recorded: dict[str, float] = {}
    delivered: dict[str, float] = {}
    published = 0
    done_recording = asyncio.Event()

    async def produce(worker: int) -> None:
        for n in range(worker, changes, producers):
            event = new_event(EventType.USER_UPDATED, connection=connection, subject=f"u{n}", change=str(n),
                              time=dt.datetime.now(dt.UTC), userId=f"u{n}")
            await outbox.record([event])
            recorded[event.id] = time.monotonic()

    async def publish() -> None:
        nonlocal published
        while True:
            await wake.wait()
            wake.clear()
            published += (await publisher.drain(connection)).published
            if done_recording.is_set() and published >= changes:
                return

    async def watch() -> None:
        seen = 0
        while len(delivered) < changes:
            fresh = await asyncio.to_thread(topic.received, sink, seen)
            seen += len(fresh)
            for event in fresh:
                delivered.setdefault(str(event["id"]), time.monotonic())
            await asyncio.sleep(0.02)

    started = time.monotonic()
    watcher = asyncio.create_task(watch())
    publishing = asyncio.create_task(publish())
    await asyncio.gather(*(produce(w) for w in range(producers)))
    done_recording.set()
    wake.set()
    await publishing
    published_at = time.monotonic()
    await asyncio.wait_for(watcher, timeout=120)
    await sender.close()
    await store.close()
    delays = sorted(delivered[i] - recorded[i] for i in recorded)
    p95 = delays[max(0, int(len(delays) * 0.95) - 1)]
    rate = changes / (published_at - started)
    return (f"events: {changes} changes published in {published_at - started:.1f} s = {rate:.0f} events/s; "
            f"change-to-delivery p50 {statistics.median(delays):.2f} s, p95 {p95:.2f} s "
            f"(goal < {GOAL_P95_SECONDS:.0f} s locally): ratio {p95 / GOAL_P95_SECONDS:.2f} of goal")


def main() -> None:
    """Start Azurite and the stand-in, measure, print one line."""
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--producers", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tls = ensure_tls()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with azurite(root / "azurite", root / "azurite.log") as storage, \
                running(data_dir=root / "eventgrid", tls=tls, log_path=root / "eventgrid.log") as topic:
            print(asyncio.run(measure(storage, topic, args.changes, args.producers)))


if __name__ == "__main__":
    main()
