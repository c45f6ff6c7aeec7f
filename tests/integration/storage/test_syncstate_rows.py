"""How the sync state adapter lays a group tree out in Table rows (shared/adapters/syncstate.py), on Azurite:
a large group's members over several rows, and no row left behind when it shrinks or goes."""

from __future__ import annotations

import uuid

from shared.adapters.syncstate import TREE_IDS_PER_ROW, TableSyncState
from shared.adapters.tables import TableEntityStore
from shared.domain.sync import GroupTree
from shared.services.ports import DeltaState
from shared.topology import Table


def _state(members: dict[str, list[str]], version: str = "") -> DeltaState:
    tree = GroupTree()
    for group, users in members.items():
        tree.add_group(group)
        tree.users[group].update(users)
    return DeltaState(sync_roots=["root"], rotation_root=None, users_link="https://graph/users/delta?t=1",
                      group_links=[], tree=tree, version=version)


async def _rows(store: TableEntityStore, conn: str, group: str) -> list[str]:
    return [row.row_key async for row in store.query(Table.GROUPS, conn, row_key_from=f"{group}.",
                                                     row_key_to=f"{group}/")]


async def test_a_large_group_spreads_over_rows_and_a_shrunk_or_gone_one_leaves_none_behind(
        store: TableEntityStore) -> None:
    conn = f"conn{uuid.uuid4().hex[:8]}"
    state = TableSyncState(store)
    members = [f"u{n:05d}" for n in range(2 * TREE_IDS_PER_ROW + 400)]
    first = _state({"root": [], "gB": members, "gC": ["u1"]})
    await state.save_delta(conn, first, changed=first.tree.groups(), gone=(), full=True)
    assert len(await _rows(store, conn, "gB")) == 3
    shrunk = _state({"root": [], "gB": members[:TREE_IDS_PER_ROW + 200], "gC": ["u1"]}, version=first.version)
    await state.save_delta(conn, shrunk, changed={"gB"}, gone={"gC"}, full=False)
    assert len(await _rows(store, conn, "gB")) == 2
    assert await _rows(store, conn, "gC") == []
    found = await TableSyncState(store).delta(conn)
    assert found is not None
    assert found.tree.users["gB"] == set(members[:TREE_IDS_PER_ROW + 200])


async def test_a_full_save_of_a_shrunk_group_drops_its_extra_rows(store: TableEntityStore) -> None:
    conn = f"conn{uuid.uuid4().hex[:8]}"
    state = TableSyncState(store)
    members = [f"u{n:05d}" for n in range(2 * TREE_IDS_PER_ROW + 400)]
    first = _state({"root": [], "gB": members})
    await state.save_delta(conn, first, changed=first.tree.groups(), gone=(), full=True)
    again = _state({"root": [], "gB": members[:TREE_IDS_PER_ROW + 200]})
    await state.save_delta(conn, again, changed=again.tree.groups(), gone=(), full=True)
    assert await _rows(store, conn, "gB") == ["gB.0000", "gB.0001"]
