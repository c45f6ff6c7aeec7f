"""Enrollment-state groups owned or adopted, and their uninstall (POST connections/{c}/enrollment-groups/uninstall
and `python -m shared.cli uninstall-groups`): only the groups the bridge created are deleted, found by recorded
object id even when renamed since; adopted groups are left and named; audited; for Bridge.Admin only."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

import functions.sync as sync_functions
from functions import http
from shared import cli
from shared.adapters.ownership import TableGroupRecords
from shared.config import Connection, settings
from shared.domain.directory import Enrollment, UserRow
from shared.domain.enrollment import Ownership
from shared.errors import Configuration, InvalidInput, NotFound
from shared.services.enrollment_groups import EnrollmentGroups
from shared.services.ports import Entity
from shared.topology import Table
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore


@dataclass
class Groups:
    """A GroupWriter over a dict: id -> (name, members)."""

    groups: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    created: int = 0
    #: id -> (mailNickname, description) of the groups created through this writer
    made: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def find_groups(self, display_name: str) -> list[str]:
        return [g for g, (name, _) in self.groups.items() if name == display_name]

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        self.created += 1
        group_id = f"g{self.created}"
        self.groups[group_id] = (display_name, set())
        self.made[group_id] = (mail_nickname, description)
        return group_id

    async def group(self, group_id: str) -> dict[str, Any] | None:
        if group_id not in self.groups:
            return None
        nickname, description = self.made.get(group_id, ("ops-made", "made by an operator"))
        return {"id": group_id, "displayName": self.groups[group_id][0], "mailNickname": nickname,
                "description": description}

    async def member_ids(self, group_id: str) -> set[str]:
        if group_id not in self.groups:
            raise NotFound(f"group {group_id} does not exist")
        return set(self.groups[group_id][1])

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        self.groups[group_id][1].update(user_ids)

    async def remove_member(self, group_id: str, user_id: str) -> None:
        self.groups[group_id][1].discard(user_id)

    async def delete_group(self, group_id: str) -> None:
        self.groups.pop(group_id, None)


CONN = Connection.model_validate({
    "name": "contoso", "tenantId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "cloud": "local",
    "auth": {"kind": "clientSecret", "clientId": "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d", "secretName": "s"},
    "features": {"passkeys": {"enabled": True}}})


def renamed(conn: Connection, **names: str) -> Connection:
    """The connection with other enrollment-group names (camelCase keys, as in CONNECTIONS)."""
    doc = conn.model_dump(mode="json", by_alias=True)
    doc["features"]["passkeys"]["enrollmentGroups"].update(names)
    return Connection.model_validate(doc)


@dataclass
class FakeBridge:
    writer: Groups
    enrollment_groups: EnrollmentGroups
    store: FakeEntityStore
    conn: Connection = CONN

    def connection(self, name: str) -> Connection:
        assert name == CONN.name
        return self.conn

    async def directory_reader(self, conn: Connection) -> Groups:
        return self.writer

    async def graph(self, conn: Connection) -> Groups:
        return self.writer

    async def scope(self, conn: Connection) -> SimpleNamespace:
        return SimpleNamespace(app=self, conn=conn, directory_reader=lambda: self.writer)


def _functions() -> dict[str, Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]]:
    app = func.FunctionApp()
    app.register_functions(sync_functions.bp)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBridge, FakeAuditSink]]:
    audit, store = FakeAuditSink(), FakeEntityStore()
    fake = FakeBridge(Groups(), EnrollmentGroups(TableGroupRecords(store), audit, FakeClock()), store)
    monkeypatch.setattr(sync_functions, "bridge", lambda: fake)
    monkeypatch.setattr(http, "bridge", lambda: fake)  # it resolves {c}
    settings.cache_clear()
    yield fake, audit
    settings.cache_clear()


def principal(*roles: str) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": "ops@contoso.example"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name",
                                        "role_typ": "roles"}).encode()).decode()


async def post(headers: dict[str, str] | None = None, query: str = "") -> tuple[int, dict[str, Any]]:
    req = func.HttpRequest("POST", "http://127.0.0.1/api/connections/contoso/enrollment-groups/uninstall" + query,
                           headers=headers or {}, route_params={"c": "contoso"}, body=b"",
                           params=dict(p.split("=") for p in query.lstrip("?").split("&") if p))
    response = await FUNCTIONS["uninstall_enrollment_groups"](req)
    return response.status_code, json.loads(response.get_body() or b"{}")


async def test_only_the_groups_the_bridge_created_are_deleted_and_audited(
        world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, audit = world
    names = CONN.features.passkeys.enrollment_groups
    fake.writer.groups["found"] = (names.paired_with_entra, {"u1"})
    await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c0", run_id="run-1")
    created = sorted(g for g in fake.writer.groups if g != "found")
    assert len(created) == 2

    status, body = await post()
    assert status == 200
    assert sorted(g["id"] for g in body["deleted"]) == created
    assert {g["ownership"] for g in body["deleted"]} == {"owned"}
    assert body["left"] == [{"id": "found", "name": names.paired_with_entra, "state": "paired_with_entra",
                             "ownership": "adopted", "recordedAt": "2026-01-01T00:00:00Z", "runId": "run-1",
                             "reason": "adopted: it existed before the bridge used it"}]
    assert "next sync creates the groups again" in body["note"]
    assert list(fake.writer.groups) == ["found"]
    done = [r for r in audit.records if r.action == "enrollmentGroups.uninstalled"]
    assert len(done) == 1
    assert done[0].detail == {"deleted": [g["id"] for g in body["deleted"]], "left": ["found"], "renamedSince": []}
    assert done[0].actor == "function-key"
    assert sum(1 for r in audit.records if r.action == "enrollmentGroup.deleted") == 2
    assert [r.target for r in audit.records if r.action == "enrollmentGroup.left"] == ["found"]

    status, body = await post()
    assert (status, body["deleted"], body["left"]) == (200, [], [])
    assert list(fake.writer.groups) == ["found"]


async def test_it_needs_the_admin_role(world: tuple[FakeBridge, FakeAuditSink],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    settings.cache_clear()
    status, _ = await post({"x-ms-client-principal": principal("Bridge.Devices")})
    assert status == 403
    status, body = await post({"x-ms-client-principal": principal("Bridge.Admin")})
    assert (status, body["deleted"]) == (200, [])


async def adopt_after_rename(fake: FakeBridge) -> Connection:
    """The reported case: the bridge created its three groups; then the operator configured a name that a group
    already in Entra has, and a sync ran."""
    await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c1", run_id="run-1")
    fake.writer.groups["ops"] = ("Made by ops", {"u9"})
    fake.conn = renamed(CONN, pairedWithEntra="Made by ops")
    await fake.enrollment_groups.ensure(fake.conn, fake.writer, correlation_id="c2", run_id="run-2")
    return fake.conn


async def test_uninstall_after_adoption_deletes_only_owned_groups(world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, audit = world
    conn = await adopt_after_rename(fake)
    records = {r.id: r for r in await fake.enrollment_groups.known(conn.name)}
    assert {g: r.ownership for g, r in records.items()} == {"g1": Ownership.OWNED, "g2": Ownership.OWNED,
                                                            "g3": Ownership.OWNED, "ops": Ownership.ADOPTED}
    assert (records["ops"].run_id, records["g3"].run_id) == ("run-2", "run-1")
    adopted = [r for r in audit.records if r.action == "enrollmentGroup.adopted"]
    assert [(r.target, r.outcome, r.detail["name"], r.detail["runId"]) for r in adopted] == \
        [("ops", "adopted", "Made by ops", "run-2")]

    status, body = await post(query="?dryRun=true")
    assert status == 200
    assert body["dryRun"] is True
    assert [g["id"] for g in body["deleted"]] == ["g1", "g2", "g3"]
    assert set(fake.writer.groups) == {"g1", "g2", "g3", "ops"}  # a dry run changes nothing
    assert len(await fake.enrollment_groups.known(conn.name)) == 4

    status, body = await post()
    assert status == 200
    assert body["dryRun"] is False
    # g3 was recorded under the old name; it is found by its object id and deleted with the others.
    assert [g["id"] for g in body["deleted"]] == ["g1", "g2", "g3"]
    assert body["deleted"][2]["configuredName"] == "Made by ops"
    assert [(g["id"], g["name"]) for g in body["left"]] == [("ops", "Made by ops")]
    assert fake.writer.groups == {"ops": ("Made by ops", {"u9"})}
    done = next(r for r in audit.records if r.action == "enrollmentGroups.uninstalled")
    assert done.detail == {"deleted": ["g1", "g2", "g3"], "left": ["ops"], "renamedSince": ["g3"]}
    assert await fake.enrollment_groups.known(conn.name) == []


async def test_a_found_group_the_bridge_recorded_keeps_its_ownership(world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, audit = world
    await adopt_after_rename(fake)
    # The name goes back: the bridge finds its own group by name, and it stays owned (never "adopted").
    await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c3", run_id="run-3")
    records = {r.id: r for r in await fake.enrollment_groups.known(CONN.name)}
    assert records["g3"].ownership is Ownership.OWNED
    assert records["g3"].run_id == "run-1"
    assert sum(1 for r in audit.records if r.action == "enrollmentGroup.adopted") == 1
    assert len(fake.writer.groups) == 4


async def test_a_recorded_group_deleted_in_entra_is_made_again(world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, audit = world
    await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c1", run_id="run-1")
    del fake.writer.groups["g2"]  # someone deleted it by hand
    users = [UserRow(id="u1", upn="u1@contoso.example", enrollment=Enrollment.PAIRED_WITH_PROVIDER)]
    changes = await fake.enrollment_groups.reconcile(CONN, fake.writer, users, correlation_id="c2", run_id="run-2")
    assert changes.changes == 1
    assert fake.writer.groups["g4"] == (CONN.features.passkeys.enrollment_groups.paired_with_provider, {"u1"})
    records = {r.id: r for r in await fake.enrollment_groups.known(CONN.name)}
    assert set(records) == {"g1", "g3", "g4"}
    assert (records["g4"].ownership, records["g4"].run_id) == (Ownership.OWNED, "run-2")
    missing = [r for r in audit.records if r.action == "enrollmentGroup.missing"]
    assert [(r.target, r.outcome) for r in missing] == [("g2", "forgotten")]


async def test_a_group_recorded_as_owned_that_is_not_the_bridges_is_left(
        world: tuple[FakeBridge, FakeAuditSink]) -> None:
    """A record is only storage: a forged one must not make uninstall delete a group the bridge did not
    create."""
    fake, audit = world
    await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c1", run_id="run-1")
    fake.writer.groups["theirs"] = ("Payroll admins", {"u7"})
    await fake.store.upsert(Table.SYNCSTATE, Entity("contoso", "enrollmentGroup.theirs", {
        "name": "Payroll admins", "state": "paired_with_entra", "ownership": "owned"}))
    # One of the bridge's groups had its description edited by hand: its mailNickname still says it is ours.
    fake.writer.made["g1"] = (fake.writer.made["g1"][0], "edited")

    status, body = await post(query="?dryRun=true")
    assert [g["id"] for g in body["deleted"]] == ["g1", "g2", "g3"]
    assert [(g["id"], g["ownership"]) for g in body["left"]] == [("theirs", "owned")]
    assert "left for a person to check" in body["left"][0]["reason"]
    status, body = await post()
    assert status == 200
    assert set(fake.writer.groups) == {"theirs"}
    left = [r for r in audit.records if r.action == "enrollmentGroup.left"]
    assert [r.target for r in left] == ["theirs"]


async def test_two_groups_with_the_name_name_the_setting(world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, _ = world
    names = CONN.features.passkeys.enrollment_groups
    fake.writer.groups["a"] = fake.writer.groups["b"] = (names.paired_with_provider, set())
    with pytest.raises(Configuration, match=r"features\.passkeys\.enrollmentGroups\.pairedWithProvider"):
        await fake.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c")


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def cli_world(world: tuple[FakeBridge, FakeAuditSink]) -> FakeBridge:
    fake, _ = world
    return fake


def terminal(monkeypatch: pytest.MonkeyPatch, present: bool, answer: str = "") -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: present, raising=False)

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answer

    monkeypatch.setattr("builtins.input", ask)
    return asked


async def test_cli_refuses_without_a_terminal_and_without_yes(cli_world: FakeBridge, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    await adopt_after_rename(cli_world)
    terminal(monkeypatch, present=False)
    with pytest.raises(InvalidInput, match="--yes"):
        await cli.uninstall_groups(cli_world, "contoso", dry_run=False, yes=False)  # type: ignore[arg-type]
    assert len(cli_world.writer.groups) == 4

    planned = await cli.uninstall_groups(cli_world, "contoso", dry_run=True, yes=False)  # type: ignore[arg-type]
    assert planned.code == 0
    out = "\n".join(planned.text)
    assert "would delete 3" in out
    assert "g3" in out
    assert "configured name now 'Made by ops'" in out
    assert "would leave 1 group(s) in Entra that the bridge did not create" in out
    assert "ops  'Made by ops'" in out
    assert len(cli_world.writer.groups) == 4

    done = await cli.uninstall_groups(cli_world, "contoso", dry_run=False, yes=True)  # type: ignore[arg-type]
    assert done.code == 0
    assert set(cli_world.writer.groups) == {"ops"}
    assert "left 1 group(s) in Entra that the bridge did not create" in "\n".join(done.text)
    assert [g["id"] for g in done.data["left"]] == ["ops"]


async def test_cli_asks_on_a_terminal(cli_world: FakeBridge, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    await adopt_after_rename(cli_world)
    asked = terminal(monkeypatch, present=True, answer="n")
    cancelled = await cli.uninstall_groups(cli_world, "contoso", dry_run=False, yes=False)  # type: ignore[arg-type]
    assert cancelled.code == 1
    assert asked
    assert "Delete 3 group(s)" in asked[0]
    assert "nothing deleted" in cancelled.text
    assert len(cli_world.writer.groups) == 4

    terminal(monkeypatch, present=True, answer="y")
    done = await cli.uninstall_groups(cli_world, "contoso", dry_run=False, yes=False)  # type: ignore[arg-type]
    assert done.code == 0
    assert set(cli_world.writer.groups) == {"ops"}
