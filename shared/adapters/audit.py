"""The audit log in Table storage: append-only, hash-chained, readable and verifiable.

Rows: partition = chain id (connection, UTC day, shard), row = the record's zero-padded sequence
number, so a partition reads back in order. Appending inserts record N+1; insert-if-absent makes the
number unique, so a concurrent writer that took N+1 first makes the insert conflict, and the writer
walks forward to the real end of the chain and tries again. A `head` row per chain is a hint moved
every few records, so a new process finds the end with a short walk instead of reading the chain.

Each record is also logged as a structured `audit` line; with Application Insights configured,
shared/adapters/telemetry.py sends that line as a custom event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from shared.domain import audit as chain
from shared.errors import BridgeError, Conflict
from shared.services.ports import Clock, Entity, EntityStore
from shared.topology import Table

log = logging.getLogger("bridge.audit")

HEAD = "head"
#: How often the head hint row is moved forward.
HINT_EVERY = 32
MAX_APPEND_TRIES = 20


def _row_key(seq: int) -> str:
    return f"{seq:012d}"


class TableAuditSink:
    """Implements shared.services.ports.AuditSink on the `audit` table."""

    def __init__(self, entities: EntityStore, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        # chain -> (seq, hash) of the last record this process knows
        self._heads: dict[str, tuple[int, str]] = {}

    async def record(self, *, connection: str, actor: str, action: str, target: str, outcome: str,
                     correlation_id: str, graph_request_id: str | None = None,
                     vault_version: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Append one record to its chain."""
        detail = dict(detail or {})
        chain.reject_secret_keys(detail)
        at = self._clock.now()
        chain_id = chain.chain_id(connection, at, target)
        lock = self._locks.setdefault(chain_id, asyncio.Lock())
        async with lock:
            sealed = await self._append(chain_id, {
                "connection": connection, "chain": chain_id, "at": at, "actor": actor, "action": action,
                "target": target, "outcome": outcome, "correlationId": correlation_id,
                "graphRequestId": graph_request_id, "vaultVersion": vault_version, "detail": detail,
            })
        log.info("audit %s %s %s", action, outcome, target, extra={"custom_dimensions": {
            "event": "audit", "connection": connection, "action": action, "outcome": outcome, "target": target,
            "actor": actor, "correlationId": correlation_id, "graphRequestId": graph_request_id,
            "vaultVersion": vault_version, "seq": sealed.seq, "chain": chain_id}})

    async def _append(self, chain_id: str, fields: dict[str, Any]) -> chain.AuditRecord:
        for _ in range(MAX_APPEND_TRIES):
            seq, prev_hash = await self._head(chain_id)
            record = chain.AuditRecord.model_validate({**fields, "seq": seq + 1, "prevHash": prev_hash}).sealed()
            row = record.model_dump(mode="json", by_alias=True)
            try:
                await self._entities.insert(Table.AUDIT, Entity(chain_id, _row_key(record.seq), row))
            except Conflict:
                # Another writer took this number: move to the real end of the chain and try again.
                self._heads[chain_id] = await self._probe(chain_id, seq, prev_hash)
                continue
            self._heads[chain_id] = (record.seq, record.hash)
            if record.seq % HINT_EVERY == 0:
                # The head row is a hint that saves a long probe; a stale or lost hint costs reads only.
                try:
                    await self._entities.upsert(Table.AUDIT, Entity(chain_id, HEAD, {"seq": record.seq,
                                                                                      "hash": record.hash}))
                except BridgeError:
                    log.warning("could not move the head hint of audit chain %s", chain_id)
            return record
        raise Conflict(f"audit chain {chain_id} is too busy: gave up after {MAX_APPEND_TRIES} tries")

    async def _head(self, chain_id: str) -> tuple[int, str]:
        known = self._heads.get(chain_id)
        if known is None:
            hint = await self._entities.get(Table.AUDIT, chain_id, HEAD)
            start = (0, chain.GENESIS) if hint is None else (int(hint.data["seq"]), str(hint.data["hash"]))
            known = self._heads[chain_id] = await self._probe(chain_id, *start)
        return known

    async def _probe(self, chain_id: str, seq: int, digest: str) -> tuple[int, str]:
        """Walk forward from a known record to the last one written."""
        while (found := await self._entities.get(Table.AUDIT, chain_id, _row_key(seq + 1))) is not None:
            seq, digest = int(found.data["seq"]), str(found.data["hash"])
        return seq, digest


class AuditReader:
    """Reads and verifies the audit log."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def chain_records(self, chain_id: str) -> list[chain.AuditRecord]:
        """Every record of one chain, in sequence order."""
        return [record async for record in self.chain_from(chain_id, 1)]

    async def chain_from(self, chain_id: str, first_seq: int, limit: int | None = None
                         ) -> AsyncGenerator[chain.AuditRecord, None]:
        """Records of one chain from sequence number `first_seq` on, in order, read as they are needed."""
        async for found in self._entities.query(Table.AUDIT, chain_id, row_key_from=_row_key(max(first_seq, 0)),
                                                row_key_to="9" * 12, limit=limit):
            yield chain.AuditRecord.model_validate(found.data)

    async def head_hint(self, chain_id: str) -> int | None:
        """The sequence number the head hint row claims was written, if there is one."""
        head = await self._entities.get(Table.AUDIT, chain_id, HEAD)
        return None if head is None else int(head.data["seq"])

    def chains(self, connection: str, day: dt.date) -> list[str]:
        """The chain ids of one connection and day."""
        return [chain.chain_of(connection, day, shard) for shard in range(chain.SHARDS)]

    async def records(self, connection: str, first: dt.date, last: dt.date) -> AsyncIterator[chain.AuditRecord]:
        """Records of `connection` from day `first` to `last` inclusive, oldest first per day."""
        day = first
        while day <= last:
            merged: list[chain.AuditRecord] = []
            for chain_id in self.chains(connection, day):
                merged.extend(await self.chain_records(chain_id))
            for record in sorted(merged, key=lambda r: (r.at, r.chain, r.seq)):
                yield record
            day += dt.timedelta(days=1)

    async def verify(self, connection: str, first: dt.date, last: dt.date) -> tuple[int, chain.BrokenLink | None]:
        """How many records were checked, and the first broken link if any."""
        checked = 0
        day = first
        while day <= last:
            for chain_id in self.chains(connection, day):
                records = await self.chain_records(chain_id)
                checked += len(records)
                broken = chain.verify(records)
                if broken is None:
                    head = await self._entities.get(Table.AUDIT, chain_id, HEAD)
                    if head is not None and records and int(head.data["seq"]) > records[-1].seq:
                        broken = chain.BrokenLink(chain_id, records[-1].seq + 1,
                                                  f"record {records[-1].seq + 1} is missing (the head is ahead)")
                if broken is not None:
                    return checked, broken
            day += dt.timedelta(days=1)
        return checked, None
