"""Audit records and their hash chains (docs/architecture.md, invariants 5 and 8).

Each record names who did what to which target, the outcome, Graph's request-id, the Key Vault
version id and the correlation id. Records of one chain are numbered, and each carries the SHA-256 of
the previous record's canonical form, so removing, reordering or editing a record breaks the chain
at that point. A chain is one connection, one UTC day and one shard (so concurrent writers rarely
contend for the same chain head).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64
SHARDS = 8


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
    prev_hash: str = Field(alias="prevHash")
    hash: str = ""

    def canonical(self) -> bytes:
        """The bytes the hash covers: every field but `hash`, sorted keys, no whitespace."""
        body = self.model_dump(mode="json", by_alias=True, exclude={"hash"})
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def sealed(self) -> AuditRecord:
        """This record with its hash computed."""
        return self.model_copy(update={"hash": hashlib.sha256(self.canonical()).hexdigest()})


def shard_of(target: str) -> int:
    """The shard a target's records go to (so one target's records share one chain per day)."""
    return zlib.crc32(target.encode()) % SHARDS


def chain_of(connection: str, day: dt.date, shard: int) -> str:
    """The id of one chain: connection, UTC day, shard."""
    return f"{connection}_{day:%Y%m%d}_{shard}"


def chain_id(connection: str, at: dt.datetime, target: str) -> str:
    """The chain a record belongs to: connection, UTC day, and a shard chosen by target."""
    return chain_of(connection, at.astimezone(dt.UTC).date(), shard_of(target))


def day_of(chain: str) -> str:
    """The yyyymmdd day of a chain id."""
    return chain.split("_")[-2]


@dataclass(frozen=True)
class BrokenLink:
    """Where a chain stops verifying, and why."""

    chain: str
    seq: int
    reason: str


def verify(records: Iterable[AuditRecord]) -> BrokenLink | None:
    """Check one chain's records (in sequence order); the first broken link, or None when intact."""
    expected_prev = GENESIS
    expected_seq = 1
    for record in records:
        if record.seq != expected_seq:
            return BrokenLink(record.chain, expected_seq, f"record {expected_seq} is missing")
        if record.prev_hash != expected_prev:
            return BrokenLink(record.chain, record.seq, "previous-hash does not match the record before it")
        if record.sealed().hash != record.hash:
            return BrokenLink(record.chain, record.seq, "record content does not match its hash (edited)")
        expected_prev = record.hash
        expected_seq += 1
    return None


SECRET_KEYS = frozenset({"password", "clientsecret", "privatekey", "token", "accesstoken", "refreshtoken"})


def reject_secret_keys(detail: Mapping[str, Any]) -> None:
    """Refuse a detail that carries a member named like a secret (invariant 2)."""
    for key, value in detail.items():
        if key.replace("-", "").replace("_", "").lower() in SECRET_KEYS:
            raise ValueError(f"audit detail member {key!r} looks like a secret; audit identifiers only")
        if isinstance(value, Mapping):
            reject_secret_keys(value)
