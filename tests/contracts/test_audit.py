"""The AuditSink, AuditKeys and AuditAnchors contracts: the recording stand-in and the vault adapters over the
in-memory vault, against the Table sink on Azurite and the vault adapters on the emulator."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from local.memory import AuditEntry
from shared.domain.audit import Anchor, ChainHead
from shared.services.ports import AuditAnchors, AuditKeys
from tests.fixtures.contracts import AuditSubject


def connection() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


async def test_records_are_kept_in_order_with_every_field(audit_subject: AuditSubject) -> None:
    conn = connection()
    await audit_subject.sink.record(connection=conn, actor="sync", action="user.add", target="u1",
                                    outcome="success", correlation_id="c1", graph_request_id="g1",
                                    detail={"groups": ["a"], "count": 2})
    await audit_subject.sink.record(connection=conn, actor="rotation", action="password.rotate", target="u1",
                                    outcome="success", correlation_id="c2", vault_version="v1")
    await audit_subject.sink.flush()
    assert await audit_subject.read(conn) == [
        AuditEntry(conn, "sync", "user.add", "u1", "success", "c1", "g1", None, {"groups": ["a"], "count": 2}),
        AuditEntry(conn, "rotation", "password.rotate", "u1", "success", "c2", None, "v1", {})]
    assert await audit_subject.read(connection()) == []


@pytest.mark.parametrize("member", ["password", "clientSecret", "private_key", "token"])
async def test_a_detail_named_like_a_secret_is_refused(audit_subject: AuditSubject, member: str) -> None:
    conn = connection()
    with pytest.raises(ValueError, match=member):
        await audit_subject.sink.record(connection=conn, actor="a", action="x", target="t", outcome="success",
                                        correlation_id="c", detail={"nested": {member: "hunter2"}})
    assert await audit_subject.read(conn) == []


async def test_the_current_key_is_made_once_and_found_by_id(audit_keys: AuditKeys) -> None:
    key = await audit_keys.current()
    assert len(key.secret) >= 32
    assert await audit_keys.current() == key
    assert await audit_keys.find(key.key_id) == key
    assert await audit_keys.find(uuid.uuid4().hex) is None


async def test_anchors_keep_every_version_of_a_day(audit_anchors: AuditAnchors) -> None:
    conn, day = connection(), dt.date(2026, 5, 1)
    assert await audit_anchors.latest(conn, day) is None
    assert await audit_anchors.history(conn, day) == []
    at = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    first = Anchor(connection=conn, day="20260501", at=at, chains={"c0": ChainHead(count=1, head="a" * 64)})
    second = first.merged({"c0": ChainHead(count=2, head="b" * 64)}, at + dt.timedelta(minutes=1))
    await audit_anchors.write(first)
    await audit_anchors.write(second)
    assert await audit_anchors.latest(conn, day) == second
    assert await audit_anchors.history(conn, day) == [first, second]
    assert await audit_anchors.latest(conn, dt.date(2026, 5, 2)) is None
