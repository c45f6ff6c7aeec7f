"""ExportDirectory (SCIM export's writes to Entra) and the licences on the in-memory tenant and on the Graph
adapter against the simulator: users created, found, updated and deleted; subscribedSkus and assignLicense with
its refusals; groups created, found, their members added and removed, deleted; Graph's refusals as InvalidInput."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import InvalidInput, NotFound
from tests.fixtures.graph_contracts import GraphSubject

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


def _user_body(graph: GraphSubject, name: str, **extra: Any) -> dict[str, Any]:
    return {"accountEnabled": True, "displayName": name, "mailNickname": name,
            "userPrincipalName": f"{name}@{graph.admin.domain}",
            "passwordProfile": {"password": "Contract-Passw0rd-1", "forceChangePasswordNextSignIn": True}, **extra}


async def test_a_user_is_created_found_updated_and_deleted(graph: GraphSubject) -> None:
    assert graph.admin.domain in await graph.export.verified_domains()
    name = graph.unique("exported")
    employee = graph.unique("E")
    written = await graph.export.create_user(_user_body(graph, name, employeeId=employee))
    assert written.id
    user = await graph.export.user(written.id)
    assert user is not None
    assert user.user_principal_name == f"{name}@{graph.admin.domain}"
    assert user.account_enabled is True
    assert user.employee_id == employee
    assert user.licenses == ()
    assert (await graph.export.find_user("userPrincipalName", user.user_principal_name.upper()) or user).id == user.id
    assert (await graph.export.find_user("employeeId", employee) or user).id == user.id
    assert await graph.export.find_user("employeeId", graph.unique("E")) is None

    await graph.export.update_user(user.id, {"accountEnabled": False, "displayName": "Renamed", "usageLocation": "DE"})
    updated = await graph.export.user(user.id)
    assert updated is not None
    assert (updated.account_enabled, updated.display_name, updated.usage_location) == (False, "Renamed", "DE")

    await graph.export.delete_user(user.id)
    assert await graph.export.user(user.id) is None
    again = await graph.export.delete_user(user.id)  # absent counts as deleted
    assert again.id is None


async def test_graphs_refusals_of_a_user(graph: GraphSubject) -> None:
    name = graph.unique("twice")
    await graph.export.create_user(_user_body(graph, name))
    with pytest.raises(InvalidInput):
        await graph.export.create_user(_user_body(graph, name))
    with pytest.raises(InvalidInput):
        await graph.export.create_user({**_user_body(graph, name), "userPrincipalName": f"{name}@unverified.invalid"})
    with pytest.raises(InvalidInput):  # Graph requires an initial password
        await graph.export.create_user({**_user_body(graph, graph.unique("nopassword")),
                                        "passwordProfile": {"forceChangePasswordNextSignIn": True}})


async def test_a_licence_is_assigned_and_counted(graph: GraphSubject) -> None:
    skus = {s.sku_id: s for s in await graph.export.skus()}
    assert skus[E3].part_number == "ENTERPRISEPACK"
    free = skus[E3].free
    user = (await graph.export.create_user(_user_body(graph, graph.unique("licensed")))).id
    assert user
    with pytest.raises(InvalidInput):  # no usageLocation yet
        await graph.export.assign_license(user, E3)
    await graph.export.update_user(user, {"usageLocation": "US"})
    with pytest.raises(InvalidInput):
        await graph.export.assign_license(user, "00000000-0000-0000-0000-00000000beef")
    await graph.export.assign_license(user, E3)
    assert (await graph.export.user(user) or pytest.fail("gone")).licenses == (E3,)
    assert {s.sku_id: s for s in await graph.export.skus()}[E3].free == free - 1
    await graph.export.delete_user(user)


async def test_a_group_is_created_found_filled_and_deleted(graph: GraphSubject) -> None:
    name = graph.unique("Export Group")
    written = await graph.export.create_group({"displayName": name, "mailNickname": name.replace(" ", ""),
                                               "mailEnabled": False, "securityEnabled": True, "groupTypes": []})
    group = written.id
    assert group
    found = await graph.export.groups_named(name)
    assert [g.id for g in found] == [group]
    read = await graph.export.group(group)
    assert read is not None
    assert (read.display_name, read.security_enabled, read.mail_enabled, read.unified) == (name, True, False, False)

    user = await graph.admin.add_user(graph.unique("member"))
    await graph.export.add_member(group, user)
    await graph.export.add_member(group, user)  # already a member counts as added
    assert await graph.export.member_ids(group) == {user}
    with pytest.raises(InvalidInput):
        await graph.export.add_member(group, group)
    await graph.export.remove_member(group, user)
    assert await graph.export.member_ids(group) == set()
    assert (await graph.export.remove_member(group, user)).request_id is None  # absent counts as removed

    await graph.export.delete_group(group)
    assert await graph.export.group(group) is None
    assert await graph.export.groups_named(name) == []
    assert (await graph.export.delete_group(group)).id is None


async def test_a_groups_owners_and_description_and_a_users_manager(graph: GraphSubject) -> None:
    owner = await graph.admin.add_user(graph.unique("owner"))
    name = graph.unique("Export Owned")
    group = (await graph.export.create_group({"displayName": name, "mailNickname": name.replace(" ", ""),
                                              "mailEnabled": False, "securityEnabled": True, "groupTypes": [],
                                              "description": "first"}, owners=(owner,))).id
    assert group
    assert await graph.export.owner_ids(group) == {owner}
    other = await graph.admin.add_user(graph.unique("owner2"))
    await graph.export.add_owner(group, other)
    await graph.export.add_owner(group, other)  # already an owner counts as added
    assert await graph.export.owner_ids(group) == {owner, other}
    with pytest.raises(NotFound):  # an owner is a user or a service principal of the tenant
        await graph.export.add_owner(group, "0f0e0d0c-0b0a-4090-8070-605040302010")
    with pytest.raises(NotFound):
        await graph.export.create_group({"displayName": name, "mailNickname": graph.unique("unowned"),
                                         "mailEnabled": False, "securityEnabled": True, "groupTypes": []},
                                        owners=("0f0e0d0c-0b0a-4090-8070-605040302010",))
    with pytest.raises(InvalidInput):  # at most 20 references in one request
        await graph.export.create_group({"displayName": name, "mailNickname": graph.unique("crowded"),
                                         "mailEnabled": False, "securityEnabled": True, "groupTypes": []},
                                        owners=tuple([owner] * 21))
    await graph.export.update_group(group, {"description": "second"})
    assert (await graph.export.group(group) or pytest.fail("gone")).description == "second"

    assert await graph.export.manager_id(other) is None
    await graph.export.set_manager(other, owner)
    assert await graph.export.manager_id(other) == owner
    with pytest.raises(InvalidInput):
        await graph.export.set_manager(owner, owner)
    await graph.export.remove_manager(other)
    assert await graph.export.manager_id(other) is None
    assert (await graph.export.remove_manager(other)).request_id is None  # none counts as cleared
