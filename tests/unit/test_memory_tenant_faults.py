"""The shared memory tenant's fault hooks (tests/fakes_graph.py): a failed call changes nothing, a throttled one
raises Throttled, an unknown outcome applies the write and still raises Ambiguous, and a fault can be kept to one
object."""

from __future__ import annotations

import pytest

from shared.errors import Ambiguous, NotFound, Throttled, Transient
from tests.fakes_graph import MemoryTenant


async def test_a_failed_call_changes_nothing_and_the_next_one_works() -> None:
    tenant = MemoryTenant()
    user = tenant.add_user(userPrincipalName="ann@contoso.example")
    group = tenant.add_group("Team")
    directory = tenant.directory()
    tenant.faults.fail("directory.add_members", Transient("Graph answered 503"))
    with pytest.raises(Transient):
        await directory.add_members(group, [user])
    assert await directory.member_ids(group) == set()
    await directory.add_members(group, [user])
    assert await directory.member_ids(group) == {user}
    assert tenant.faults.count("directory.add_members") == 2


async def test_throttling_and_an_unknown_outcome() -> None:
    tenant = MemoryTenant()
    user = tenant.add_user(userPrincipalName="ann@contoso.example")
    passwords = tenant.passwords_port()
    tenant.faults.throttle("passwords.reset", retry_after=7)
    with pytest.raises(Throttled) as throttled:
        await passwords.reset(user, "Correct-Horse-9")
    assert throttled.value.retry_after == 7
    assert user not in tenant.passwords
    tenant.faults.unknown("passwords.reset")
    with pytest.raises(Ambiguous):
        await passwords.reset(user, "Correct-Horse-9")
    assert tenant.passwords[user] == "Correct-Horse-9", "the write happened though the caller was not told"


async def test_a_fault_kept_to_one_object_for_every_call() -> None:
    tenant = MemoryTenant()
    ann = tenant.add_user(userPrincipalName="ann@contoso.example")
    ben = tenant.add_user(userPrincipalName="ben@contoso.example")
    passkeys = tenant.passkeys()
    tenant.faults.fail("passkeys.methods", NotFound("gone"), times=-1, key=ben)
    for _ in range(3):
        assert await passkeys.methods(ann) == []
        with pytest.raises(NotFound):
            await passkeys.methods(ben)
    tenant.faults.clear()
    assert await passkeys.methods(ben) == []


async def test_delta_rounds_follow_the_change_log() -> None:
    tenant = MemoryTenant()
    ann = tenant.add_user(userPrincipalName="ann@contoso.example")
    group = tenant.add_group("Team", ann)
    directory = tenant.directory()
    first = await directory.groups_delta([group])
    tenant.remove_member(group, ann)
    tenant.update_user(ann, displayName="Ann")
    nxt = await directory.groups_delta(link=first.link)
    assert [(m.id, m.removed) for c in nxt.items for m in c.members] == [(ann, True)]
    tenant.expire_delta()
    with pytest.raises(NotFound):  # Gone is a NotFound
        await directory.groups_delta(link=nxt.link)
