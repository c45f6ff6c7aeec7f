"""Reading and verifying the audit log: filters, paging with continuation tokens, chain verification.

Records of a day live in a few chains (shards); a page merges them in time order as they stream in,
and the continuation token remembers where each chain stopped, so paging never re-reads what was
already returned. A target filter reads only the one chain that target's records go to. Every filter
is applied to each record before it counts towards the page; a page stops early (with a token) only
after scanning SCAN_MAX records, so a sparse filter costs several pages, never a lost record.

Verification checks each chain's MACs with the keys from Key Vault and every anchor ever written for
the day, and names each finding (shared/domain/audit.py); docs/audit.md says what it can and cannot
see.
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
from shared.services.ports import AuditAnchors, AuditKeys, Clock

MAX_DAYS = 31
PAGE_MAX = 1000
PAGE_DEFAULT = 200
#: Records one page request may scan for a filter before it answers with what it has and a token.
SCAN_MAX = 10 * PAGE_MAX


class AuditLogReader(Protocol):
    """What the queries need from the stored audit log."""

    def chain_from(self, chain_id: str, first_seq: int, limit: int | None = None
                   ) -> AsyncGenerator[chain.AuditRecord, None]:
        """Records of one chain from `first_seq` on, in sequence order."""
        ...

    def rows_from(self, chain_id: str, first_row: int, limit: int | None = None
                  ) -> AsyncGenerator[tuple[int, chain.AuditRecord], None]:
        """Records of one chain from row `first_row` on, in row order, each with its row number."""
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
    """The outcome of checking the chains and anchors of a day range."""

    connection: str
    first: dt.date
    last: dt.date
    chains: int
    checked: int
    findings: list[chain.Finding] = field(default_factory=list)
    #: The largest stretch no anchor covers (records written in it could be cut), and where it is.
    window: dt.timedelta = dt.timedelta(0)
    window_from: dt.datetime | None = None
    window_to: dt.datetime | None = None
    last_anchor: dt.datetime | None = None

    @property
    def intact(self) -> bool:
        """Whether nothing was found."""
        return not self.findings

    @property
    def broken(self) -> chain.BrokenLink | None:
        """The first finding as a broken link, or None when intact."""
        if not self.findings:
            return None
        first = self.findings[0]
        return chain.BrokenLink(first.chain, first.seq, first.describe())

    def as_json(self) -> dict[str, Any]:
        """The response body."""
        broken = self.broken
        return {"connection": self.connection, "from": self.first.isoformat(), "to": self.last.isoformat(),
                "chains": self.chains, "checked": self.checked, "intact": self.intact,
                "findings": [{"kind": str(f.kind), "chain": f.chain, "seq": f.seq, "lastSeq": f.last_seq,
                              "detail": f.detail} for f in self.findings],
                "firstBrokenLink": None if broken is None else {
                    "chain": broken.chain, "seq": broken.seq, "reason": broken.reason},
                "lastAnchorAt": None if self.last_anchor is None else self.last_anchor.isoformat(),
                "unanchoredWindow": {
                    "seconds": int(self.window.total_seconds()),
                    "from": None if self.window_from is None else self.window_from.isoformat(),
                    "to": None if self.window_to is None else self.window_to.isoformat()}}


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

    def __init__(self, log: AuditLogReader, keys: AuditKeys, anchors: AuditAnchors, clock: Clock) -> None:
        self._log = log
        self._keys = keys
        self._anchors = anchors
        self._clock = clock

    async def page(self, flt: AuditFilter, *, top: int = PAGE_DEFAULT, token: str | None = None) -> AuditPage:
        """Up to `top` matching records in time order, and a token whenever more may match."""
        if not 1 <= top <= PAGE_MAX:
            raise InvalidInput(f"top must be between 1 and {PAGE_MAX}", field="top")
        day, positions = _decode(token, flt) if token else (flt.first, [1] * chain.SHARDS)
        shards = [chain.shard_of(flt.target)] if flt.target else list(range(chain.SHARDS))
        # Without filters every record read counts, so no chain has to give more than a page (plus one to
        # see more). Any filter - a target shares its chain with other targets - may skip any number.
        limit = top + 1 if not (flt.action or flt.outcome or flt.target) else None
        result = AuditPage()
        budget = [SCAN_MAX]
        while day <= flt.last:
            more = await self._merge_day(flt, day, shards, positions, top - len(result.records), limit, result,
                                         budget)
            if more:
                result.next_token = _encode(day, positions, flt)
                return result
            day += dt.timedelta(days=1)
            positions = [1] * chain.SHARDS
            if (len(result.records) >= top or budget[0] <= 0) and day <= flt.last:
                result.next_token = _encode(day, positions, flt)
                return result
        return result

    async def _merge_day(self, flt: AuditFilter, day: dt.date, shards: list[int], positions: list[int],
                         room: int, limit: int | None, result: AuditPage, budget: list[int]) -> bool:
        """Add up to `room` matching records of one day to `result`; True when the day may have more.

        `budget` counts down the records scanned; at zero the page ends where it is.
        """
        # Positions are row numbers, not the sequence numbers records claim: a row whose content was moved
        # or damaged is still read once, and verification names it.
        streams = {shard: self._log.rows_from(chain.chain_of(flt.connection, day, shard), positions[shard], limit)
                   for shard in shards}
        heap: list[tuple[dt.datetime, int, int, chain.AuditRecord]] = []
        try:
            for shard, stream in streams.items():
                first = await anext(stream, None)
                if first is not None:
                    heap.append((first[1].at, shard, first[0], first[1]))
            heapq.heapify(heap)
            while heap:
                if room <= 0 or budget[0] <= 0:
                    return True
                _, shard, row, record = heapq.heappop(heap)
                positions[shard] = row + 1
                budget[0] -= 1
                if flt.admits(record):
                    result.records.append(record)
                    room -= 1
                following = await anext(streams[shard], None)
                if following is not None:
                    heapq.heappush(heap, (following[1].at, shard, following[0], following[1]))
            return False
        finally:
            for stream in streams.values():
                await stream.aclose()

    async def verify(self, connection: str, first: dt.date, last: dt.date) -> VerifyReport:
        """Check every chain of the range against its MACs and every anchor; each finding, and the window."""
        AuditFilter(connection, first, last)  # the same range rules as reading
        now = self._clock.now()
        keys: dict[str, chain.ChainKey | None] = {}
        findings: list[chain.Finding] = []
        checked = chains = 0
        window, window_from, window_to, last_anchor = dt.timedelta(0), None, None, None
        day = first
        while day <= last:
            anchors = await self._anchors.history(connection, day)
            claims: dict[str, list[chain.ChainHead]] = {}
            for anchor in anchors:
                for name, head in anchor.chains.items():
                    claims.setdefault(name, []).append(head)
            names = [chain.chain_of(connection, day, shard) for shard in range(chain.SHARDS)]
            names += sorted(set(claims) - set(names))
            stored = 0
            for chain_id in names:
                records = [r async for r in self._log.chain_from(chain_id, 1)]
                hint = await self._log.head_hint(chain_id)
                chain_claims = claims.get(chain_id, [])
                stored += len(records)
                if records:
                    chains += 1
                    checked += len(records)
                elif chain_claims:
                    findings.append(chain.chain_missing(chain_id, chain_claims))
                    continue
                elif hint is None:
                    continue
                await self._resolve(records, keys)
                known = {key_id: key for key_id, key in keys.items() if key is not None}
                findings += chain.check_chain(chain_id, records, known, chain_claims, hint)
            if anchors:
                last_anchor = max(last_anchor or anchors[-1].at, anchors[-1].at)
            if anchors or stored:
                gap = chain.unanchored_window(anchors, day, now)
                if gap > window:
                    _, end = chain.day_bounds(day)
                    window, window_to = gap, min(now, end)
                    window_from = window_to - gap
            day += dt.timedelta(days=1)
        return VerifyReport(connection, first, last, chains, checked, findings, window, window_from, window_to,
                            last_anchor)

    async def _resolve(self, records: list[chain.AuditRecord], keys: dict[str, chain.ChainKey | None]) -> None:
        """Look up, once per verification, every key id these records name."""
        for key_id in {r.key_id for r in records if r.key_id} - set(keys):
            keys[key_id] = await self._keys.find(key_id)
