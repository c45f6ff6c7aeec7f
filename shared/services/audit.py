"""Reading and verifying the audit log: filters, paging with continuation tokens, chain verification.

Records of a day live in a few chains (shards); a page merges them in time order as they stream in,
and the continuation token remembers where each chain stopped, so paging never re-reads what was
already returned. A target filter reads only the one chain that target's records go to.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.domain import audit as chain
from shared.errors import InvalidInput

MAX_DAYS = 31
PAGE_MAX = 1000
PAGE_DEFAULT = 200


class AuditLogReader(Protocol):
    """What the queries need from the stored audit log."""

    def chain_from(self, chain_id: str, first_seq: int, limit: int | None = None
                   ) -> AsyncGenerator[chain.AuditRecord, None]:
        """Records of one chain from `first_seq` on, in sequence order."""
        ...

    async def head_hint(self, chain_id: str) -> int | None:
        """The sequence number the chain's head hint claims, if any."""
        ...


@dataclass(frozen=True)
class AuditFilter:
    """Which records to return: one connection, an inclusive UTC day range, optional filters."""

    connection: str
    first: dt.date
    last: dt.date
    action: str | None = None  # a prefix: "rotation." matches every rotation action
    target: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise InvalidInput("the day range runs backwards: 'to' is before 'from'", field="to")
        if (self.last - self.first).days >= MAX_DAYS:
            raise InvalidInput(f"the day range spans more than {MAX_DAYS} days; ask for less", field="to")

    def admits(self, record: chain.AuditRecord) -> bool:
        """Whether `record` passes the filters."""
        return ((not self.action or record.action.startswith(self.action))
                and (not self.target or record.target == self.target)
                and (not self.outcome or record.outcome == self.outcome))


@dataclass
class AuditPage:
    """One page of records and the token for the next (None at the end)."""

    records: list[chain.AuditRecord] = field(default_factory=list)
    next_token: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of recomputing the chains of a day range."""

    connection: str
    first: dt.date
    last: dt.date
    chains: int
    checked: int
    broken: chain.BrokenLink | None

    def as_json(self) -> dict[str, Any]:
        """The response body."""
        return {"connection": self.connection, "from": self.first.isoformat(), "to": self.last.isoformat(),
                "chains": self.chains, "checked": self.checked, "intact": self.broken is None,
                "firstBrokenLink": None if self.broken is None else {
                    "chain": self.broken.chain, "seq": self.broken.seq, "reason": self.broken.reason}}


def _encode(day: dt.date, positions: list[int], flt: AuditFilter) -> str:
    raw = {"c": flt.connection, "d": day.isoformat(), "p": positions, "to": flt.last.isoformat()}
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str, flt: AuditFilter) -> tuple[dt.date, list[int]]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        day = dt.date.fromisoformat(raw["d"])
        positions = [int(p) for p in raw["p"]]
        same = raw["c"] == flt.connection and raw["to"] == flt.last.isoformat()
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidInput("the continuation token is not one this API issued", field="continuationToken") from None
    if not same or not flt.first <= day <= flt.last or len(positions) != chain.SHARDS or min(positions) < 1:
        raise InvalidInput("the continuation token belongs to another query: repeat the first request's "
                           "connection and day range", field="continuationToken")
    return day, positions


class AuditQuery:
    """Answers GET /api/audit and GET /api/audit/verify."""

    def __init__(self, log: AuditLogReader) -> None:
        self._log = log

    async def page(self, flt: AuditFilter, *, top: int = PAGE_DEFAULT, token: str | None = None) -> AuditPage:
        """Up to `top` records in time order, and a token for the rest."""
        if not 1 <= top <= PAGE_MAX:
            raise InvalidInput(f"top must be between 1 and {PAGE_MAX}", field="top")
        day, positions = _decode(token, flt) if token else (flt.first, [1] * chain.SHARDS)
        shards = [chain.shard_of(flt.target)] if flt.target else list(range(chain.SHARDS))
        # Without content filters a chain never has to give more than one page's worth (plus one to see more).
        limit = top + 1 if not (flt.action or flt.outcome) else None
        result = AuditPage()
        while day <= flt.last:
            more = await self._merge_day(flt, day, shards, positions, top - len(result.records), limit, result)
            if more:
                result.next_token = _encode(day, positions, flt)
                return result
            day += dt.timedelta(days=1)
            positions = [1] * chain.SHARDS
            if len(result.records) >= top and day <= flt.last:
                result.next_token = _encode(day, positions, flt)
                return result
        return result

    async def _merge_day(self, flt: AuditFilter, day: dt.date, shards: list[int], positions: list[int],
                         room: int, limit: int | None, result: AuditPage) -> bool:
        """Add up to `room` records of one day to `result`; True when the day has more after them."""
        streams = {shard: self._log.chain_from(chain.chain_of(flt.connection, day, shard), positions[shard], limit)
                   for shard in shards}
        heap: list[tuple[dt.datetime, int, int, chain.AuditRecord]] = []
        try:
            for shard, stream in streams.items():
                first = await anext(stream, None)
                if first is not None:
                    heap.append((first.at, shard, first.seq, first))
            heapq.heapify(heap)
            while heap:
                if room <= 0:
                    return True
                _, shard, _, record = heapq.heappop(heap)
                positions[shard] = record.seq + 1
                if flt.admits(record):
                    result.records.append(record)
                    room -= 1
                following = await anext(streams[shard], None)
                if following is not None:
                    heapq.heappush(heap, (following.at, shard, following.seq, following))
            return False
        finally:
            for stream in streams.values():
                await stream.aclose()

    async def verify(self, connection: str, first: dt.date, last: dt.date) -> VerifyReport:
        """Recompute every chain of the range; the first broken link, if any."""
        AuditFilter(connection, first, last)  # the same range rules as reading
        checked = chains = 0
        day = first
        while day <= last:
            for shard in range(chain.SHARDS):
                chain_id = chain.chain_of(connection, day, shard)
                records = [r async for r in self._log.chain_from(chain_id, 1)]
                if records:
                    chains += 1
                checked += len(records)
                broken = chain.verify(records)
                hint = await self._log.head_hint(chain_id) if broken is None else None
                if hint is not None and hint > (records[-1].seq if records else 0):
                    # The head hint is only ever moved after its record was written: a lower last record
                    # means records were removed from the end of the chain.
                    missing = records[-1].seq + 1 if records else 1
                    broken = chain.BrokenLink(chain_id, missing, f"record {missing} is missing (the head hint "
                                                                 f"says {hint} were written)")
                if broken is not None:
                    return VerifyReport(connection, first, last, chains, checked, broken)
            day += dt.timedelta(days=1)
        return VerifyReport(connection, first, last, chains, checked, None)
