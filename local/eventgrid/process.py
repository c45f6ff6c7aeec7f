"""Start and stop the Event Grid stand-in as a child process (used by `make run` and the tests' fixture)."""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.servers import ManagedProcess, free_port, python_module, url_answers
from local.tls import TlsFiles, ensure_tls


@dataclass
class RunningTopic:
    """A started stand-in: its URLs, its key and its admin API."""

    url: str
    key: str
    tls: TlsFiles
    process: ManagedProcess

    @property
    def endpoint(self) -> str:
        """The topic endpoint, as EVENTGRID_TOPIC_ENDPOINT names it."""
        return f"{self.url}/api/events"

    def sink_url(self, name: str) -> str:
        """The URL of the built-in webhook receiver `name`."""
        return f"{self.url}/_sink/{name}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the admin API (or a sink)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,  # noqa: S310 - loopback
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, context=self.tls.client_context(), timeout=60) as answer:  # noqa: S310
            raw = answer.read()
        return json.loads(raw) if raw else None

    def subscribe(self, name: str, endpoint: str, types: list[str] | None = None, **policy: Any) -> Any:
        """Add a webhook subscription (the stand-in runs the handshake first)."""
        return self.call("PUT", f"/_admin/subscriptions/{name}", {"endpoint": endpoint, "types": types or [],
                                                                   **policy})

    def received(self, sink: str, start: int = 0) -> list[dict[str, Any]]:
        """What the built-in receiver `sink` has received (from the `start`-th delivery on)."""
        found: list[dict[str, Any]] = self.call("GET", f"/_sink/{sink}?from={start}")["received"]
        return found


@contextlib.contextmanager
def running(*, data_dir: Path, port: int | None = None, key: str | None = None, time_scale: float = 1.0,
            log_path: Path | None = None, tls: TlsFiles | None = None, authority: str | None = None,
            tenant: str | None = None) -> Iterator[RunningTopic]:
    """Run the stand-in for the duration of the block on 127.0.0.1 (a free port unless given); with `authority`
    and `tenant`, bearer tokens that authority signs for Event Grid are accepted too."""
    tls = tls or ensure_tls()
    port = port or free_port()
    key = key or secrets.token_urlsafe(32)
    argv = python_module("local.eventgrid", "serve", "--port", str(port), "--data", str(data_dir), "--key", key,
                         "--time-scale", str(time_scale), "--tls-dir", str(tls.ca.parent))
    if authority and tenant:
        argv += ["--authority", authority, "--tenant", tenant]
    process = ManagedProcess("eventgrid", argv, log_path or data_dir.parent / f"eventgrid-{port}.log").start()
    url = f"https://127.0.0.1:{port}"
    try:
        process.wait_until(lambda: url_answers(url + "/_admin/subscriptions", context=tls.client_context()),
                           timeout=60)
        yield RunningTopic(url=url, key=key, tls=tls, process=process)
    finally:
        process.stop()


#: The built-in subscriber `make run` subscribes, and what the passkey demo should make it receive.
DEMO_SINK = "demo"
DEMO_TYPES = ("bridge.passkey.registered", "bridge.passkey.revoked", "bridge.device.removed")


def stack_settings(topic: RunningTopic) -> dict[str, str]:
    """The host's settings for this topic; subscribes the built-in demo subscriber (idempotent)."""
    topic.subscribe(DEMO_SINK, topic.sink_url(DEMO_SINK))
    return {"EVENTGRID_TOPIC_ENDPOINT": topic.endpoint, "EVENTGRID_TOPIC_KEY": topic.key}


def demo_events(topic: RunningTopic, *, within: float = 20.0) -> str:
    """One line: the events the demo subscriber received (waiting for the demo's own to arrive)."""
    import time

    deadline = time.monotonic() + within
    received = topic.received(DEMO_SINK)
    while time.monotonic() < deadline and not set(DEMO_TYPES) <= {e.get("type") for e in received}:
        time.sleep(0.3)
        received = topic.received(DEMO_SINK)
    if not received:
        return "events: the demo subscriber received none (see .local/logs/host.log)"
    counts: dict[str, int] = {}
    for event in received:
        kind = str(event.get("type", "?")).removeprefix("bridge.")
        counts[kind] = counts.get(kind, 0) + 1
    listed = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in counts.items())
    return f"events: the demo subscriber ({topic.sink_url(DEMO_SINK)}) received {len(received)}: {listed}"
