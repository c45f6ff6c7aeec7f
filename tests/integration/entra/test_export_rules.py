"""Export rules on the Entra simulator and Azurite through the production adapters (docs/export.md): a user
mapped by employeeId is linked, not created, and never disabled; a created user gets its license, and no free
seat is a problem, not a failure; a group name in use holds creation back (onlyIfNameUnused); members removed in
SCIM leave the Entra group; a deleted SCIM group deletes only the group the bridge created."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.sync import open_world
from local.entra.demo import DEMO_DOMAIN, EXPORT_PERMISSIONS, GRAPH_PERMISSIONS
from shared.adapters.graph.export import GraphExportDirectory
from shared.adapters.scim import TableScimRepository
from shared.config import Connection
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA
from shared.services.export import ExportService
from shared.services.scim import ScimService
from tests.fakes import FakeAuditSink, FakeClock, FakeWorkQueue
from tests.fixtures.entra import EntraFixture

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
async def stack(entra: EntraFixture, azurite_connection_string: str, tls_files: Any) -> AsyncIterator[Any]:
    entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"graphRoles": [*GRAPH_PERMISSIONS, *EXPORT_PERMISSIONS]})
    try:
        async with open_world(entra.tenant_id, entra.url, azurite_connection_string, str(tls_files.ca)) as world:
            yield world
    finally:
        entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"graphRoles": list(GRAPH_PERMISSIONS)})


def _connection(tenant_id: str, tag: str, **export: Any) -> Connection:
    return Connection.model_validate({
        "name": f"ex{tag}", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d",
                 "secretName": "bridge-client-secret"},
        "features": {"export": {"enabled": True, "usageLocation": "CH", **export}}})


async def test_export_rules_on_the_simulator(stack: Any, entra: EntraFixture) -> None:
    tag = uuid.uuid4().hex[:8]
    repo = TableScimRepository(stack.tables)
    entra_dir = GraphExportDirectory(stack.graph)
    audit = FakeAuditSink()
    engine = ExportService(repo, audit)
    scim = ScimService(repo, FakeWorkQueue(), FakeClock())
    # EMS has 25 seats in the demo tenant: the first exported users take what is free, later ones get a problem.
    conn = _connection(entra.tenant_id, tag, usernameMapping="employeeId", defaultLicenseSku="EMS")

    async def domains() -> list[str]:
        return await entra_dir.verified_domains()

    async def user(name: str, number: str) -> str:
        created = await scim.create(conn, "Users", {"schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "active": True,
                                                    "userName": f"{name}{tag}@{DEMO_DOMAIN}",
                                                    ENTERPRISE_SCHEMA: {"employeeNumber": number}},
                                    request_id=f"r-{name}", domains=domains)
        return created.id

    # An Entra user with the employee id exists: mapped and linked, not created, and left enabled on SCIM delete.
    existing = next(iter((await stack.graph.get("/users", params={"$top": "1"}))["value"]))
    await stack.graph.send("PATCH", f"/users/{existing['id']}", body={"employeeId": f"E{tag}"})
    mapped = await user("mapped", f"E{tag}")
    applied = await engine.apply(conn, entra_dir, "Users", mapped, request_id="m1")
    assert applied.plan.link.entra_id == existing["id"]
    assert applied.plan.link.created is False
    await scim.delete(conn, "Users", mapped, if_match=None, request_id="m2")
    left = await engine.apply(conn, entra_dir, "Users", mapped, request_id="m3")
    assert any("not created by the bridge" in p for p in left.plan.problems)
    assert (await entra_dir.user(existing["id"])).account_enabled is True  # type: ignore[union-attr]

    # Created users: licensed while EMS has seats; once none is free, the user is exported with a problem.
    skus = {s.part_number: s for s in await entra_dir.skus()}
    free = skus["EMS"].free
    created = [await user(f"new{i}", f"N{tag}{i}") for i in range(free + 1)]
    results = [await engine.apply(conn, entra_dir, "Users", c, request_id=f"c{i}") for i, c in enumerate(created)]
    assert all(r.plan.link.entra_id and r.plan.link.created for r in results)
    licensed = [r for r in results if any(s.action == "user.assignLicense" for s in r.plan.steps)]
    assert len(licensed) == free
    assert any("no free seat of EMS" in p for p in results[-1].plan.problems)
    assert {r.action for r in audit.records} >= {"export.user.create", "export.user.assignLicense"}
    assert all(r.graph_request_id for r in audit.records if r.action == "export.user.create")

    # A group name an operator already uses holds creation back.
    taken = f"Taken {tag}"
    operators = await stack.graph.send("POST", "/groups", body={"displayName": taken, "mailNickname": f"x{tag}",
                                                                "mailEnabled": False, "securityEnabled": True})
    held = await scim.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": taken}, request_id="g0",
                             domains=domains)
    plan = await engine.apply(conn, entra_dir, "Groups", held.id, request_id="g0")
    assert plan.plan.link.entra_id is None
    assert any("onlyIfNameUnused" in p for p in plan.plan.problems)

    # A new group with two members; one removed in SCIM leaves Entra; the SCIM delete deletes the bridge's group.
    team = await scim.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": f"Team {tag}",
                                              "members": [{"value": created[0]}, {"value": created[1]}]},
                             request_id="g1", domains=domains)
    group_id = (await engine.apply(conn, entra_dir, "Groups", team.id, request_id="g1")).plan.link.entra_id
    assert group_id is not None
    assert len(await entra_dir.member_ids(group_id)) == 2
    await scim.patch(conn, "Groups", team.id, {"schemas": [PATCH], "Operations": [
        {"op": "remove", "path": f'members[value eq "{created[0]}"]'}]}, if_match=None, request_id="g2",
        domains=domains)
    await engine.apply(conn, entra_dir, "Groups", team.id, request_id="g2")
    second = (await repo.link(conn.name, "Users", created[1])).entra_id  # type: ignore[union-attr]
    assert await entra_dir.member_ids(group_id) == {second}
    await scim.delete(conn, "Groups", team.id, if_match=None, request_id="g3")
    await engine.apply(conn, entra_dir, "Groups", team.id, request_id="g3")
    assert await entra_dir.group(group_id) is None
    # Clean up the seats this test took, so other tests find the demo tenant's licenses as they were.
    for result in results:
        if result.plan.link.entra_id:
            await entra_dir.delete_user(result.plan.link.entra_id)
    await entra_dir.delete_group(str((operators.body or {})["id"]))
    await stack.graph.send("PATCH", f"/users/{existing['id']}", body={"employeeId": None})
