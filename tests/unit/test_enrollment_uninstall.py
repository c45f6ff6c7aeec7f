"""POST connections/{c}/enrollment-groups/uninstall: deletes only the groups the bridge created, audited,
for Bridge.Admin only."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
import pytest

import functions.sync as sync_functions
from shared.config import Connection, settings
from shared.services.directory import EnrollmentGroups
from tests.fakes import FakeAuditSink, FakeEntityStore


@dataclass
class Groups:
    """A GroupWriter over a dict: id -> (name, members)."""

    groups: dict[str, tuple[str, set[str]]] = field(default_factory=dict)

    async def find_groups(self, display_name: str) -> list[str]:
        return [g for g, (name, _) in self.groups.items() if name == display_name]

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        group_id = f"g{len(self.groups) + 1}"
        self.groups[group_id] = (display_name, set())
        return group_id

    async def member_ids(self, group_id: str) -> set[str]:
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


@dataclass
class FakeSync:
    enrollment_groups: EnrollmentGroups


@dataclass
class FakeBridge:
    writer: Groups
    sync: FakeSync

    def connection(self, name: str) -> Connection:
        assert name == CONN.name
        return CONN

    async def directory_reader(self, conn: Connection) -> Groups:
        return self.writer


def _functions() -> dict[str, Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]]:
    app = func.FunctionApp()
    app.register_functions(sync_functions.bp)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


FUNCTIONS = _functions()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBridge, FakeAuditSink]]:
    audit = FakeAuditSink()
    fake = FakeBridge(Groups(), FakeSync(EnrollmentGroups(FakeEntityStore(), audit)))
    monkeypatch.setattr(sync_functions, "bridge", lambda: fake)
    settings.cache_clear()
    yield fake, audit
    settings.cache_clear()


def principal(*roles: str) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": "ops@contoso.example"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name",
                                        "role_typ": "roles"}).encode()).decode()


async def post(headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = func.HttpRequest("POST", "http://127.0.0.1/api/connections/contoso/enrollment-groups/uninstall",
                           headers=headers or {}, route_params={"c": "contoso"}, body=b"")
    response = await FUNCTIONS["uninstall_enrollment_groups"](req)
    return response.status_code, json.loads(response.get_body() or b"{}")


async def test_only_the_groups_the_bridge_created_are_deleted_and_audited(
        world: tuple[FakeBridge, FakeAuditSink]) -> None:
    fake, audit = world
    names = CONN.features.passkeys.enrollment_groups
    fake.writer.groups["found"] = (names.paired_with_entra, {"u1"})
    await fake.sync.enrollment_groups.ensure(CONN, fake.writer, correlation_id="c0")
    created = sorted(g for g in fake.writer.groups if g != "found")
    assert len(created) == 2

    status, body = await post()
    assert status == 200
    assert sorted(body["deleted"]) == created
    assert "next sync creates the groups again" in body["note"]
    assert list(fake.writer.groups) == ["found"]
    done = [r for r in audit.records if r.action == "enrollmentGroups.uninstalled"]
    assert len(done) == 1
    assert done[0].detail == {"deleted": body["deleted"], "keptExisting": ["found"]}
    assert done[0].actor == "function-key"
    assert sum(1 for r in audit.records if r.action == "enrollmentGroup.deleted") == 2

    status, body = await post()
    assert (status, body["deleted"]) == (200, [])
    assert list(fake.writer.groups) == ["found"]


async def test_it_needs_the_admin_role(world: tuple[FakeBridge, FakeAuditSink],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "true")
    settings.cache_clear()
    status, _ = await post({"x-ms-client-principal": principal("Bridge.Devices")})
    assert status == 403
    status, body = await post({"x-ms-client-principal": principal("Bridge.Admin")})
    assert (status, body["deleted"]) == (200, [])
