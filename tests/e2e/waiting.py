"""Polling for the end-to-end tests: the host works in the background, so tests wait for its effects."""

from __future__ import annotations

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
