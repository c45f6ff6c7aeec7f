"""The audit trail against a storage writer without Key Vault access (docs/audit.md): each way of
shortening, dropping or rewriting it is named by verification; an untouched trail is intact.

The attacker here holds the Table storage account (rows of the `audit` table, head rows included)
and nothing in Key Vault: neither the MAC key nor the anchors.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass

import pytest

from shared.adapters.audit import KEY_SECRET, anchor_secret
from shared.adapters.tables import TableEntityStore
from shared.domain.audit import GENESIS, AuditRecord, FindingKind, chain_id
from shared.services.audit import AuditFilter, VerifyReport
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeClock
from tests.integration.audit.conftest import AuditVault

START = dt.datetime(2026, 4, 2, 9, 0, tzinfo=dt.UTC)
DAY = START.date()
RECORDS = 40  # past the head row's interval (32), so the head row names a record an attacker removes


@dataclass
class Trail:
    """One connection's day: 40 records of one target (one chain), a few of others."""

    connection: str
    chain: str
    clock: FakeClock
    vault: AuditVault

    @property
    def store(self) -> TableEntityStore:
        return self.vault.store

    async def row(self, seq: int) -> Entity:
        found = await self.store.get(Table.AUDIT, self.chain, f"{seq:012d}")
        assert found is not None
        return found

    async def put(self, seq: int, data: dict[str, object]) -> None:
        await self.store.upsert(Table.AUDIT, Entity(self.chain, f"{seq:012d}", data))

    async def delete(self, *seqs: int) -> None:
        for seq in seqs:
            await self.store.delete(Table.AUDIT, self.chain, f"{seq:012d}")

    async def verify(self) -> VerifyReport:
        return await self.vault.query(self.clock).verify(self.connection, DAY, DAY)


@pytest.fixture
async def trail(audit_vault: AuditVault) -> Trail:
    connection = f"t{uuid.uuid4().hex[:8]}"
    clock = FakeClock(START)
    sink = audit_vault.sink(clock)
    for n in range(RECORDS):
        await sink.record(connection=connection, actor="test", action="rotation.completed", target="user-1",
                          outcome="ok", correlation_id=f"c{n}", vault_version=f"v{n}", detail={"n": n})
        await sink.record(connection=connection, actor="test", action="sync.user", target=f"other-{n % 4}",
                          outcome="ok", correlation_id=f"d{n}")
        clock.advance(seconds=1)
    await sink.aclose()  # the end of the run: everything is anchored
    return Trail(connection, chain_id(connection, START, "user-1"), clock, audit_vault)


def kinds(report: VerifyReport) -> list[tuple[str, int, int]]:
    return [(str(f.kind), f.seq, f.last_seq) for f in report.findings]


