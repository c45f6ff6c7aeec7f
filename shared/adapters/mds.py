"""FIDO Metadata Service (MDS3) trust anchors: fetched from FIDO_MDS_URL, kept in Table storage, refreshed daily.

The blob is verified under FIDO_MDS_ROOT_CERT before it is used or stored (shared/domain/mds.py), and
again each time a process loads it from storage, so a storage writer cannot slip in a root of their
own. One process fetches the blob at most once a day (the FIDO Alliance asks relying parties to fetch
it no more often than its `nextUpdate` requires, https://fidoalliance.org/metadata/); the others load
the stored copy. A blob whose serial number `no` is lower than the stored one is refused (rollback).
When the service cannot be reached, the last good copy is used and the fetch is tried again an hour
later; with no copy at all, a registration that needs the metadata gets a 503 naming FIDO_MDS_URL.

Rows (table `fidometadata`, partition `mds3`): `head` names the current copy (serial number, SHA-256,
when fetched, how many rows); `blob-<sha256 prefix>-<n>` rows hold its text in properties `c00`...,
each under Table storage's 64 KiB string limit, each row under the 1 MiB entity limit
(https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import httpx

from shared.domain.mds import MetadataRejected, TrustAnchors
from shared.errors import BridgeError, Conflict, Transient
from shared.services.ports import Clock, Entity, EntityStore
from shared.topology import Table

log = logging.getLogger(__name__)

PARTITION = "mds3"
HEAD = "head"
#: Characters per property: Table strings are UTF-16 and at most 64 KiB, so 32,768 characters.
CHUNK_CHARS = 30_000
#: Properties per row: 15 x 30,000 characters is 900 KB, under the 1 MiB entity limit.
CHUNKS_PER_ROW = 15
REFRESH = dt.timedelta(days=1)
RETRY = dt.timedelta(hours=1)
MAX_BLOB_BYTES = 64 * 1024 * 1024
TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 3


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _rows(text: str, sha: str) -> list[Entity]:
    per_row = CHUNK_CHARS * CHUNKS_PER_ROW
    rows = []
    for n, start in enumerate(range(0, len(text), per_row)):
        part = text[start:start + per_row]
        data = {f"c{i:02d}": part[i * CHUNK_CHARS:(i + 1) * CHUNK_CHARS]
                for i in range((len(part) + CHUNK_CHARS - 1) // CHUNK_CHARS)}
        rows.append(Entity(PARTITION, f"blob-{sha[:16]}-{n:04d}", data))
    return rows


async def download(url: str, *, verify: ssl.SSLContext | bool = True) -> bytes:
    """The blob at `url` (https only, redirects only to https, at most MAX_BLOB_BYTES); Transient otherwise."""
    target = httpx.URL(url)
    try:
        async with httpx.AsyncClient(verify=verify, timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                if target.scheme != "https":
                    raise Transient(f"FIDO_MDS_URL {url} led to a non-https URL {target}")
                async with client.stream("GET", target) as response:
                    if response.is_redirect:
                        target = target.join(response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise Transient(f"FIDO_MDS_URL {url} answered {response.status_code}")
                    body = bytearray()
                    async for part in response.aiter_bytes():
                        body += part
                        if len(body) > MAX_BLOB_BYTES:
                            raise Transient(f"FIDO_MDS_URL {url} sent more than {MAX_BLOB_BYTES} bytes")
                    return bytes(body)
    except httpx.HTTPError as exc:
        raise Transient(f"FIDO_MDS_URL {url} cannot be fetched: {type(exc).__name__}") from None
    raise Transient(f"FIDO_MDS_URL {url} redirects more than {MAX_REDIRECTS} times")


class FidoMetadata:
    """The trust anchors of attestation (implements shared.services.ports.TrustAnchorSource)."""

    def __init__(self, entities: EntityStore, clock: Clock, *, url: str, root_der: bytes,
                 fetch: Callable[[], Awaitable[bytes]] | None = None, verify: ssl.SSLContext | bool = True) -> None:
        self._entities = entities
        self._clock = clock
        self._url = url
        self._root = root_der
        self._fetch = fetch or (lambda: download(url, verify=verify))
        self._anchors: TrustAnchors | None = None
        self._sha = ""
        self._next_check: dt.datetime | None = None
        self._lock = asyncio.Lock()

    async def anchors(self) -> TrustAnchors:
        """The current verified metadata; Transient naming FIDO_MDS_URL when there is none."""
        if self._anchors is not None and self._next_check is not None and self._clock.now() < self._next_check:
            return self._anchors
        async with self._lock:
            now = self._clock.now()
            if self._anchors is not None and self._next_check is not None and now < self._next_check:
                return self._anchors
            head = await self._entities.get(Table.FIDOMETADATA, PARTITION, HEAD)
            fetched_at = _when(head.data.get("fetchedAt")) if head else None
            # A copy fetched from another FIDO_MDS_URL (the setting changed) is not this one's.
            if (head is not None and fetched_at is not None and now - fetched_at < REFRESH
                    and head.data.get("url") == self._url):
                stored = await self._load(head)
                if stored is not None:
                    self._next_check = fetched_at + REFRESH
                    return stored
            return await self._refresh(head, now)

    async def _load(self, head: Entity, *, fallback: bool = False) -> TrustAnchors | None:
        """The stored copy the head names, if it is whole, verifies, and is no older than what this process had.

        Someone who can write the table can still put back an older blob the Alliance signed; it is refused
        once its `nextUpdate` has passed (unless it is the only copy left while the service is down), and
        never replaces a newer one this process holds.
        """
        sha = str(head.data.get("sha256") or "")
        if self._anchors is not None and sha == self._sha:
            return self._anchors
        prefix = f"blob-{sha[:16]}-"
        parts: list[str] = []
        async for row in self._entities.query(Table.FIDOMETADATA, PARTITION, row_key_from=prefix,
                                              row_key_to=prefix + "~"):
            parts.extend(str(row.data[k]) for k in sorted(row.data) if k.startswith("c"))
        text = "".join(parts)
        if not sha or _sha(text) != sha:
            log.warning("the stored FIDO metadata is incomplete or altered (sha256 mismatch); fetching it again")
            return None
        try:
            anchors = TrustAnchors.from_blob(text.encode("ascii"), self._root)
        except MetadataRejected as exc:
            log.warning("the stored FIDO metadata does not verify under FIDO_MDS_ROOT_CERT (%s); fetching it again",
                        exc)
            return None
        if self._anchors is not None and anchors.no < self._anchors.no:
            log.warning("the stored FIDO metadata (serial %d) is older than this process's (serial %d); fetching it "
                        "again", anchors.no, self._anchors.no)
            return None
        if not fallback and anchors.next_update < self._clock.now().date():
            log.info("the stored FIDO metadata is past its nextUpdate (%s); fetching it again",
                     anchors.next_update.isoformat())
            return None
        self._anchors, self._sha = anchors, sha
        return anchors

    async def _refresh(self, head: Entity | None, now: dt.datetime) -> TrustAnchors:
        try:
            blob = await self._fetch()
            text = blob.decode("ascii")
            anchors = TrustAnchors.from_blob(blob, self._root)
        except (BridgeError, MetadataRejected, UnicodeDecodeError) as exc:
            reason = exc.detail if isinstance(exc, BridgeError) else f"the blob was refused: {exc}"
            fallback = self._anchors or (await self._load(head, fallback=True) if head is not None else None)
            if fallback is None:
                raise Transient(f"no FIDO metadata to check attestation against: {reason} (FIDO_MDS_URL, "
                                "FIDO_MDS_ROOT_CERT)") from None
            log.warning("FIDO metadata not refreshed, the copy of serial %d stays in use: %s", fallback.no, reason)
            self._next_check = now + RETRY
            return fallback
        stored_no = int(head.data.get("no") or 0) if head is not None else 0
        if anchors.no < stored_no:
            log.warning("FIDO_MDS_URL served serial %d, older than the stored %d: refused as a rollback",
                        anchors.no, stored_no)
            fallback = self._anchors or (await self._load(head, fallback=True) if head is not None else None)
            if fallback is not None:
                self._next_check = now + RETRY
                return fallback
            raise Transient(f"FIDO_MDS_URL served metadata serial {anchors.no}, older than the stored {stored_no}")
        sha = _sha(text)
        await self._store(text, sha, anchors, head, now)
        self._anchors, self._sha, self._next_check = anchors, sha, now + REFRESH
        log.info("FIDO metadata serial %d loaded (%d entries, next update %s)", anchors.no, anchors.entries,
                 anchors.next_update.isoformat())
        return anchors

    async def _store(self, text: str, sha: str, anchors: TrustAnchors, head: Entity | None,
                     now: dt.datetime) -> None:
        """Rows first, then the head that names them, then the rows of the copy it replaced."""
        rows = _rows(text, sha)
        for row in rows:
            await self._entities.upsert(Table.FIDOMETADATA, row)
        data = {"no": anchors.no, "sha256": sha, "rows": len(rows), "fetchedAt": now.isoformat(),
                "nextUpdate": anchors.next_update.isoformat(), "url": self._url}
        try:
            if head is None:
                await self._entities.insert(Table.FIDOMETADATA, Entity(PARTITION, HEAD, data))
            else:
                await self._entities.update(Table.FIDOMETADATA, Entity(PARTITION, HEAD, data, head.etag))
        except Conflict:
            # Another instance stored a copy at the same time; its head stands, and its rows with it.
            current = await self._entities.get(Table.FIDOMETADATA, PARTITION, HEAD)
            if current is not None and str(current.data.get("sha256") or "") != sha:
                await self._drop(sha)
            return
        old = str(head.data.get("sha256") or "") if head is not None else ""
        if old and old != sha:
            await self._drop(old)

    async def _drop(self, sha: str) -> None:
        prefix = f"blob-{sha[:16]}-"
        stale = [row.row_key async for row in self._entities.query(Table.FIDOMETADATA, PARTITION,
                                                                   row_key_from=prefix, row_key_to=prefix + "~")]
        for key in stale:
            await self._entities.delete(Table.FIDOMETADATA, PARTITION, key)


def _when(value: object) -> dt.datetime | None:
    try:
        found = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=dt.UTC)
