"""The audit log in Table storage, keyed and anchored in Key Vault: append-only, readable, verifiable.

Rows: partition = chain id (connection, UTC day, shard), row = the record's zero-padded sequence
number, so a partition reads back in order. Appending inserts record N+1; insert-if-absent makes the
number unique, so a concurrent writer that took N+1 first makes the insert conflict, and the writer
walks forward to the real end of the chain and tries again. A `head` row per chain is a hint moved
every few records, so a new process finds the end with a short walk instead of reading the chain.

Each record carries the HMAC-SHA256 under the audit key (secret `audit-chain-key` in Key Vault; its
version is the record's `keyId`). The heads this process wrote are anchored in Key Vault (secret
`audit-anchor-<connection>-<yyyymmdd>`, a new version each time): at once when no anchor of that
day was written in the last minute, else at most a minute later, and at the end of every run
(`flush`). docs/audit.md explains the choice and the window that remains.

Each record is also logged as a structured `audit` line; with Application Insights configured,
shared/adapters/telemetry.py sends that line as a custom event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import secrets as random_bytes
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import ValidationError

from shared.domain import audit as chain
from shared.errors import BridgeError, Configuration, Conflict, NotFound
from shared.services.ports import AuditAnchors, AuditKeys, Clock, Entity, EntityStore, SecretStore
from shared.topology import Table

log = logging.getLogger("bridge.audit")

HEAD = "head"
#: How often the head hint row is moved forward.
HINT_EVERY = 32
MAX_APPEND_TRIES = 20
#: At most one anchor per connection and day per this many seconds while records are written, and at
#: least one that long after a record: Key Vault allows 300 new versions per 10 s per vault, shared with
#: password rotation (https://learn.microsoft.com/azure/key-vault/general/service-limits).
ANCHOR_EVERY = 60.0
KEY_SECRET = "audit-chain-key"  # noqa: S105 - the name of the secret, not a secret
KEY_BYTES = 32
#: How long a process signs with the key it read before looking for a newer version (rotation).
KEY_REFRESH = dt.timedelta(minutes=10)
#: Concurrent reads of anchor versions during verification.
HISTORY_READS = 8


def _row_key(seq: int) -> str:
    return f"{seq:012d}"


def anchor_secret(connection: str, day: dt.date) -> str:
    """The Key Vault secret that keeps the anchors of one connection's day."""
    return f"audit-anchor-{connection}-{day:%Y%m%d}"


class VaultAuditKeys:
    """Implements shared.services.ports.AuditKeys on Key Vault: one secret, a version per key."""

    def __init__(self, secrets: Callable[[], SecretStore], clock: Clock, *,
                 refresh: dt.timedelta = KEY_REFRESH) -> None:
        self._secrets = secrets
        self._clock = clock
        self._refresh = refresh
        self._current: tuple[chain.ChainKey, dt.datetime] | None = None
        self._known: dict[str, chain.ChainKey] = {}
        self._lock = asyncio.Lock()

    async def current(self) -> chain.ChainKey:
        """The newest key version (re-read every few minutes); created when the vault has none."""
        now = self._clock.now()
        if self._current is not None and now - self._current[1] < self._refresh:
            return self._current[0]
        async with self._lock:
            if self._current is not None and now - self._current[1] < self._refresh:
                return self._current[0]
            try:
                key = await self._read_latest()
            except BridgeError:
                if self._current is None:
                    raise
                # Keep signing with the key in hand; a rotation is picked up once the vault answers.
                log.warning("could not re-read the audit key; still signing with version %s", self._current[0].key_id)
                key = self._current[0]
            self._current = (key, now)
            self._known[key.key_id] = key
            return key

    async def _read_latest(self) -> chain.ChainKey:
        store = self._secrets()
        try:
            found = await store.get(KEY_SECRET)
        except NotFound:
            value = base64.b64encode(random_bytes.token_bytes(KEY_BYTES)).decode()
            made = await store.put(KEY_SECRET, value, tags={"purpose": "audit-chain-mac"},
                                   content_type="application/octet-stream; base64")
            log.info("created the audit key %s version %s", KEY_SECRET, made.version)
            return chain.ChainKey(made.version, base64.b64decode(value))
        return self._decode(found.version, found.value)

    @staticmethod
    def _decode(version: str, value: str | None) -> chain.ChainKey:
        try:
            raw = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < KEY_BYTES:
            raise Configuration(f"Key Vault secret {KEY_SECRET} version {version} is not a base64 key of at least "
                                f"{KEY_BYTES} bytes: add a new version (or delete the secret to have one created)",
                                setting="KEY_VAULT_URL")
        return chain.ChainKey(version, raw)

    async def find(self, key_id: str) -> chain.ChainKey | None:
        """The key version `key_id`, or None when the vault has no such (enabled) version."""
        if key_id in self._known:
            return self._known[key_id]
        if not chain.KEY_ID.fullmatch(key_id):
            return None  # never let a stored value pick a path in the vault
        try:
            found = await self._secrets().get(KEY_SECRET, key_id)
        except (NotFound, Conflict):
            return None
        key = self._known[key_id] = self._decode(found.version, found.value)
        return key


