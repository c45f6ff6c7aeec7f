"""The emulator's store, rules, limits and role book, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.vault import rules
from local.vault.auth import Caller, RoleBook, parse_roles
from local.vault.errors import VaultError
from local.vault.limits import FaultPlan, Faults, SlidingWindow, Throttle
from local.vault.store import EmulatedClock, SecretBook


class ManualTime:
    """A time source the test moves."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def time_source() -> ManualTime:
    return ManualTime()


@pytest.fixture
def book(tmp_path: Path, time_source: ManualTime) -> SecretBook:
    return SecretBook(tmp_path, "https://vault.test", EmulatedClock(source=time_source))


def status(exc: pytest.ExceptionInfo[VaultError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def test_versions_latest_and_values(book: SecretBook) -> None:
    first = book.set("pwd-1", {"value": "a", "tags": {"state": "pending"}})
    second = book.set("pwd-1", {"value": "b"})
    assert book.get("pwd-1", None)["value"] == "b"
    assert book.get("pwd-1", first["id"].rsplit("/", 1)[1])["value"] == "a"
    ids = [item["id"] for item in book.list_versions("pwd-1")]
    assert ids == [first["id"], second["id"]]
    assert first["attributes"]["recoveryLevel"] == "Recoverable+Purgeable"


def test_update_replaces_tags_and_checks_window(book: SecretBook) -> None:
    made = book.set("pwd-1", {"value": "a", "tags": {"x": "1"}})
    version = made["id"].rsplit("/", 1)[1]
    updated = book.update("pwd-1", version, {"tags": {"state": "current"}, "attributes": {"exp": 2000, "nbf": 1000}})
    assert updated["tags"] == {"state": "current"}
    assert "value" not in updated
    with pytest.raises(VaultError) as caught:
        book.update("pwd-1", version, {"attributes": {"nbf": 3000}})
    assert status(caught) == (400, "BadParameter")


def test_disabled_version_is_forbidden(book: SecretBook) -> None:
    version = book.set("pwd-1", {"value": "a", "attributes": {"enabled": False}})["id"].rsplit("/", 1)[1]
    with pytest.raises(VaultError) as caught:
        book.get("pwd-1", version)
    assert status(caught) == (403, "Forbidden")
    assert caught.value.message == "Operation get is not allowed on a disabled secret."


def test_soft_delete_lifecycle(book: SecretBook, time_source: ManualTime) -> None:
    book.set("pwd-1", {"value": "a"})
    deleted = book.delete("pwd-1")
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 90 * 86400
    with pytest.raises(VaultError) as missing:
        book.get("pwd-1", None)
    assert status(missing) == (404, "SecretNotFound")
    with pytest.raises(VaultError) as reserved:
        book.set("PWD-1", {"value": "b"})
    assert status(reserved) == (409, "Conflict")
    assert [d["recoveryId"] for d in book.list_deleted()] == ["https://vault.test/deletedsecrets/pwd-1"]
    book.recover("pwd-1")
    assert book.get("pwd-1", None)["value"] == "a"
    book.delete("pwd-1")
    time_source.now += 91 * 86400  # the scheduled purge date passes
    with pytest.raises(VaultError):
        book.get_deleted("pwd-1")
    book.set("pwd-1", {"value": "fresh"})


@pytest.mark.parametrize("body", [
    {},
    {"value": 5},
    {"value": "x" * (rules.MAX_VALUE_BYTES + 1)},
    {"value": "x", "tags": {f"t{i}": "v" for i in range(16)}},
    {"value": "x", "tags": {"t": "v" * 513}},
    {"value": "x", "tags": {"t": 1}},
    {"value": "x", "contentType": "c" * 256},
    {"value": "x", "attributes": {"enabled": "yes"}},
    {"value": "x", "attributes": {"exp": "tomorrow"}},
    {"value": "x", "attributes": {"nbf": 20, "exp": 10}},
])
def test_bad_bodies_are_refused_and_nothing_is_written(book: SecretBook, body: dict[str, object]) -> None:
    with pytest.raises(VaultError) as caught:
        book.set("pwd-1", body)
    assert status(caught) == (400, "BadParameter")
    assert not book.exists("pwd-1")


@pytest.mark.parametrize("name", ["", "a_b", "a.b", "x" * 128, "ünicode"])
def test_bad_names(book: SecretBook, name: str) -> None:
    with pytest.raises(VaultError) as caught:
        book.set(name, {"value": "v"})
    assert caught.value.status == 400


def test_limits_of_the_rules_are_inclusive(book: SecretBook) -> None:
    book.set("x" * 127, {"value": "v" * rules.MAX_VALUE_BYTES,
                         "tags": {f"{i:0>512}": "t" * 512 for i in range(15)}})


def test_journal_replays_and_never_holds_plain_values(tmp_path: Path) -> None:
    book = SecretBook(tmp_path, "https://vault.test")
    book.set("pwd-1", {"value": "very-secret-value"})
    book.set("pwd-2", {"value": "other-secret-value"})
    book.delete("pwd-2")
    book.purge("pwd-2")
    book.close()
    for path in tmp_path.iterdir():
        assert b"secret-value" not in path.read_bytes()
    again = SecretBook(tmp_path, "https://vault.test")
    assert again.get("pwd-1", None)["value"] == "very-secret-value"
    assert not again.exists("pwd-2")


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    book = SecretBook(tmp_path, "https://vault.test")
    book.set("pwd-1", {"value": "v"})
    book.close()
    with open(tmp_path / "secrets.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"op": "put", "secr')
    assert SecretBook(tmp_path, "https://vault.test").get("pwd-1", None)["value"] == "v"


def test_sliding_window() -> None:
    window = SlidingWindow(3, 10.0)
    assert [window.admit(t) for t in (0, 1, 2)] == [0, 0, 0]
    assert window.admit(3) == pytest.approx(7.0)
    assert window.admit(10.5) == 0


def test_throttle_reports_retry_after_in_real_seconds(time_source: ManualTime) -> None:
    throttle = Throttle(EmulatedClock(10.0, source=time_source))
    for _ in range(rules.SECRET_CREATES_PER_WINDOW):
        throttle.check(create=True)
    with pytest.raises(VaultError) as caught:
        throttle.check(create=True)
    assert caught.value.status == 429
    assert float(caught.value.headers["Retry-After"]) == pytest.approx(1.0)
    throttle.check(create=False)  # the other budget is separate


def test_fault_plan_is_reproducible() -> None:
    plan = FaultPlan(Faults(error_rate=0.3, drop_rate=0.3, ambiguous_rate=0.3, seed=1))
    first = [plan.draw(write=True) for _ in range(50)]
    plan.set(Faults(error_rate=0.3, drop_rate=0.3, ambiguous_rate=0.3, seed=1))
    assert [plan.draw(write=True) for _ in range(50)] == first
    assert {"error", "drop", "ambiguous", None} >= set(first)


def test_role_book_rereads_its_file(tmp_path: Path) -> None:
    path = tmp_path / "roles.json"
    path.write_text(json.dumps({"OID-1": "Key Vault Secrets User"}))
    roles = RoleBook(path)
    caller = Caller(oid="oid-1", appid="app", tid="t")
    roles.authorize(caller, "get", "r")
    with pytest.raises(VaultError) as caught:
        roles.authorize(caller, "set", "r")
    assert caught.value.inner == "ForbiddenByRbac"
    path.write_text(json.dumps({"oid-1": ["Key Vault Secrets Officer"], "oid-2": "Key Vault Reader"}))
    roles.authorize(caller, "set", "r")


def test_role_documents_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        parse_roles({"oid": "Owner"})
    with pytest.raises(ValueError, match="JSON object"):
        parse_roles(["oid"])
