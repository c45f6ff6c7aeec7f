"""Polling for the end-to-end tests: the host works in the background, so tests wait for its effects."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def wait_for(check: Any, timeout: float = 90.0) -> Any:
    """The first truthy value `check()` returns within `timeout` seconds; AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


async def settle(check: Any, within: float = 5.0, *, every: float = 0.02) -> Any:
    """`wait_for` inside an event loop: the stand-in under test runs in the same loop, so this yields to it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")