class VaultAuditAnchors:
    """Implements shared.services.ports.AuditAnchors: a Key Vault secret per connection and day."""

    def __init__(self, secrets: Callable[[], SecretStore]) -> None:
        self._secrets = secrets

    async def latest(self, connection: str, day: dt.date) -> chain.Anchor | None:
        """The newest anchor of the day, or None."""
        try:
            found = await self._secrets().get(anchor_secret(connection, day))
        except NotFound:
            return None
        return self._parse(found.name, found.version, found.value)

    async def history(self, connection: str, day: dt.date) -> list[chain.Anchor]:
        """Every anchor version of the day (a disabled version cannot be read and is skipped), oldest first."""
        store = self._secrets()
        name = anchor_secret(connection, day)
        versions = await store.versions(name)
        gate = asyncio.Semaphore(HISTORY_READS)

        async def read(version: str) -> chain.Anchor | None:
            async with gate:
                try:
                    found = await store.get(name, version)
                except (NotFound, Conflict):
                    log.warning("anchor %s version %s cannot be read (disabled or gone)", name, version)
                    return None
            return self._parse(name, version, found.value)

        anchors = await asyncio.gather(*(read(v.version) for v in versions))
        return sorted((a for a in anchors if a is not None), key=lambda a: a.at)

    async def write(self, anchor: chain.Anchor) -> None:
        """A new version of the day's anchor secret."""
        day = dt.datetime.strptime(anchor.day, "%Y%m%d").replace(tzinfo=dt.UTC).date()
        await self._secrets().put(anchor_secret(anchor.connection, day), anchor.model_dump_json(),
                                  tags={"purpose": "audit-anchor", "chains": str(len(anchor.chains))},
                                  content_type="application/json")

    @staticmethod
    def _parse(name: str, version: str, value: str | None) -> chain.Anchor:
        try:
            return chain.Anchor.model_validate_json(value or "")
        except ValidationError:
            raise Configuration(f"Key Vault secret {name} version {version} is not an audit anchor: the secret "
                                "name is reserved for the audit log", setting="KEY_VAULT_URL") from None


