"""The FIDO MDS3 blob in storage: fetched once a day, verified on every load, never rolled back or swapped."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from local.authenticator import DEFAULT_AAGUID, AttestationRoot, well_known_root
from local.mds import blob, entry, local_ca, root_setting
from shared.adapters.mds import CHUNK_CHARS, CHUNKS_PER_ROW, HEAD, PARTITION, FidoMetadata
from shared.domain.mds import root_certificate
from shared.errors import Transient
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeClock, FakeEntityStore

URL = "https://mds.example/"


def signed(no: int = 1, *, padding: int = 0) -> bytes:
    """A blob signed through the local CA; `padding` extra entries make it span several rows."""
    key, ca = local_ca()
    entries = [entry(DEFAULT_AAGUID, [well_known_root().der])]
    filler = AttestationRoot.generate().der
    entries += [entry(f"00000000-0000-0000-0000-{n:012d}", [filler]) for n in range(padding)]
    return blob(entries, issuer_key=key, issuer=ca, no=no)


class Source:
    """The MDS endpoint: answers what it is given, counts the fetches."""

    def __init__(self, *answers: bytes | Exception) -> None:
        self.answers = list(answers)
        self.fetches = 0

    async def __call__(self) -> bytes:
        self.fetches += 1
        answer = self.answers[min(self.fetches, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def metadata(store: FakeEntityStore, clock: FakeClock, source: Source) -> FidoMetadata:
    return FidoMetadata(store, clock, url=URL, root_der=root_certificate(root_setting()), fetch=source)


async def test_fetched_once_stored_and_loaded_by_other_instances() -> None:
    store, clock, source = FakeEntityStore(), FakeClock(), Source(signed(padding=700))
    first = await metadata(store, clock, source).anchors()
    assert first.entries == 701
    rows = [k for (p, k) in store.tables[Table.FIDOMETADATA] if p == PARTITION and k != HEAD]
    assert len(rows) >= 2, "a blob over one row's worth is spread over several rows"
    assert all(len(str(v)) <= CHUNK_CHARS for e in store.tables[Table.FIDOMETADATA].values() for v in e.data.values())
    assert all(len(e.data) <= CHUNKS_PER_ROW for e in store.tables[Table.FIDOMETADATA].values())
    # Another instance, the same day: the stored copy, no fetch.
    other = await metadata(store, clock, source).anchors()
    assert (other.no, other.entries, source.fetches) == (1, 701, 1)


async def test_refreshed_daily_and_old_rows_dropped() -> None:
    store, clock, source = FakeEntityStore(), FakeClock(), Source(signed(1), signed(2))
    mds = metadata(store, clock, source)
    assert (await mds.anchors()).no == 1
    clock.advance(hours=23)
    assert (await mds.anchors()).no == 1
    assert source.fetches == 1
    clock.advance(hours=2)
    assert (await mds.anchors()).no == 2
    assert source.fetches == 2
    head = store.tables[Table.FIDOMETADATA][(PARTITION, HEAD)].data
    prefixes = {k.rsplit("-", 1)[0] for (_, k) in store.tables[Table.FIDOMETADATA] if k != HEAD}
    assert prefixes == {f"blob-{str(head['sha256'])[:16]}"}


async def test_an_older_serial_is_refused_as_a_rollback() -> None:
    store, clock, source = FakeEntityStore(), FakeClock(), Source(signed(5), signed(4))
    mds = metadata(store, clock, source)
    assert (await mds.anchors()).no == 5
    clock.advance(days=2)
    assert (await mds.anchors()).no == 5
    assert store.tables[Table.FIDOMETADATA][(PARTITION, HEAD)].data["no"] == 5


async def test_a_storage_writer_cannot_swap_in_their_own_blob() -> None:
    # Someone with write access to the table stores a blob listing their own root, signed by their own
    # "MDS" key, and points the head at it: it does not verify under the configured root, so it is
    # fetched again from FIDO_MDS_URL instead of being used.
    store, clock = FakeEntityStore(), FakeClock()
    await metadata(store, clock, Source(signed())).anchors()
    forger = AttestationRoot.generate("Forged MDS root")
    forged = blob([entry(DEFAULT_AAGUID, [AttestationRoot.generate().der])], issuer_key=forger.key,
                  issuer=forger.certificate, no=99).decode()
    sha = hashlib.sha256(forged.encode()).hexdigest()
    await store.upsert(Table.FIDOMETADATA, Entity(PARTITION, f"blob-{sha[:16]}-0000", {"c00": forged}))
    head = store.tables[Table.FIDOMETADATA][(PARTITION, HEAD)]
    await store.upsert(Table.FIDOMETADATA, Entity(PARTITION, HEAD, {**head.data, "sha256": sha, "no": 99}))
    source = Source(signed(100))
    loaded = await metadata(store, clock, source).anchors()
    assert source.fetches == 1
    assert loaded.no == 100


async def test_a_storage_writer_cannot_put_back_an_older_signed_blob() -> None:
    # An older blob the MDS really signed, put back with a consistent head: a process that holds a newer
    # one keeps it, and a process that has none fetches again once the old one's nextUpdate has passed.
    store, clock = FakeEntityStore(), FakeClock()
    key, ca = local_ca()
    old = blob([entry(DEFAULT_AAGUID, [well_known_root().der])], issuer_key=key, issuer=ca, no=1,
               next_update=(clock.now() + dt.timedelta(days=3)).date())
    await metadata(store, clock, Source(old)).anchors()
    saved = dict(store.tables[Table.FIDOMETADATA])
    clock.advance(days=1, minutes=1)
    mds = metadata(store, clock, Source(signed(2), signed(3)))
    assert (await mds.anchors()).no == 2
    store.tables[Table.FIDOMETADATA] = dict(saved)  # the writer restores yesterday's rows...
    head = saved[(PARTITION, HEAD)]
    await store.upsert(Table.FIDOMETADATA, Entity(PARTITION, HEAD, {**head.data, "fetchedAt": clock.now().isoformat()}))
    clock.advance(days=1, minutes=1)  # ...and the process looks again
    assert (await mds.anchors()).no == 3, "not serial 1 from the table: fetched again"
    clock.advance(days=2)  # past the old blob's nextUpdate: a fresh process does not take it either
    store.tables[Table.FIDOMETADATA] = dict(saved)
    await store.upsert(Table.FIDOMETADATA, Entity(PARTITION, HEAD, {**head.data, "fetchedAt": clock.now().isoformat()}))
    fresh = Source(signed(4))
    assert (await metadata(store, clock, fresh).anchors()).no == 4
    assert fresh.fetches == 1


async def test_an_edited_stored_blob_is_fetched_again() -> None:
    store, clock = FakeEntityStore(), FakeClock()
    await metadata(store, clock, Source(signed())).anchors()
    key = next(k for k in store.tables[Table.FIDOMETADATA] if k[1] != HEAD)
    row = store.tables[Table.FIDOMETADATA][key]
    await store.upsert(Table.FIDOMETADATA, Entity(*key, {"c00": "x" + str(row.data["c00"])[1:]}))
    source = Source(signed())
    await metadata(store, clock, source).anchors()
    assert source.fetches == 1


async def test_an_unreachable_service_keeps_the_last_copy_and_none_is_a_503() -> None:
    store, clock = FakeEntityStore(), FakeClock()
    with pytest.raises(Transient, match="FIDO_MDS_URL") as caught:
        await metadata(store, clock, Source(Transient("FIDO_MDS_URL https://mds.example/ answered 502"))).anchors()
    assert caught.value.status == 503
    await metadata(store, clock, Source(signed(3))).anchors()
    clock.advance(days=2)
    source = Source(Transient("down"))
    mds = metadata(store, clock, source)
    assert (await mds.anchors()).no == 3
    assert (await mds.anchors()).no == 3
    assert source.fetches == 1, "tried again only after an hour"
    clock.advance(minutes=61)
    await mds.anchors()
    assert source.fetches == 2


async def test_a_blob_under_another_root_is_refused() -> None:
    store, clock = FakeEntityStore(), FakeClock()
    other = AttestationRoot.generate("Other CA")
    foreign = blob([entry(DEFAULT_AAGUID, [well_known_root().der])], issuer_key=other.key, issuer=other.certificate)
    with pytest.raises(Transient, match="refused"):
        await metadata(store, clock, Source(foreign)).anchors()
    assert Table.FIDOMETADATA not in store.tables or not store.tables[Table.FIDOMETADATA]
