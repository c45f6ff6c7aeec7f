"""The keyed audit chain, its anchors and its findings, as pure functions."""

from __future__ import annotations

import datetime as dt

from shared.domain.audit import (
    GENESIS,
    Anchor,
    AuditRecord,
    ChainHead,
    ChainKey,
    FindingKind,
    chain_missing,
    check_chain,
    empty_anchor,
    unanchored_window,
)

KEY = ChainKey("a" * 32, b"k" * 32)
OTHER = ChainKey("b" * 32, b"o" * 32)
AT = dt.datetime(2026, 4, 2, 9, 0, tzinfo=dt.UTC)


def chain(n: int, key: ChainKey = KEY) -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = AuditRecord.model_validate({
            "connection": "c", "chain": "c_20260402_1", "seq": seq, "at": AT, "actor": "t", "action": "a",
            "target": "u", "outcome": "ok", "correlationId": str(seq), "prevHash": prev}).sealed(key)
        records.append(record)
        prev = record.hash
    return records


def found(records: list[AuditRecord], claims: tuple[ChainHead, ...] = (),
          hint: int | None = None) -> list[tuple[FindingKind, int, int]]:
    keys = {KEY.key_id: KEY, OTHER.key_id: OTHER}
    return [(f.kind, f.seq, f.last_seq) for f in check_chain("c_20260402_1", records, keys, claims, hint)]


def test_a_sealed_chain_verifies_and_the_mac_needs_the_key() -> None:
    records = chain(5)
    assert found(records) == []
    assert records[0].verifies(KEY)
    assert not records[0].verifies(OTHER)
    assert records[1].prev_hash == records[0].hash
    assert "k" * 32 not in repr(KEY)


def test_each_finding_is_named() -> None:
    records = chain(10)
    assert found(records[:7], claims=(ChainHead(count=10, head=records[9].hash),)) == [
        (FindingKind.TRUNCATED, 8, 10)]
    assert found(records[:7], hint=8) == [(FindingKind.TRUNCATED, 8, 8)]
    assert found([*records[:3], *records[5:]]) == [(FindingKind.MISSING, 4, 5)]
    assert found([*records[:3], records[4], records[3], *records[5:]]) == [
        (FindingKind.REORDERED, 4, 4), (FindingKind.REORDERED, 5, 5)]
    edited = records[2].model_copy(update={"outcome": "failed"})
    assert found([*records[:2], edited, *records[3:]]) == [(FindingKind.EDITED, 3, 3)]
    unknown = records[2].model_copy(update={"key_id": "c" * 32})
    assert found([*records[:2], unknown, *records[3:]]) == [(FindingKind.KEY_UNKNOWN, 3, 3)]
    path = records[2].model_copy(update={"key_id": "../pwd-c-u"})
    assert found([*records[:2], path, *records[3:]]) == [(FindingKind.KEY_UNKNOWN, 3, 3)]
    # A record from another chain of the same key (a valid MAC in the wrong place) is not the one anchored.
    replaced = chain(10, OTHER)
    assert found([*records[:9], replaced[9]], claims=(ChainHead(count=10, head=records[9].hash),)) == [
        (FindingKind.EDITED, 10, 10)]
    assert chain_missing("x", [ChainHead(count=3, head="h"), ChainHead(count=9, head="i")]).last_seq == 9


def test_anchors_merge_to_the_longer_head_and_say_when_nothing_is_new() -> None:
    base = empty_anchor("c", AT.date(), AT)
    one = base.merged({"c_20260402_1": ChainHead(count=3, head="x")}, AT)
    two = one.merged({"c_20260402_1": ChainHead(count=2, head="y"), "c_20260402_2": ChainHead(count=1, head="z")},
                     AT + dt.timedelta(minutes=1))
    assert two.chains["c_20260402_1"].count == 3
    assert set(two.chains) == {"c_20260402_1", "c_20260402_2"}
    assert two.covers({"c_20260402_1": ChainHead(count=3, head="x")})
    assert not two.covers({"c_20260402_1": ChainHead(count=4, head="w")})
    assert Anchor.model_validate_json(two.model_dump_json()) == two


def test_the_window_runs_from_the_last_anchor_to_now_or_the_day_end() -> None:
    day = AT.date()
    anchors = [empty_anchor("c", day, AT), empty_anchor("c", day, AT + dt.timedelta(minutes=3))]
    assert unanchored_window(anchors, day, AT + dt.timedelta(minutes=4)) == dt.timedelta(minutes=1)
    assert unanchored_window(anchors, day, AT + dt.timedelta(days=3)) == dt.timedelta(hours=14, minutes=57)
    assert unanchored_window([], day, AT) == dt.timedelta(hours=9)
