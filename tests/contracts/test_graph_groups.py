"""GroupWriter (the enrollment-state groups) on the in-memory tenant and on the Graph adapter against the
simulator: create, find by name, read, members added and removed, delete; absent counts as done."""

from __future__ import annotations

import pytest

from shared.errors import NotFound
from tests.fixtures.graph_contracts import GraphSubject


async def test_a_created_group_is_found_and_read(graph: GraphSubject) -> None:
    name = graph.unique("Contract Writer")
    group = await graph.directory.create_group(name, name.lower(), "enrollment state")
    assert group
    assert await graph.directory.find_groups(name) == [group]
    assert await graph.directory.find_groups(graph.unique("Contract Absent")) == []
    assert await graph.directory.group(group) == {"id": group, "displayName": name, "description": "enrollment state",
                                                  "mailNickname": name.lower()}
    assert await graph.directory.member_ids(group) == set()


async def test_two_groups_of_one_name_are_both_found(graph: GraphSubject) -> None:
    name = graph.unique("Contract Twice")
    first = await graph.directory.create_group(name, "a" + name.lower(), "")
    second = await graph.directory.create_group(name, "b" + name.lower(), "")
    assert sorted(await graph.directory.find_groups(name)) == sorted([first, second])


async def test_members_are_added_and_removed(graph: GraphSubject) -> None:
    users = [await graph.admin.add_user(graph.unique(f"member{i}")) for i in range(23)]
    group = await graph.directory.create_group(graph.unique("Contract Members"), graph.unique("members"), "")
    await graph.directory.add_members(group, users[:21])  # more than one request's worth on Graph
    assert await graph.directory.member_ids(group) == set(users[:21])
    await graph.directory.add_members(group, users[20:])  # one of them already in
    assert await graph.directory.member_ids(group) == set(users)
    await graph.directory.remove_member(group, users[0])
    await graph.directory.remove_member(group, users[0])  # absent counts as removed
    assert await graph.directory.member_ids(group) == set(users[1:])


async def test_a_deleted_group_is_gone_and_deleting_again_is_fine(graph: GraphSubject) -> None:
    group = await graph.directory.create_group(graph.unique("Contract Delete"), graph.unique("delete"), "")
    await graph.directory.delete_group(group)
    assert await graph.directory.group(group) is None
    with pytest.raises(NotFound):
        await graph.directory.member_ids(group)
    await graph.directory.delete_group(group)
