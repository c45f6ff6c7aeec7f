"""PasswordDirectory (rotation) on the in-memory tenant and on the Graph adapter against the simulator: a
password set, a refused one as InvalidInput, the roles of a user and of the bridge, the tenant's name."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from tests.fixtures.graph_contracts import GraphSubject


async def test_a_password_is_set(graph: GraphSubject) -> None:
    user = await graph.admin.add_user(graph.unique("rotated"))
    request_id = await graph.passwords.reset(user, "Correct-Horse-9-Battery")
    assert request_id


async def test_a_password_against_the_rules_is_invalid_input(graph: GraphSubject) -> None:
    user = await graph.admin.add_user(graph.unique("rotated"))
    with pytest.raises(InvalidInput):
        await graph.passwords.reset(user, "short")


async def test_admin_roles_are_read_directly_held(graph: GraphSubject) -> None:
    # The adapter keeps a snapshot of the roles for a few minutes: the role is given before the first read.
    user = await graph.admin.add_user(graph.unique("helpdesk"))
    other = await graph.admin.add_user(graph.unique("plain"))
    await graph.admin.grant_role("Helpdesk Administrator", user)
    try:
        assert "Helpdesk Administrator" in await graph.passwords.admin_roles(user)
        assert await graph.passwords.admin_roles(other) == frozenset()
    finally:
        await graph.admin.grant_role("Helpdesk Administrator", user, remove=True)


async def test_the_bridges_roles_and_the_tenant_name(graph: GraphSubject) -> None:
    assert "User Administrator" in await graph.passwords.app_roles()
    assert await graph.passwords.tenant_name() == "Contoso Demo"
