"""Audit records, their keyed chains, anchors and verification (docs/architecture.md, invariants 5 and 8).

Each record names who did what to which target, the outcome, Graph's request-id, the Key Vault
version id and the correlation id. Records of one chain are numbered, and each carries the
HMAC-SHA256 of its canonical form (which includes the previous record's MAC) under a key held in Key
Vault, named by `keyId` (the key's secret version). Without the key nobody can write a record that
verifies, so an edit, or an edit whose chain is recomputed forward, shows. A chain is one
connection, one UTC day and one shard (so concurrent writers rarely contend for the same chain head).

Cutting records from the end of a chain, or dropping a whole chain, leaves nothing behind to check
in Table storage; so the head and record count of each chain, and the list of the day's chains, are
anchored outside it (Key Vault secret versions, see docs/audit.md). Every anchor ever written is a
claim that verification checks; records written after the last anchor are the window an attacker
could still cut, and verification reports it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64
SHARDS = 8
#: What a key id may look like: a Key Vault secret version (32 hex digits), never a path.
KEY_ID = re.compile(r"^[0-9a-zA-Z]{1,64}$")


@dataclass(frozen=True)
class ChainKey:
    """An HMAC key and its id (the Key Vault version that holds it)."""

    key_id: str
    secret: bytes = field(repr=False)


class AuditRecord(BaseModel):
    """One audit record as stored (secrets never enter: `detail` holds identifiers only)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    connection: str
    chain: str
    seq: int = Field(ge=1)
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: str
    correlation_id: str = Field(alias="correlationId")
    graph_request_id: str | None = Field(default=None, alias="graphRequestId")
    vault_version: str | None = Field(default=None, alias="vaultVersion")
    detail: dict[str, Any] = Field(default_factory=dict)
    key_id: str | None = Field(default=None, alias="keyId")
    prev_hash: str = Field(alias="prevHash")
    hash: str = ""

    def canonical(self) -> bytes:
        """The bytes the MAC covers: every field but `hash`, sorted keys, no whitespace."""
        body = self.model_dump(mode="json", by_alias=True, exclude={"hash"})
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def mac(self, key: ChainKey) -> str:
        """HMAC-SHA256 of the canonical form under `key`."""
        return hmac.new(key.secret, self.canonical(), hashlib.sha256).hexdigest()

    def sealed(self, key: ChainKey) -> AuditRecord:
        """This record signed with `key`: its key id set and its MAC computed."""
        named = self.model_copy(update={"key_id": key.key_id})
        return named.model_copy(update={"hash": named.mac(key)})

    def verifies(self, key: ChainKey) -> bool:
        """Whether the stored MAC is the one `key` gives (compared in constant time)."""
        return self.key_id == key.key_id and hmac.compare_digest(self.mac(key), self.hash)


def shard_of(target: str) -> int:
    """The shard a target's records go to (so one target's records share one chain per day)."""
    return zlib.crc32(target.encode()) % SHARDS


def chain_of(connection: str, day: dt.date, shard: int) -> str:
    """The id of one chain: connection, UTC day, shard."""
    return f"{connection}_{day:%Y%m%d}_{shard}"


def chain_id(connection: str, at: dt.datetime, target: str) -> str:
    """The chain a record belongs to: connection, UTC day, and a shard chosen by target."""
    return chain_of(connection, at.astimezone(dt.UTC).date(), shard_of(target))


# ----------------------------------------------------------------------------- anchors


class ChainHead(BaseModel):
    """What an anchor says of one chain: how many records it had and the MAC of the last."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1)
    head: str


class Anchor(BaseModel):
    """The heads of one connection's chains of one UTC day, as written at `at` outside Table storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection: str
    day: str  # yyyymmdd
    at: dt.datetime
    chains: dict[str, ChainHead] = Field(default_factory=dict)

    def merged(self, heads: Mapping[str, ChainHead], at: dt.datetime) -> Anchor:
        """This anchor with `heads` added, each chain keeping the longer of the two heads."""
        chains = dict(self.chains)
        for name, head in heads.items():
            if name not in chains or head.count > chains[name].count:
                chains[name] = head
        return Anchor(connection=self.connection, day=self.day, at=max(at, self.at), chains=chains)

    def covers(self, heads: Mapping[str, ChainHead]) -> bool:
        """Whether every head in `heads` is already anchored here (nothing new to write)."""
        return all(name in self.chains and self.chains[name].count >= head.count for name, head in heads.items())


def empty_anchor(connection: str, day: dt.date, at: dt.datetime) -> Anchor:
    """An anchor with no chains yet."""
    return Anchor(connection=connection, day=f"{day:%Y%m%d}", at=at)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of `day` and of the day after, in UTC."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def unanchored_window(anchors: Sequence[Anchor], day: dt.date, now: dt.datetime) -> dt.timedelta:
    """How long a stretch of `day` no anchor covers: from its last anchor to the day's end (or now).

    Records written in that stretch could be cut from the end of a chain without a trace; every
    record written before the last anchor is covered by it. A day without an anchor is uncovered
    from its start.
    """
    start, end = day_bounds(day)
    last = max((a.at for a in anchors), default=start)
    return max(dt.timedelta(0), min(now, end) - max(last, start))


# ----------------------------------------------------------------------------- verification