async def test_an_untouched_trail_is_intact(trail: Trail, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = await trail.verify()
    assert report.intact, report.findings
    assert report.checked == 2 * RECORDS
    assert report.as_json()["intact"] is True
    assert report.as_json()["unanchoredWindow"]["seconds"] == 0  # the run ended with an anchor
    # The key is a secret: in no record, no report, no log line.
    key = await trail.vault.secrets.get(KEY_SECRET, (await trail.row(1)).data["keyId"])
    assert key.value
    stored = json.dumps([(await trail.row(s)).data for s in range(1, RECORDS + 1)])
    for text in (stored, json.dumps(report.as_json()), caplog.text):
        assert key.value not in text
        assert base64.b64decode(key.value).hex() not in text


async def test_truncating_the_last_record_is_found(trail: Trail) -> None:
    await trail.delete(RECORDS)
    report = await trail.verify()
    assert kinds(report) == [("truncated", RECORDS, RECORDS)]
    assert f"truncated after {RECORDS - 1}" in report.findings[0].describe()


async def test_truncating_the_last_31_records_is_found(trail: Trail) -> None:
    await trail.delete(*range(RECORDS - 30, RECORDS + 1))
    report = await trail.verify()
    assert kinds(report) == [("truncated", RECORDS - 30, RECORDS)]
    assert f"truncated after {RECORDS - 31}" in report.findings[0].detail


async def test_truncating_with_the_head_row_is_found(trail: Trail) -> None:
    await trail.delete(*range(RECORDS - 30, RECORDS + 1))
    await trail.store.delete(Table.AUDIT, trail.chain, "head")
    report = await trail.verify()
    assert kinds(report) == [("truncated", RECORDS - 30, RECORDS)]
    assert "anchor in Key Vault" in report.findings[0].detail


async def test_deleting_a_whole_chain_is_found(trail: Trail) -> None:
    rows = [e.row_key async for e in trail.store.query(Table.AUDIT, trail.chain)]
    assert "head" in rows
    for row in rows:
        await trail.store.delete(Table.AUDIT, trail.chain, row)
    report = await trail.verify()
    assert kinds(report) == [("chain missing", 1, RECORDS)]
    assert report.findings[0].chain == trail.chain


async def test_an_edit_with_the_chain_recomputed_forward_is_found(trail: Trail) -> None:
    # Without the key, the attacker recomputes the plain SHA-256 chain from the edit to the end.
    prev = (await trail.row(4)).data["hash"]
    for seq in range(5, RECORDS + 1):
        data = dict((await trail.row(seq)).data)
        if seq == 5:
            data["outcome"] = "failed"
        record = AuditRecord.model_validate({**data, "prevHash": prev})
        digest = hashlib.sha256(record.canonical()).hexdigest()
        await trail.put(seq, {**record.model_dump(mode="json", by_alias=True), "hash": digest})
        prev = digest
    await trail.store.upsert(Table.AUDIT, Entity(trail.chain, "head", {"seq": RECORDS, "hash": prev}))
    report = await trail.verify()
    assert ("edited", 5, RECORDS) in kinds(report)
    assert {f.kind for f in report.findings} == {FindingKind.EDITED}


async def test_a_plain_edit_is_found(trail: Trail) -> None:
    data = (await trail.row(7)).data
    await trail.put(7, {**data, "vaultVersion": "forged"})
    report = await trail.verify()
    assert kinds(report) == [("edited", 7, 7)]


async def test_a_deletion_in_the_middle_is_found(trail: Trail) -> None:
    await trail.delete(12, 13)
    report = await trail.verify()
    assert kinds(report) == [("missing", 12, 13)]


async def test_reordering_is_found(trail: Trail) -> None:
    five, six = (await trail.row(5)).data, (await trail.row(6)).data
    await trail.put(5, dict(six))
    await trail.put(6, dict(five))
    report = await trail.verify()
    assert kinds(report) == [("reordered", 5, 5), ("reordered", 6, 6)]
    # Reading still returns every stored record once, page by page.
    query, flt = trail.vault.query(trail.clock), AuditFilter(trail.connection, DAY, DAY, target="user-1")
    seen, token = [], None
    while True:
        page = await query.page(flt, top=5, token=token)  # the first page ends on the moved row 5
        seen += [r.correlation_id for r in page.records]
        if (token := page.next_token) is None:
            break
    assert sorted(seen) == sorted(f"c{n}" for n in range(RECORDS))


async def test_a_record_under_an_unknown_key_is_found(trail: Trail) -> None:
    # The attacker signs a forged record with a key of their own and names a key id the vault lacks.
    own = secrets.token_bytes(32)
    data = dict((await trail.row(9)).data)
    record = AuditRecord.model_validate({**data, "outcome": "failed", "keyId": uuid.uuid4().hex})
    forged = hmac.new(own, record.canonical(), hashlib.sha256).hexdigest()
    await trail.put(9, {**record.model_dump(mode="json", by_alias=True), "hash": forged})
    report = await trail.verify()
    assert kinds(report) == [("key unknown", 9, 9)]
    # A key id shaped as a path is never looked up in the vault; it is unknown too.
    await trail.put(10, {**(await trail.row(10)).data, "keyId": f"../{anchor_secret(trail.connection, DAY)}"})
    assert kinds(await trail.verify()) == [("key unknown", 9, 9), ("key unknown", 10, 10)]


async def test_the_window_left_to_cut_is_the_time_since_the_last_anchor(audit_vault: AuditVault) -> None:
    connection = f"w{uuid.uuid4().hex[:8]}"
    clock = FakeClock(START)
    sink = audit_vault.sink(clock)
    for n in range(31):  # a record every 10 s for five minutes, no flush at the end (the writer died)
        await sink.record(connection=connection, actor="test", action="thing.done", target="user-1", outcome="ok",
                          correlation_id=f"c{n}")
        if n < 30:
            clock.advance(seconds=10)
    versions = await audit_vault.secrets.versions(anchor_secret(connection, DAY))
    # At most one anchor a minute while writing, at least one in every minute records were written.
    assert len(versions) == 6
    clock.advance(seconds=5)
    query = audit_vault.query(clock)
    report = await query.verify(connection, DAY, DAY)
    assert report.intact
    # The last anchor was at 09:05:00 with record 31; 5 s later nothing written since could be cut.
    assert report.window == dt.timedelta(seconds=5)
    assert report.last_anchor == START + dt.timedelta(minutes=5)
    # Records written after the last anchor are the ones a cut is not seen in: here the next two.
    for n in range(2):
        clock.advance(seconds=10)
        await sink.record(connection=connection, actor="test", action="thing.done", target="user-1", outcome="ok",
                          correlation_id=f"late{n}")
    await audit_vault.store.delete(Table.AUDIT, chain_id(connection, START, "user-1"), f"{33:012d}")
    report = await query.verify(connection, DAY, DAY)
    assert report.intact
    assert report.window == dt.timedelta(seconds=25)
    assert report.as_json()["unanchoredWindow"]["from"] == (START + dt.timedelta(minutes=5)).isoformat()
    await sink.aclose()
    assert not (await query.verify(connection, DAY, DAY)).intact  # once anchored, the same cut shows


async def test_old_key_versions_still_verify_after_rotation(audit_vault: AuditVault) -> None:
    connection = f"k{uuid.uuid4().hex[:8]}"
    clock = FakeClock(START)
    sink = audit_vault.sink(clock)
    await sink.record(connection=connection, actor="test", action="a", target="user-1", outcome="ok",
                      correlation_id="before")
    old = await audit_vault.keys(clock).current()
    await audit_vault.secrets.put(KEY_SECRET, base64.b64encode(secrets.token_bytes(32)).decode(),
                                  tags={"purpose": "audit-chain-mac"})
    clock.advance(minutes=11)  # past the key refresh
    await sink.record(connection=connection, actor="test", action="a", target="user-1", outcome="ok",
                      correlation_id="after")
    await sink.aclose()
    rows = [e.data async for e in audit_vault.store.query(Table.AUDIT, chain_id(connection, START, "user-1"))]
    assert rows[0]["keyId"] == old.key_id
    assert rows[1]["keyId"] != old.key_id
    assert rows[1]["prevHash"] == rows[0]["hash"] != GENESIS
    assert (await audit_vault.query(clock).verify(connection, DAY, DAY)).intact


async def test_the_command_line_names_each_finding(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    from shared import cli

    class Operator:  # what audit-verify needs of the composition root
        clock = trail.clock
        audit_query = trail.vault.query(trail.clock)

    intact = await cli.audit_verify(Operator(), trail.connection, 1)  # type: ignore[arg-type]
    assert intact.code == 0
    assert "audit intact: 80 records" in "\n".join(intact.text)
    await trail.delete(3, *range(RECORDS - 30, RECORDS + 1))
    broken = await cli.audit_verify(Operator(), trail.connection, 1)  # type: ignore[arg-type]
    assert broken.code == 1
    out = "\n".join(broken.text)
    assert broken.data["intact"] is False
    assert f"FOUND missing: chain {trail.chain}, record 3:" in out
    assert f"FOUND truncated: chain {trail.chain}, records {RECORDS - 30}-{RECORDS}: truncated after 9" in out
    assert "not yet anchored: 0 s" in out
    body = (await trail.verify()).as_json()
    assert [(f["kind"], f["seq"], f["lastSeq"]) for f in body["findings"]] == [
        ("missing", 3, 3), ("truncated", RECORDS - 30, RECORDS)]
    assert body["intact"] is False
    assert body["firstBrokenLink"]["seq"] == 3
