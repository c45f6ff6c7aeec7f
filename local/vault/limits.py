"""Throttling and injected faults of the emulator.

Key Vault limits each vault per 10 s: 300 secret creates (a PUT of a new version) and 4,000 other
transactions, answering 429 with Retry-After; throttled requests do not count
(https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits,
https://learn.microsoft.com/en-us/azure/key-vault/general/overview-throttling). Windows are measured
in emulated time, so `--time-scale` shortens them.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from local.vault import rules
from local.vault.errors import VaultError
from local.vault.store import EmulatedClock


class SlidingWindow:
    """At most `limit` events in any `window` seconds; `admit` says how long to wait otherwise."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()

    def admit(self, now: float) -> float:
        """Record an event and return 0, or return the seconds until one would be admitted."""
        while self._events and self._events[0] <= now - self.window:
            self._events.popleft()
        if len(self._events) >= self.limit:
            return self._events[0] + self.window - now
        self._events.append(now)
        return 0.0


@dataclass
class Throttle:
    """The vault's two budgets: secret creates and all other transactions."""

    clock: EmulatedClock
    enabled: bool = True
    creates: SlidingWindow = field(
        default_factory=lambda: SlidingWindow(rules.SECRET_CREATES_PER_WINDOW, rules.WINDOW_SECONDS))
    others: SlidingWindow = field(
        default_factory=lambda: SlidingWindow(rules.OTHER_TRANSACTIONS_PER_WINDOW, rules.WINDOW_SECONDS))

    def check(self, *, create: bool) -> None:
        """Count one transaction, or raise 429 with Retry-After in real seconds."""
        if not self.enabled:
            return
        wait = (self.creates if create else self.others).admit(self.clock.now())
        if wait <= 0:
            return
        real = self.clock.real_seconds(wait)
        # Integer seconds as Key Vault sends them; finer when time runs faster than real time.
        retry_after = str(max(1, math.ceil(real))) if self.clock.scale == 1 else f"{max(real, 0.001):.3f}"
        budget = "secret creates" if create else "transactions"
        raise VaultError(429, "Throttled",
                         f"Request was not processed because too many requests were received. Reason: the vault's "
                         f"limit of {self.creates.limit if create else self.others.limit} {budget} per "
                         f"{rules.WINDOW_SECONDS:.0f} seconds was reached.",
                         headers={"Retry-After": retry_after})


class Faults(BaseModel):
    """Injected failures; rates are probabilities per request (0 disables)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0, ge=0, le=60_000, description="added delay before answering")
    error_rate: float = Field(0, ge=0, le=1, description="answer 503 without doing anything")
    drop_rate: float = Field(0, ge=0, le=1, description="drop the connection without doing anything")
    ambiguous_rate: float = Field(0, ge=0, le=1, description="apply a write, then drop the connection")
    seed: int | None = Field(None, description="seed for reproducible fault sequences")


class FaultPlan:
    """Draws which fault, if any, hits the next request."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        """Replace the settings (and reseed)."""
        self.faults = faults
        self._random = random.Random(faults.seed)  # noqa: S311 - fault injection, not security

    def draw(self, *, write: bool) -> str | None:
        """'error', 'drop', 'ambiguous' or None for this request."""
        f = self.faults
        roll = self._random.random()
        if roll < f.error_rate:
            return "error"
        roll -= f.error_rate
        if roll < f.drop_rate:
            return "drop"
        roll -= f.drop_rate
        if write and roll < f.ambiguous_rate:
            return "ambiguous"
        return None
