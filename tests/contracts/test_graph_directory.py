"""DirectoryReader (sync's reads of Entra) on the in-memory tenant and on the Graph adapter against the simulator:
group lookups, transitive members, groups/delta and users/delta rounds with their deltaLink, `@removed` as typed
removals, and an expired link as Gone."""

from __future__ import annotations

import pytest

from shared.errors import Gone, NotFound
from shared.services.ports import DeltaRead, GroupChange
from tests.fixtures.graph_contracts import GraphSubject


def _members(read: DeltaRead[GroupChange], group: str) -> dict[str, tuple[str | None, bool]]:
    return {m.id: (m.kind, m.removed) for change in read.items if change.id == group for m in change.members}


async def _group(graph: GraphSubject, *members: str) -> str:
    name = graph.unique("Contract Group")
    group = await graph.directory.create_group(name, name.replace(" ", "").lower(), "contract test")
    if members:
        await graph.admin.add_members(group, list(members))
    return group


async def test_a_group_is_found_by_name_or_id(graph: GraphSubject) -> None:
    name = graph.unique("Contract Named")
    group = await graph.directory.create_group(name, name.lower(), "")
    assert await graph.directory.group_id(name) == group
    assert await graph.directory.group_id(group) == group
    with pytest.raises(NotFound):
        await graph.directory.group_id(graph.unique("Nobody Has This Group"))


async def test_transitive_users_follow_nested_groups(graph: GraphSubject) -> None:
    ann, ben, cara = [await graph.admin.add_user(graph.unique(n)) for n in ("ann", "ben", "cara")]
    inner = await _group(graph, ben, cara)
    outer = await _group(graph, ann, inner)
    found = {u.id: u async for u in graph.directory.transitive_users(outer)}
    assert set(found) == {ann, ben, cara}
    assert found[ann].upn.startswith("ann-")
    assert found[ann].account_enabled is True


async def test_a_group_counts_its_users_nested_groups_included_once_each(graph: GraphSubject) -> None:
    ann, ben, cara = [await graph.admin.add_user(graph.unique(n)) for n in ("ann", "ben", "cara")]
    inner = await _group(graph, ben, cara)
    outer = await _group(graph, ann, ben, inner)
    assert await graph.directory.count_users(outer) == 3
    assert await graph.directory.count_users(await _group(graph)) == 0
    with pytest.raises(NotFound):
        await graph.directory.count_users("00000000-0000-0000-0000-00000000beef")


async def test_users_reads_the_attributes_and_leaves_absent_ones_out(graph: GraphSubject) -> None:
    ann = await graph.admin.add_user(graph.unique("ann"))
    gone = await graph.admin.add_user(graph.unique("gone"))
    await graph.admin.delete_user(gone)
    found = await graph.directory.users([ann, gone])
    assert [u.id for u in found] == [ann]
    assert found[0].display_name.startswith("ann-")


async def test_groups_delta_lists_members_then_only_changes(graph: GraphSubject) -> None:
    ann, ben, cara = [await graph.admin.add_user(graph.unique(n)) for n in ("ann", "ben", "cara")]
    inner = await _group(graph)
    group = await _group(graph, ann, ben, inner)

    first = await graph.directory.groups_delta([group])
    assert first.link
    assert _members(first, group) == {ann: ("user", False), ben: ("user", False), inner: ("group", False)}

    await graph.admin.remove_members(group, [ann])
    await graph.admin.add_members(group, [cara])
    second = await graph.directory.groups_delta(link=first.link)
    assert second.link
    changed = _members(second, group)
    assert changed[ann][1] is True
    assert changed[cara] == ("user", False)
    assert ben not in changed

    third = await graph.directory.groups_delta(link=second.link)
    assert _members(third, group) == {}

    await graph.directory.delete_group(group)
    fourth = await graph.directory.groups_delta(link=third.link)
    assert [c.removed for c in fourth.items if c.id == group] == [True]


async def test_users_delta_reports_changes_and_removals(graph: GraphSubject) -> None:
    ann, ben = [await graph.admin.add_user(graph.unique(n)) for n in ("ann", "ben")]
    link = await graph.directory.users_delta_latest()
    assert link
    await graph.export.update_user(ann, {"displayName": "Ann Renamed"})
    await graph.admin.delete_user(ben)
    read = await graph.directory.users_delta(link)
    assert read.link
    changes = {c.id: c for c in read.items}
    assert changes[ann].removed is False
    assert changes[ann].attributes["displayName"] == "Ann Renamed"
    assert changes[ben].removed is True
    again = await graph.directory.users_delta(read.link)
    assert {c.id for c in again.items} & {ann, ben} == set()


async def test_an_expired_delta_link_is_gone(graph: GraphSubject) -> None:
    group = await _group(graph)
    groups = await graph.directory.groups_delta([group])
    users = await graph.directory.users_delta_latest()
    await graph.admin.expire_delta()
    with pytest.raises(Gone):
        await graph.directory.users_delta(users)
    with pytest.raises(Gone):
        await graph.directory.groups_delta(link=groups.link)
    fresh = await graph.directory.users_delta_latest()
    assert (await graph.directory.users_delta(fresh)).link