class FindingKind(StrEnum):
    """What verification found wrong, in the words an auditor uses."""

    EDITED = "edited"
    MISSING = "missing"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    CHAIN_MISSING = "chain missing"
    KEY_UNKNOWN = "key unknown"


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one chain: records `seq` to `last_seq`, and what is wrong with them."""

    kind: FindingKind
    chain: str
    seq: int
    last_seq: int
    detail: str

    def describe(self) -> str:
        """One line naming the finding, the chain and the records."""
        where = f"record {self.seq}" if self.seq == self.last_seq else f"records {self.seq}-{self.last_seq}"
        return f"{self.kind}: chain {self.chain}, {where}: {self.detail}"


@dataclass(frozen=True)
class BrokenLink:
    """Where a chain stops verifying, and why (the first finding, in the older report's shape)."""

    chain: str
    seq: int
    reason: str


def _runs(kind: FindingKind, chain: str, seqs: Iterable[int], detail: str) -> list[Finding]:
    """One finding per run of consecutive sequence numbers."""
    found: list[Finding] = []
    for seq in sorted(set(seqs)):
        if found and found[-1].last_seq == seq - 1:
            last = found[-1]
            found[-1] = Finding(kind, chain, last.seq, seq, detail)
        else:
            found.append(Finding(kind, chain, seq, seq, detail))
    return found


def check_chain(chain: str, records: Sequence[AuditRecord], keys: Mapping[str, ChainKey],
                claims: Sequence[ChainHead] = (), hint: int | None = None) -> list[Finding]:
    """Every finding of one chain.

    `records` are in stored order (by row key); `keys` maps the key ids verification could resolve
    to their keys (an id missing here is unknown); `claims` are the heads every anchor wrote for this
    chain; `hint` is the sequence number of the chain's head row in Table storage, if any (a hint a
    storage writer can move, so it only adds evidence).
    """
    findings: list[Finding] = []
    edited: list[int] = []
    unknown: dict[str, list[int]] = {}
    valid: dict[int, AuditRecord] = {}
    for record in records:
        key = keys.get(record.key_id or "") if record.key_id and KEY_ID.fullmatch(record.key_id) else None
        if key is None:
            unknown.setdefault(record.key_id or "(none)", []).append(record.seq)
        elif record.chain != chain or not record.verifies(key):
            edited.append(record.seq)
        elif record.seq in valid:
            findings.append(Finding(FindingKind.REORDERED, chain, record.seq, record.seq,
                                    f"record {record.seq} is stored twice"))
        else:
            valid[record.seq] = record
    findings += _runs(FindingKind.EDITED, chain, edited, "the content does not match its MAC")
    for key_id, seqs in unknown.items():
        findings += _runs(FindingKind.KEY_UNKNOWN, chain, seqs,
                          f"signed with key id {key_id[:70]!r}, which the audit key in Key Vault does not have")

    stored = [r.seq for r in records]
    moved = {stored[i] for i in range(len(stored)) for j in (i - 1, i + 1)
             if 0 <= j < len(stored) and (stored[j] > stored[i]) == (j < i) and stored[j] != stored[i]}
    for seq in sorted(moved):
        findings.append(Finding(FindingKind.REORDERED, chain, seq, seq,
                                f"record {seq} is stored out of sequence order"))

    present = set(stored)
    last = max(present, default=0)
    findings += _runs(FindingKind.MISSING, chain, (s for s in range(1, last) if s not in present),
                      "deleted from the middle of the chain")

    for seq, record in sorted(valid.items()):
        before = valid.get(seq - 1)
        expected = GENESIS if seq == 1 else (before.hash if before is not None else None)
        if expected is not None and record.prev_hash != expected:
            findings.append(Finding(FindingKind.EDITED, chain, seq, seq,
                                    f"does not follow record {seq - 1} (previous MAC differs): replaced"))

    anchored = max((c.count for c in claims), default=0)
    cut_to = max(anchored, hint or 0)
    if cut_to > last:
        source = "the anchor in Key Vault" if anchored >= cut_to else "the chain's head row"
        findings.append(Finding(FindingKind.TRUNCATED, chain, last + 1, cut_to,
                                f"truncated after {last}: {source} says {cut_to} records were written"))
    for claim in claims:
        named = valid.get(claim.count)
        if named is not None and not hmac.compare_digest(named.hash, claim.head):
            findings.append(Finding(FindingKind.EDITED, chain, claim.count, claim.count,
                                    "differs from the record the anchor in Key Vault names: replaced"))
    return _dedupe(findings)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[FindingKind, int, int]] = set()
    unique = []
    for finding in findings:
        if (finding.kind, finding.seq, finding.last_seq) not in seen:
            seen.add((finding.kind, finding.seq, finding.last_seq))
            unique.append(finding)
    return sorted(unique, key=lambda f: (f.seq, f.kind))


def chain_missing(chain: str, claims: Sequence[ChainHead]) -> Finding:
    """The finding for a chain the anchors list and Table storage does not have."""
    count = max(c.count for c in claims)
    return Finding(FindingKind.CHAIN_MISSING, chain, 1, count,
                   f"the anchor in Key Vault lists this chain with {count} records; none are stored")


SECRET_KEYS = frozenset({"password", "clientsecret", "privatekey", "token", "accesstoken", "refreshtoken"})


def reject_secret_keys(detail: Mapping[str, Any]) -> None:
    """Refuse a detail that carries a member named like a secret (invariant 2)."""
    for key, value in detail.items():
        if key.replace("-", "").replace("_", "").lower() in SECRET_KEYS:
            raise ValueError(f"audit detail member {key!r} looks like a secret; audit identifiers only")
        if isinstance(value, Mapping):
            reject_secret_keys(value)
