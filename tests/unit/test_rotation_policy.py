"""Rotation policy: eligibility, due dates, and Key Vault version states."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.domain.rotation import (
    CURRENT,
    FAILED,
    PENDING,
    SUPERSEDED,
    Refusal,
    RotationSubject,
    TagChange,
    VersionInfo,
    after_success,
    is_due,
    refusal,
    secret_name,
    too_soon,
    view,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
USER_ADMIN = frozenset({"User Administrator"})
PAA = frozenset({"Privileged Authentication Administrator"})


def subject(**kw: object) -> RotationSubject:
    base: dict[str, object] = {"user_id": "11111111-1111-1111-1111-111111111111", "upn": "ann@contoso.example"}
    base.update(kw)
    return RotationSubject(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "app_roles", "expected"), [
    ({}, USER_ADMIN, None),
    ({"active": False}, USER_ADMIN, Refusal.NOT_ACTIVE),
    ({"in_rotation_group": False}, USER_ADMIN, Refusal.NOT_IN_GROUP),
    ({"on_premises_sync": True}, USER_ADMIN, Refusal.SYNCED_WITHOUT_WRITEBACK),
    ({"admin_roles": frozenset({"Global Administrator"})}, USER_ADMIN, Refusal.ADMIN_NEEDS_PRIVILEGED_ROLE),
    ({"admin_roles": frozenset({"Global Administrator"})}, PAA, None),
    ({"admin_roles": frozenset({"Helpdesk Administrator"})}, USER_ADMIN, None),
    ({}, frozenset(), Refusal.APP_LACKS_ROLE),
    ({}, frozenset({"Directory Readers"}), Refusal.APP_LACKS_ROLE),
])
def test_refusals(kw: dict[str, object], app_roles: frozenset[str], expected: Refusal | None) -> None:
    assert refusal(subject(**kw), excluded=[], writeback_path=False, app_roles=app_roles) == expected


def test_exclusion_by_upn_or_id_and_writeback_allows_synced_users() -> None:
    s = subject(on_premises_sync=True)
    assert refusal(s, excluded=["ANN@contoso.example"], writeback_path=True, app_roles=USER_ADMIN) == Refusal.EXCLUDED
    assert refusal(s, excluded=[], writeback_path=True, app_roles=USER_ADMIN) is None


def test_refusal_texts_name_what_to_fix() -> None:
    assert "Privileged Authentication Administrator" in Refusal.ADMIN_NEEDS_PRIVILEGED_ROLE.value
    assert "writebackPath" in Refusal.SYNCED_WITHOUT_WRITEBACK.value
    assert "User Administrator" in Refusal.APP_LACKS_ROLE.value


def test_due_and_manual_guard() -> None:
    assert is_due(None, interval_days=30, now=T0)
    assert not is_due(T0, interval_days=30, now=T0 + dt.timedelta(days=29, hours=23))
    assert is_due(T0, interval_days=30, now=T0 + dt.timedelta(days=30))
    assert too_soon(None, min_interval_minutes=5, now=T0) is None
    assert too_soon(T0, min_interval_minutes=5, now=T0 + dt.timedelta(minutes=2)) == dt.timedelta(minutes=3)
    assert too_soon(T0, min_interval_minutes=5, now=T0 + dt.timedelta(minutes=5)) is None


def test_secret_name_follows_key_vault_rules() -> None:
    uid = "11111111-1111-1111-1111-111111111111"
    assert secret_name("demo", uid) == f"pwd-demo-{uid}"
    with pytest.raises(ValueError, match="naming rules"):
        secret_name("demo", "x" * 130)


def v(version: str, state: str, minutes: int, enabled: bool = True) -> VersionInfo:
    return VersionInfo(version=version, state=state, created_on=T0 + dt.timedelta(minutes=minutes), enabled=enabled)


def test_view_returns_current_and_every_pending_version() -> None:
    versions = [v("a", SUPERSEDED, 0), v("b", CURRENT, 1), v("c", PENDING, 2), v("d", FAILED, 3), v("e", PENDING, 4)]
    seen = view(versions)
    assert seen.current is not None
    assert seen.current.version == "b"
    assert [p.version for p in seen.possibly_current] == ["e", "c"]
    assert view([v("x", PENDING, 0)]).current is None
    assert [p.version for p in view([v("x", PENDING, 0)]).possibly_current] == ["x"]
    # Same second as the current version: Key Vault cannot order them, so the pending one still counts.
    same = view([v("cur", CURRENT, 5), v("amb", PENDING, 5)])
    assert [p.version for p in same.possibly_current] == ["amb"]


def test_after_success_supersedes_older_and_disables_beyond_keep() -> None:
    versions = [v("s1", SUPERSEDED, 0), v("s2", SUPERSEDED, 1), v("cur", CURRENT, 2), v("amb", PENDING, 3),
                v("bad", FAILED, 4), v("new", PENDING, 5)]
    changes = after_success(versions, "new", keep_superseded=2)
    assert changes == [
        TagChange(version="new", state=CURRENT),
        TagChange(version="amb", state=SUPERSEDED),
        TagChange(version="cur", state=SUPERSEDED),
        TagChange(version="s2", state=SUPERSEDED, enabled=False),
        TagChange(version="s1", state=SUPERSEDED, enabled=False),
    ]
    # Already-disabled old versions are left alone.
    versions = [v("s1", SUPERSEDED, 0, enabled=False), v("new", PENDING, 5)]
    assert after_success(versions, "new", keep_superseded=0) == [TagChange(version="new", state=CURRENT)]
