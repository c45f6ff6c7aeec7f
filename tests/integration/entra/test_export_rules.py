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
from shared.errors import InvalidInput
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


async def test_attributes_manager_groups_and_passwordless_on_the_simulator(stack: Any, entra: EntraFixture) -> None:
    tag = uuid.uuid4().hex[:8]
    repo = TableScimRepository(stack.tables)
    entra_dir = GraphExportDirectory(stack.graph)
    engine = ExportService(repo, FakeAuditSink())
    scim = ScimService(repo, FakeWorkQueue(), FakeClock())
    owner = next(a["servicePrincipalId"] for a in entra.admin("GET", "/_sim/tenant")["apps"]
                 if a["clientId"] == entra.client_id)
    conn = _connection(entra.tenant_id, tag, newUsers="passwordless", groups={"owners": [owner]})

    async def domains() -> list[str]:
        return await entra_dir.verified_domains()

    async def create(kind: Any, body: dict[str, Any]) -> str:
        return (await scim.create(conn, kind, body, request_id=f"r-{tag}", domains=domains)).id

    async def patch(kind: Any, scim_id: str, *operations: dict[str, Any]) -> None:
        await scim.patch(conn, kind, scim_id, {"schemas": [PATCH], "Operations": list(operations)}, if_match=None,
                         request_id=f"p-{tag}", domains=domains)

    boss = await create("Users", {"schemas": [USER_SCHEMA], "userName": f"boss{tag}@{DEMO_DOMAIN}"})
    ada = await create("Users", {
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": f"ada{tag}@{DEMO_DOMAIN}", "title": "Analyst",
        "name": {"givenName": "Ada", "familyName": "Lovelace"}, "emails": [{"value": f"ada{tag}@{DEMO_DOMAIN}"}],
        "phoneNumbers": [{"value": "+41 44 000 00 00", "type": "work"}],
        "addresses": [{"type": "work", "locality": "Zurich", "postalCode": "8000", "country": "CH"}],
        ENTERPRISE_SCHEMA: {"employeeNumber": f"A{tag}", "department": "R&D", "organization": "Engines",
                            "manager": {"value": boss}}})
    await engine.apply(conn, entra_dir, "Users", boss, request_id="b1")
    applied = await engine.apply(conn, entra_dir, "Users", ada, request_id="a1")
    ada_id = str(applied.plan.link.entra_id)
    boss_id = str((await repo.link(conn.name, "Users", boss)).entra_id)  # type: ignore[union-attr]
    fields = "jobTitle,givenName,surname,mail,businessPhones,city,postalCode,country,employeeId,department,companyName"
    got = await stack.graph.get(f"/users/{ada_id}", params={"$select": fields})
    assert {k: got[k] for k in fields.split(",")} == {
        "jobTitle": "Analyst", "givenName": "Ada", "surname": "Lovelace", "mail": f"ada{tag}@{DEMO_DOMAIN}",
        "businessPhones": ["+41 44 000 00 00"], "city": "Zurich", "postalCode": "8000", "country": "CH",
        "employeeId": f"A{tag}", "department": "R&D", "companyName": "Engines"}
    assert await entra_dir.manager_id(ada_id) == boss_id
    # passwordless: Graph still requires a password on create; it is random, never to be changed, never expiring.
    profile = entra.admin("GET", f"/_sim/users/{ada_id}/password")
    assert (profile["forceChange"], profile["policies"]) == ("False", "DisablePasswordExpiration")

    # Updates: every attribute that moved is written; a removed manager is cleared on the bridge's user.
    await patch("Users", ada, {"op": "replace", "path": "title", "value": "Engineer"},
                {"op": "remove", "path": "addresses"}, {"op": "remove", "path": f"{ENTERPRISE_SCHEMA}:manager"})
    await engine.apply(conn, entra_dir, "Users", ada, request_id="a2")
    got = await stack.graph.get(f"/users/{ada_id}", params={"$select": "jobTitle,city,postalCode"})
    assert (got["jobTitle"], got["city"], got["postalCode"]) == ("Engineer", None, None)
    assert await entra_dir.manager_id(ada_id) is None
    assert (await engine.apply(conn, entra_dir, "Users", ada, request_id="a3")).written == 0

    # Groups: the bridge's app is bound as owner on create; a rename and a description reach Entra.
    team = await create("Groups", {"schemas": [GROUP_SCHEMA], "displayName": f"Team {tag}",
                                   "members": [{"value": ada}]})
    group_id = str((await engine.apply(conn, entra_dir, "Groups", team, request_id="g1")).plan.link.entra_id)
    assert await entra_dir.owner_ids(group_id) == {owner}
    await patch("Groups", team, {"op": "replace", "path": "displayName", "value": f"Renamed {tag}"},
                {"op": "add", "path": "urn:entra-bridge:params:scim:schemas:extension:2.0:Group:description",
                 "value": "Exported"})
    await engine.apply(conn, entra_dir, "Groups", team, request_id="g2")
    group = await entra_dir.group(group_id)
    assert group is not None
    assert (group.display_name, group.description) == (f"Renamed {tag}", "Exported")
    assert await entra_dir.member_ids(group_id) == {ada_id}

    # The simulator refuses what Graph refuses, as the SCIM service does before it.
    for bad in ({"jobTitle": "t" * 129}, {"businessPhones": ["1", "2"]}, {"mail": "adà@x.example"}):
        with pytest.raises(InvalidInput):
            await entra_dir.update_user(ada_id, bad)
    for ident in (ada_id, boss_id):
        await entra_dir.delete_user(ident)
    await entra_dir.delete_group(group_id)