class TableAuditSink:
    """Implements shared.services.ports.AuditSink on the `audit` table, keyed and anchored."""

    def __init__(self, entities: EntityStore, clock: Clock, keys: AuditKeys, anchors: AuditAnchors, *,
                 anchor_every: float = ANCHOR_EVERY) -> None:
        self._entities = entities
        self._clock = clock
        self._keys = keys
        self._anchors = anchors
        self._anchor_every = dt.timedelta(seconds=anchor_every)
        self._locks: dict[str, asyncio.Lock] = {}
        # chain -> (seq, hash) of the last record this process knows
        self._heads: dict[str, tuple[int, str]] = {}
        # (connection, day) -> heads written since that day's last anchor by this process
        self._unanchored: dict[tuple[str, dt.date], dict[str, chain.ChainHead]] = {}
        self._anchored_at: dict[tuple[str, dt.date], dt.datetime] = {}
        self._anchor_locks: dict[tuple[str, dt.date], asyncio.Lock] = {}
        self._start_anchors: dict[tuple[str, dt.date], chain.Anchor | None] = {}
        self._later: asyncio.Task[None] | None = None

    async def record(self, *, connection: str, actor: str, action: str, target: str, outcome: str,
                     correlation_id: str, graph_request_id: str | None = None,
                     vault_version: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Append one record to its chain, then anchor (now, or within a minute)."""
        detail = dict(detail or {})
        chain.reject_secret_keys(detail)
        at = self._clock.now()
        chain_id = chain.chain_id(connection, at, target)
        day = at.astimezone(dt.UTC).date()
        key = await self._keys.current()
        lock = self._locks.setdefault(chain_id, asyncio.Lock())
        async with lock:
            sealed = await self._append(connection, day, chain_id, key, {
                "connection": connection, "chain": chain_id, "at": at, "actor": actor, "action": action,
                "target": target, "outcome": outcome, "correlationId": correlation_id,
                "graphRequestId": graph_request_id, "vaultVersion": vault_version, "detail": detail,
            })
            self._unanchored.setdefault((connection, day), {})[chain_id] = chain.ChainHead(count=sealed.seq,
                                                                                            head=sealed.hash)
        log.info("audit %s %s %s", action, outcome, target, extra={"custom_dimensions": {
            "event": "audit", "connection": connection, "action": action, "outcome": outcome, "target": target,
            "actor": actor, "correlationId": correlation_id, "graphRequestId": graph_request_id,
            "vaultVersion": vault_version, "seq": sealed.seq, "chain": chain_id}})
        last = self._anchored_at.get((connection, day))
        if last is None or self._clock.now() - last >= self._anchor_every:
            await self._anchor(connection, day)
        else:
            self._anchor_later()

    async def flush(self) -> None:
        """Anchor every head written since its day's last anchor (the end of a run)."""
        for connection, day in list(self._unanchored):
            await self._anchor(connection, day)

    async def aclose(self) -> None:
        """Anchor what is left and stop the pending anchor task."""
        if self._later is not None:
            self._later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._later
            self._later = None
        await self.flush()

    def _anchor_later(self) -> None:
        """Make sure an anchor follows within a minute even when no more records come."""
        if self._later is None or self._later.done():
            self._later = asyncio.get_running_loop().create_task(self._flush_later(), name="audit-anchor")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._anchor_every.total_seconds())
        self._later = None  # so that an anchor that fails now is tried again a minute later
        try:
            await self.flush()
        except Exception:
            log.exception("anchoring the audit chains failed")

    async def _anchor(self, connection: str, day: dt.date) -> None:
        """Write one anchor of the day: the vault's newest anchor merged with the heads written here."""
        where = (connection, day)
        async with self._anchor_locks.setdefault(where, asyncio.Lock()):
            heads = self._unanchored.pop(where, None)
            if not heads:
                return
            now = self._clock.now()
            try:
                latest = await self._anchors.latest(connection, day) or chain.empty_anchor(connection, day, now)
                if not latest.covers(heads):
                    await self._anchors.write(latest.merged(heads, now))
            except BridgeError as err:
                # The records are written; only their anchor is late. Keep the heads for the next try.
                log.warning("could not anchor the audit chains of %s %s: %s", connection, f"{day:%Y-%m-%d}", err.slug)
                pending = self._unanchored.setdefault(where, {})
                for name, head in heads.items():
                    if name not in pending or pending[name].count < head.count:
                        pending[name] = head
                self._anchor_later()
                return
            self._anchored_at[where] = now

    async def _append(self, connection: str, day: dt.date, chain_id: str, key: chain.ChainKey,
                      fields: dict[str, Any]) -> chain.AuditRecord:
        for _ in range(MAX_APPEND_TRIES):
            seq, prev_hash = await self._head(connection, day, chain_id)
            record = chain.AuditRecord.model_validate({**fields, "seq": seq + 1, "prevHash": prev_hash}).sealed(key)
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

    async def _head(self, connection: str, day: dt.date, chain_id: str) -> tuple[int, str]:
        known = self._heads.get(chain_id)
        if known is None:
            hint = await self._entities.get(Table.AUDIT, chain_id, HEAD)
            start = (0, chain.GENESIS) if hint is None else (int(hint.data["seq"]), str(hint.data["hash"]))
            # The anchor is out of a storage writer's reach: records cut from the end before this process
            # started are not numbered again, so verification names them as missing.
            anchored = (await self._start_anchor(connection, day) or chain.empty_anchor(connection, day,
                                                                                        self._clock.now()))
            head = anchored.chains.get(chain_id)
            if head is not None and head.count > start[0]:
                start = (head.count, head.head)
            known = self._heads[chain_id] = await self._probe(chain_id, *start)
        return known

    async def _start_anchor(self, connection: str, day: dt.date) -> chain.Anchor | None:
        """The day's newest anchor as this process first saw it (read once per day)."""
        where = (connection, day)
        if where not in self._start_anchors:
            try:
                self._start_anchors[where] = await self._anchors.latest(connection, day)
            except BridgeError as err:
                log.warning("could not read the audit anchor of %s %s: %s", connection, f"{day:%Y-%m-%d}", err.slug)
                return None
        return self._start_anchors[where]

    async def _probe(self, chain_id: str, seq: int, digest: str) -> tuple[int, str]:
        """Walk forward from a known record to the last one written."""
        while (found := await self._entities.get(Table.AUDIT, chain_id, _row_key(seq + 1))) is not None:
            seq, digest = int(found.data["seq"]), str(found.data["hash"])
        return seq, digest


