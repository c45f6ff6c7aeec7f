"""The export engine's rules (docs/export.md) on the SCIM service and the memory tenant's export view, which
refuses as Graph does:
user mapping, creation, licenses, disabling and deleting only what the bridge created, group matching,
creation, duplicates, memberships, dry-run, the removal threshold, audit per write, idempotency."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.scim import TableScimRepository
from shared.config import Connection
from shared.domain.export import Link
from shared.domain.scim import (
    ENTERPRISE_SCHEMA,
    GROUP_EXTENSION_SCHEMA,
    GROUP_SCHEMA,
    USER_SCHEMA,
    Kind,
    ScimError,
    Stored,
)
from shared.errors import Transient
from shared.services.export import ExportService
from shared.services.ports import JsonObject, Written
from shared.services.scim import ScimService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_graph import E3, MemoryExport, MemoryTenant

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class World:
    """The SCIM service and the engine on one fake table store, and Entra in memory (`tenant`, seen through its
    export view `entra`)."""

    def __init__(self, **export: Any) -> None:
        self.conn = Connection.model_validate({
            "name": "c1", "tenantId": "11111111-2222-3333-4444-555555555555",
            "features": {"export": {"enabled": True, "usageLocation": "CH", "defaultLicenseSku": "ENTERPRISEPACK",
                                    **export}}})
        entities = FakeEntityStore()
        self.repo = TableScimRepository(entities)
        self.scim = ScimService(self.repo, FakeWorkQueue(), FakeClock())
        self.audit = FakeAuditSink()
        self.engine = ExportService(self.repo, self.audit)
        self.tenant = MemoryTenant()
        self.entra = self.tenant.export()

    async def domains(self) -> list[str]:
        return await self.entra.verified_domains()

    async def user(self, user_name: str, **extra: Any) -> str:
        stored = await self.scim.create(self.conn, "Users", {
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": user_name, "active": True,
            ENTERPRISE_SCHEMA: {"employeeNumber": extra.pop("employeeNumber", "1")}, **extra},
            request_id=f"req-{user_name}", domains=self.domains)
        return stored.id

    async def group(self, name: str, members: list[str]) -> str:
        stored = await self.scim.create(self.conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": name,
                                                              "members": [{"value": m} for m in members]},
                                        request_id=f"req-{name}", domains=self.domains)
        return stored.id

    async def apply(self, kind: Kind, scim_id: str, *, dry_run: bool = False) -> Any:
        return await self.engine.apply(self.conn, self.entra, kind, scim_id, request_id=f"apply-{scim_id}",
                                       dry_run=dry_run)


async def test_a_new_user_is_created_licensed_and_audited_with_the_request_id() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    applied = await world.apply("Users", ada)
    [created] = world.entra.users.values()
    assert created.user_principal_name == "ada@contoso.example"
    assert created.usage_location == "CH"
    assert created.licenses == (E3,)
    assert [a for a, _ in world.entra.writes] == ["create_user", "assign_license"]
    assert [r.action for r in world.audit.records] == ["export.user.create", "export.user.assignLicense"]
    assert {r.correlation_id for r in world.audit.records} == {f"apply-{ada}"}
    assert all(r.graph_request_id for r in world.audit.records)
    # The password Entra got is in no audit record, plan or answer.
    password = world.tenant.passwords[created.id]
    assert password not in repr(world.audit.records)
    assert password not in repr(applied.as_dict())
    # Delivered again: nothing more is written.
    again = await world.apply("Users", ada)
    assert again.written == 0
    assert len(world.entra.writes) == 2


@pytest.mark.parametrize(("mapping", "entra_user", "scim_extra"), [
    ("upn", {"userPrincipalName": "ada@contoso.example"}, {}),
    ("mail", {"userPrincipalName": "a.l@contoso.example", "mail": "ada@mail.example"},
     {"emails": [{"value": "ada@mail.example", "primary": True}]}),
    ("employeeId", {"userPrincipalName": "x@contoso.example", "employeeId": "E-7"}, {"employeeNumber": "E-7"}),
    ("userNameAtDomain", {"userPrincipalName": "ada@contoso.example"}, {}),
])
async def test_users_are_mapped_by_the_chosen_criterion(mapping: str, entra_user: dict[str, Any],
                                                        scim_extra: dict[str, Any]) -> None:
    world = World(usernameMapping=mapping, userDomain="contoso.example")
    existing = world.tenant.add_user(entra_user, usageLocation="CH")
    name = "ada" + ("@elsewhere.example" if mapping == "userNameAtDomain" else "@contoso.example")
    if mapping == "userNameAtDomain":
        world.tenant.add_domain("elsewhere.example")  # only for the SCIM service's own check of userName
    ada = await world.user(name, **scim_extra)
    applied = await world.apply("Users", ada)
    assert applied.plan.link.entra_id == existing
    assert list(world.entra.users) == [existing]  # mapped, not created
    assert applied.plan.link.created is False


async def test_user_name_at_domain_needs_a_verified_domain() -> None:
    world = World(usernameMapping="userNameAtDomain", userDomain="notverified.example")
    with pytest.raises(ScimError, match=r"notverified\.example"):
        await world.user("ada@contoso.example")
    assert world.entra.writes == []


async def test_no_free_seat_is_a_problem_in_status_not_a_crash() -> None:
    world = World()
    world.tenant.skus[E3]["enabled"] = 0
    ada = await world.user("ada@contoso.example")
    applied = await world.apply("Users", ada)
    assert [a for a, _ in world.entra.writes] == ["create_user"]
    assert any("no free seat of ENTERPRISEPACK" in p for p in applied.plan.problems)
    summary = await world.engine.summary("c1")
    assert summary["users"] == 1
    assert any("no free seat" in p["problem"] for p in summary["problems"])


async def test_an_unknown_default_sku_names_the_setting() -> None:
    world = World(defaultLicenseSku="NOSUCHSKU")
    applied = await world.apply("Users", await world.user("ada@contoso.example"))
    assert any("defaultLicenseSku 'NOSUCHSKU'" in p for p in applied.plan.problems)


async def test_delete_disables_and_deletes_only_what_the_bridge_created() -> None:
    world = World()
    ours = await world.user("ada@contoso.example")
    await world.apply("Users", ours)
    theirs_entra = world.tenant.add_user(userPrincipalName="bob@contoso.example", usageLocation="CH",
                                         assignedLicenses=[E3])
    theirs = await world.user("bob@contoso.example")
    await world.apply("Users", theirs)
    for scim_id in (ours, theirs):
        await world.scim.patch(world.conn, "Users", scim_id, {"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": False}]}, if_match=None, request_id="off",
            domains=world.domains)
        await world.apply("Users", scim_id)
    created = next(u for u in world.entra.users.values() if u.user_principal_name == "ada@contoso.example")
    assert created.account_enabled is False
    assert world.entra.users[theirs_entra].account_enabled is True  # never touched
    await world.scim.delete(world.conn, "Users", theirs, if_match=None, request_id="del")
    left = await world.apply("Users", theirs)
    assert theirs_entra in world.entra.users
    assert any("not created by the bridge" in p for p in left.plan.problems)

    deleting = World(deleteUsers=True)
    mine = await deleting.user("eve@contoso.example")
    await deleting.apply("Users", mine)
    await deleting.scim.delete(deleting.conn, "Users", mine, if_match=None, request_id="del")
    await deleting.apply("Users", mine)
    assert deleting.entra.users == {}


async def test_groups_are_created_and_memberships_kept_equal() -> None:
    world = World()
    ada, bob = await world.user("ada@contoso.example"), await world.user("bob@contoso.example")
    for user in (ada, bob):
        await world.apply("Users", user)
    team = await world.group("Team", [ada])
    # A member user whose own change has not been applied yet is applied first, under the group's request id.
    early = await world.apply("Groups", await world.group("Early", [cy := await world.user("cy@contoso.example")]))
    cy_entra = (await world.repo.link("c1", "Users", cy)).entra_id  # type: ignore[union-attr]
    assert world.entra.members[early.plan.link.entra_id] == {cy_entra}
    assert (await world.apply("Users", cy)).written == 0  # its own delivery finds nothing left to do
    with pytest.raises(Transient):
        # A member group not in Entra yet: the change is delivered again later.
        await world.apply("Groups", await world.group("Outer early", [await world.group("Inner", [])]))
    applied = await world.apply("Groups", team)
    group_id = applied.plan.link.entra_id
    assert world.entra.groups[group_id].security_enabled is True
    ada_entra = (await world.repo.link("c1", "Users", ada)).entra_id  # type: ignore[union-attr]
    bob_entra = (await world.repo.link("c1", "Users", bob)).entra_id  # type: ignore[union-attr]
    assert world.entra.members[group_id] == {ada_entra}
    await world.scim.patch(world.conn, "Groups", team, {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": bob}]},
        {"op": "remove", "path": f'members[value eq "{ada}"]'}]}, if_match=None, request_id="p", domains=world.domains)
    await world.apply("Groups", team)
    assert world.entra.members[group_id] == {bob_entra}
    # Drift made in Entra is repaired by the next change.
    world.tenant.add_member(group_id, world.tenant.add_user(displayName="Stranger"))
    await world.apply("Groups", team)
    assert world.entra.members[group_id] == {bob_entra}
    # Nested SCIM groups become nested Entra groups.
    outer = await world.group("Outer", [team])
    nested = await world.apply("Groups", outer)
    assert world.entra.members[nested.plan.link.entra_id] == {group_id}


async def test_group_matching_and_creation_rules() -> None:
    world = World()  # match typeAndEmail, createWhenUnmatched onlyIfNameUnused
    world.tenant.add_group("Sales", mailNickname="sales-m365", groupTypes=["Unified"], mailEnabled=True,
                           securityEnabled=False)
    sales = await world.group("Sales", [])
    held = await world.apply("Groups", sales)
    assert held.plan.link.entra_id is None
    assert any("onlyIfNameUnused" in p for p in held.plan.problems)
    assert world.entra.writes == []

    by_name = World(groups={"match": "nameOnly"})
    theirs = by_name.tenant.add_group("Sales", mailNickname="x", groupTypes=["Unified"], mailEnabled=True,
                                      securityEnabled=False)
    assert (await by_name.apply("Groups", await by_name.group("Sales", []))).plan.link.entra_id == theirs

    always = World(groups={"createWhenUnmatched": "always", "kind": "microsoft365"})
    always.tenant.add_group("Sales", mailNickname="other")
    made = await always.apply("Groups", await always.group("Sales", []))
    created = always.entra.groups[made.plan.link.entra_id]
    assert created.unified
    assert created.mail_enabled is True
    assert any("duplicate Entra group" in p for p in made.plan.problems)


async def test_duplicates_are_deleted_only_when_the_bridge_created_them() -> None:
    world = World(groups={"removeDuplicates": True})
    first = await world.group("Ops", [])
    made_first = (await world.apply("Groups", first)).plan.link.entra_id
    second = await world.group("Ops two", [])
    made_second = (await world.apply("Groups", second)).plan.link.entra_id
    foreign = world.tenant.add_group("Ops", mailNickname="ops-foreign")
    # The second SCIM group takes the first's name: its own Entra group stays, the other bridge group of that
    # name is a duplicate and goes, the group an operator made is listed and kept.
    await world.scim.replace(world.conn, "Groups", second, {"schemas": [GROUP_SCHEMA], "displayName": "Ops"},
                             if_match=None, request_id="rename", domains=world.domains)
    applied = await world.apply("Groups", second)
    assert applied.plan.link.entra_id == made_second
    assert made_first not in world.entra.groups
    assert foreign in world.entra.groups
    assert any(foreign in p for p in applied.plan.problems)
    assert ("delete_group", made_first) in world.entra.writes


async def test_dry_run_writes_nothing_and_the_threshold_stops_mass_removal() -> None:
    world = World(removalThreshold=1)
    users = [await world.user(f"u{i}@contoso.example") for i in range(3)]
    plan = await world.apply("Users", users[0], dry_run=True)
    assert [s.action for s in plan.plan.steps] == ["user.create", "user.assignLicense"]
    assert world.entra.writes == []
    for user in users:
        await world.apply("Users", user)
    team = await world.group("Team", users)
    await world.apply("Groups", team)
    before = list(world.entra.writes)
    await world.scim.replace(world.conn, "Groups", team, {"schemas": [GROUP_SCHEMA], "displayName": "Team"},
                             if_match=None, request_id="empty", domains=world.domains)
    stopped = await world.apply("Groups", team)
    assert stopped.plan.stopped
    assert any("removalThreshold 1" in p for p in stopped.plan.problems)
    assert world.entra.writes == before


async def test_pending_changes_are_listed_as_a_plan() -> None:
    world = World()
    await world.user("ada@contoso.example")
    plans = await world.engine.pending(world.conn, world.entra)
    assert [s.action for p in plans for s in p.steps] == ["user.create", "user.assignLicense"]
    assert world.entra.writes == []


async def test_the_cli_prints_the_plan_of_pending_changes_then_applies_them() -> None:
    from shared import cli

    world = World()
    ada = await world.user("ada@contoso.example")

    class Composition:
        export = world.engine

        @staticmethod
        def connection(name: str) -> Connection:
            return world.conn

        @staticmethod
        async def export_directory(conn: Connection) -> MemoryExport:
            return world.entra

    planned = await cli.export(Composition(), "c1", dry_run=True)  # type: ignore[arg-type]
    assert planned.code == 0
    assert planned.text[0] == "1 pending changes (dry run: nothing written)"
    assert planned.text[1] == f"Users {ada}:"
    assert planned.text[2].startswith("  user.create (new) (upn=ada@contoso.example")
    assert world.entra.writes == []
    done = await cli.export(Composition(), "c1", dry_run=False)  # type: ignore[arg-type]
    assert done.text[0] == "1 changes applied"
    assert [a for a, _ in world.entra.writes] == ["create_user", "assign_license"]
    assert await world.engine.changes("c1") == []


async def test_a_user_created_meanwhile_by_another_delivery_is_adopted_not_failed() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    entra = world.entra
    original = entra.create_user

    async def raced(body: JsonObject) -> Written:
        await original(body)  # another delivery of the same change won the race
        return await original(body)  # this one is refused: the UPN exists

    entra.create_user = raced  # type: ignore[method-assign]
    applied = await world.apply("Users", ada)
    [user] = entra.users.values()
    assert applied.plan.link.entra_id == user.id
    assert applied.plan.link.created is True
    assert user.licenses == (E3,)


async def _patch(world: World, kind: Kind, scim_id: str, *operations: dict[str, Any]) -> None:
    await world.scim.patch(world.conn, kind, scim_id, {"schemas": [PATCH], "Operations": list(operations)},
                           if_match=None, request_id="r-patch", domains=world.domains)


async def test_every_mapped_user_attribute_is_written_on_create_and_update() -> None:
    world = World()
    ada = await world.user("ada@contoso.example", displayName="Ada Lovelace", title="Analyst",
                           name={"givenName": "Ada", "familyName": "Lovelace"},
                           emails=[{"value": "ada@contoso.example", "primary": True}],
                           phoneNumbers=[{"value": "+41 1", "type": "work"}, {"value": "+41 2", "type": "mobile"}],
                           addresses=[{"type": "work", "streetAddress": "1 Engine Way", "locality": "London",
                                       "region": "LDN", "postalCode": "N1", "country": "GB"}],
                           employeeNumber="1815")
    await world.apply("Users", ada)
    [created] = world.entra.users.values()
    assert {k: v for k, v in created.properties.items() if v not in (None, [])} == {
        "displayName": "Ada Lovelace", "givenName": "Ada", "surname": "Lovelace", "jobTitle": "Analyst",
        "mail": "ada@contoso.example", "businessPhones": ["+41 1"], "mobilePhone": "+41 2",
        "streetAddress": "1 Engine Way", "city": "London", "state": "LDN", "postalCode": "N1", "country": "GB",
        "employeeId": "1815"}
    # A later change writes every attribute that moved, and clears what SCIM no longer has (the bridge's user).
    await _patch(world, "Users", ada, {"op": "replace", "path": "title", "value": "Engineer"},
                 {"op": "remove", "path": "phoneNumbers"},
                 {"op": "replace", "path": f"{ENTERPRISE_SCHEMA}:department", "value": "Engines"},
                 {"op": "replace", "path": f"{ENTERPRISE_SCHEMA}:organization", "value": "Babbage & Co"})
    applied = await world.apply("Users", ada)
    [update] = [s for s in applied.plan.steps if s.action == "user.update"]
    assert update.detail["body"] == {"jobTitle": "Engineer", "businessPhones": [], "mobilePhone": None,
                                     "department": "Engines", "companyName": "Babbage & Co"}
    assert (await world.apply("Users", ada)).written == 0


async def test_a_mapped_user_is_updated_but_not_cleared_and_mail_needs_a_verified_domain() -> None:
    world = World(usernameMapping="employeeId")
    found = world.tenant.add_user(userPrincipalName="grace@contoso.example", employeeId="7", displayName="Grace",
                                  jobTitle="Admiral", mobilePhone="+1 5")
    grace = await world.user("grace@contoso.example", employeeNumber="7", displayName="Grace Hopper",
                             emails=[{"value": "grace@elsewhere.example"}])
    applied = await world.apply("Users", grace)
    [update] = [s for s in applied.plan.steps if s.action == "user.update"]
    # jobTitle and mobilePhone were set by another source: a user the bridge did not create keeps them.
    assert update.detail["body"] == {"displayName": "Grace Hopper", "usageLocation": "CH"}
    assert world.entra.users[found].properties["jobTitle"] == "Admiral"
    assert any("mail grace@elsewhere.example is not written" in p for p in applied.plan.problems)


async def test_the_manager_is_set_once_it_is_in_entra_and_cleared_on_the_bridges_users() -> None:
    world = World()
    boss = await world.user("boss@contoso.example", employeeNumber="1")
    ada = await world.user("ada@contoso.example", employeeNumber="2", **{ENTERPRISE_SCHEMA: {"manager": {
        "value": boss}}})
    # The manager's own change is not applied yet: the user is written, then its change is delivered again.
    with pytest.raises(Transient):
        await world.apply("Users", ada)
    ada_id = (await world.repo.link("c1", "Users", ada)).entra_id  # type: ignore[union-attr]
    assert ada_id in world.entra.users
    await world.apply("Users", boss)
    boss_id = (await world.repo.link("c1", "Users", boss)).entra_id  # type: ignore[union-attr]
    applied = await world.apply("Users", ada)
    assert [s.action for s in applied.plan.steps] == ["user.setManager"]
    assert world.tenant.managers[ada_id] == boss_id
    await _patch(world, "Users", ada, {"op": "remove", "path": f"{ENTERPRISE_SCHEMA}:manager"})
    await world.apply("Users", ada)
    assert ada_id not in world.tenant.managers


async def test_a_group_rename_and_description_reach_entra_and_owners_are_bound_on_create() -> None:
    owner = "0f0e0d0c-0b0a-4090-8070-605040302010"
    world = World(groups={"owners": [owner]})
    world.tenant.add_user(id=owner, userPrincipalName="owner@contoso.example")  # Graph binds only existing users
    team = await world.scim.create(world.conn, "Groups", {
        "schemas": [GROUP_SCHEMA, GROUP_EXTENSION_SCHEMA], "displayName": "Engines",
        GROUP_EXTENSION_SCHEMA: {"description": "The analytical ones"}}, request_id="g1", domains=world.domains)
    created = await world.apply("Groups", team.id)
    group_id = str(created.plan.link.entra_id)
    assert world.entra.groups[group_id].description == "The analytical ones"
    assert world.entra.owners[group_id] == {owner}
    assert created.plan.problems == ()
    await _patch(world, "Groups", team.id, {"op": "replace", "path": "displayName", "value": "Difference Engines"},
                 {"op": "replace", "path": f"{GROUP_EXTENSION_SCHEMA}:description", "value": "Renamed"})
    renamed = await world.apply("Groups", team.id)
    assert [s.action for s in renamed.plan.steps] == ["group.update"]
    assert (world.entra.groups[group_id].display_name, world.entra.groups[group_id].description) == (
        "Difference Engines", "Renamed")
    # An owner removed in Entra is bound again by the group's next change.
    world.tenant.owners[group_id] = []
    again = await world.apply("Groups", team.id)
    assert [s.action for s in again.plan.steps] == ["group.addOwner"]
    # Without groups.owners, a created group is not left silently with the bridge's app as its only manager.
    plain = World()
    alone = await plain.group("Alone", [])
    assert any("groups.owners" in p for p in (await plain.apply("Groups", alone)).plan.problems)


async def test_a_matched_group_is_renamed_but_its_description_is_not_cleared() -> None:
    world = World(groups={"match": "nameOnly"})
    found = world.tenant.add_group("Ops", description="Written by the Entra admins")
    ops = await world.group("Ops", [])
    assert (await world.apply("Groups", ops)).plan.link.entra_id == found
    await _patch(world, "Groups", ops, {"op": "replace", "path": "displayName", "value": "Operations"})
    await world.apply("Groups", ops)
    assert world.entra.groups[found].display_name == "Operations"
    assert world.entra.groups[found].description == "Written by the Entra admins"


@pytest.mark.parametrize(("mode", "force", "policies"), [("password", True, None),
                                                         ("passwordless", False, "DisablePasswordExpiration")])
async def test_new_users_get_a_password_or_go_passwordless(mode: str, force: bool, policies: str | None) -> None:
    world = World(newUsers=mode)
    ada = await world.user("ada@contoso.example")
    await world.apply("Users", ada)
    [(user_id, body)] = world.entra.created.items()
    assert body["passwordProfile"] == {"forceChangePasswordNextSignIn": force}
    assert body.get("passwordPolicies") == policies
    assert world.tenant.passwords[user_id]  # Graph requires one on create; no one knows it


async def test_a_group_of_50000_members_is_exported() -> None:
    world = World()
    ids = [f"s{i:05d}" for i in range(50_000)]
    for i, scim_id in enumerate(ids):
        entra_id = world.tenant.add_user(id=f"e{i}")
        await world.repo.put_link("c1", Link("Users", scim_id, entra_id, True, (), 1))
    group = Stored("Groups", "big", {"schemas": [GROUP_SCHEMA], "displayName": "Everyone",
                                     "members": [{"value": i} for i in ids]}, 1, "t", "t")
    await world.repo.create("c1", group, "")
    applied = await world.apply("Groups", "big")
    assert len(world.entra.members[str(applied.plan.link.entra_id)]) == 50_000
    assert (await world.apply("Groups", "big")).written == 0


async def test_a_run_leaves_a_user_pending_until_its_manager_is_in_entra() -> None:
    world = World()
    boss = await world.user("boss@contoso.example", employeeNumber="1")
    ada = await world.user("ada@contoso.example", employeeNumber="2", **{ENTERPRISE_SCHEMA: {"manager": {
        "value": boss}}})
    boss_change = next(c for c in await world.repo.changes("c1") if c.scim_id == boss)
    await world.repo.drop_change("c1", boss_change.id)  # the boss's change is not in this run
    await world.engine.run(world.conn, world.entra)
    assert [c.scim_id for c in await world.repo.changes("c1")] == [ada]
    ada_id = (await world.repo.link("c1", "Users", ada)).entra_id  # type: ignore[union-attr]
    assert ada_id in world.entra.users
    await world.apply("Users", boss)
    await world.engine.run(world.conn, world.entra)
    assert await world.repo.changes("c1") == []
    assert world.tenant.managers[str(ada_id)] == (await world.repo.link("c1", "Users", boss)).entra_id  # type: ignore[union-attr]