def _parse_row(chain_id: str, found: Entity) -> chain.AuditRecord:
    """A stored record; a row that is no longer a record (a storage writer changed it) stands as one that
    cannot verify, at its row's place, so verification names it instead of failing."""
    try:
        return chain.AuditRecord.model_validate(found.data)
    except ValidationError:
        key_id = found.data.get("keyId")
        return chain.AuditRecord.model_validate({
            "connection": str(found.data.get("connection", "")), "chain": chain_id,
            "seq": int(found.row_key) if found.row_key.isdigit() and int(found.row_key) > 0 else 1,
            "at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "actor": "", "action": "(not a record)", "target": "",
            "outcome": "", "correlationId": "", "keyId": key_id if isinstance(key_id, str) else None,
            "prevHash": "", "hash": ""})


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
            yield _parse_row(chain_id, found)

    async def rows_from(self, chain_id: str, first_row: int, limit: int | None = None
                        ) -> AsyncGenerator[tuple[int, chain.AuditRecord], None]:
        """Like `chain_from`, with each record's row number (its place, whatever its content claims)."""
        async for found in self._entities.query(Table.AUDIT, chain_id, row_key_from=_row_key(max(first_row, 0)),
                                                row_key_to="9" * 12, limit=limit):
            record = _parse_row(chain_id, found)
            yield (int(found.row_key) if found.row_key.isdigit() else record.seq), record

    async def head_hint(self, chain_id: str) -> int | None:
        """The sequence number the head hint row claims was written, if there is one."""
        head = await self._entities.get(Table.AUDIT, chain_id, HEAD)
        try:
            return None if head is None else int(head.data["seq"])
        except (KeyError, TypeError, ValueError):
            return None

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
