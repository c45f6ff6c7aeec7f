"""What sync keeps between runs, on Table storage: implements shared.services.ports.SyncStateRepository.

Rows, partition = connection:
- `syncstate` row `delta`: the sync and rotation roots, the users/delta link, the groups/delta links (JSON
  text), the directory's size (`rows`, `inScope`) and `treeVersion`;
- `groups` rows `{group id}.{n:04d}`: the group tree, a group's direct user members in runs of
  TREE_IDS_PER_ROW ids (comma-separated) over its rows, its direct child groups on its first row;
- `syncstate` rows `lastRun` / `lastDryRun`: a run's report, nested values as JSON text;
- `syncstate` rows `enrollmentDelta` (ids, link) and `enrollmentPending` (runId).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection

from shared.domain.sync import GroupTree
from shared.services.ports import (
    BatchEntityStore,
    DeltaState,
    EnrollmentDelta,
    Entity,
    EntityStore,
    JsonObject,
)
from shared.topology import Table

#: Member ids per stored tree row: a Table string property holds 32K characters (64 KiB UTF-16).
TREE_IDS_PER_ROW = 800
#: Tree rows per transaction: 50 rows of up to 32K characters stay well under a transaction's 4 MiB.
TREE_ROWS_PER_TRANSACTION = 50
WRITE_CONCURRENCY = 16
STATE_ROW = "delta"
LAST_RUN, LAST_DRY_RUN = "lastRun", "lastDryRun"
ENROLLMENT_PENDING = "enrollmentPending"
ENROLLMENT_DELTA = "enrollmentDelta"
#: Members of a report kept as JSON text.
_JSON_MEMBERS = ("planned", "plannedIds", "problem")


class TableSyncState:
    """Sync state of every connection on the `syncstate` and `groups` tables."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities
        #: The tree each connection's last save in this process stored: (version, tree, rows per group).
        self._trees: dict[str, tuple[str, GroupTree, dict[str, int]]] = {}

    # ------------------------------------------------------------------ delta links and tree

    async def delta(self, connection: str) -> DeltaState | None:
        """The `delta` row and the tree (the one this process stored, when it is still that version)."""
        found = await self._entities.get(Table.SYNCSTATE, connection, STATE_ROW)
        if found is None or not found.data.get("usersLink"):
            return None
        data = found.data
        version = str(data.get("treeVersion") or "")
        cached = self._trees.get(connection)
        if version and cached is not None and cached[0] == version:
            tree = cached[1]
        else:
            tree, parts = await self._load_tree(connection)
            self._trees[connection] = (version, tree, parts)
        return DeltaState(sync_roots=list(json.loads(str(data.get("syncRoots") or "[]"))),
                          rotation_root=str(data.get("rotationRoot") or "") or None,
                          users_link=str(data["usersLink"]),
                          group_links=list(json.loads(str(data.get("groupLinks") or "[]"))),
                          tree=tree,
                          rows=int(str(data["rows"])) if data.get("rows") is not None else None,
                          in_scope=int(str(data["inScope"])) if data.get("inScope") is not None else None,
                          version=version)

    async def _load_tree(self, connection: str) -> tuple[GroupTree, dict[str, int]]:
        tree = GroupTree()
        parts: dict[str, int] = {}
        async for row in self._entities.query(Table.GROUPS, connection):
            group, _, _ = row.row_key.partition(".")
            tree.add_group(group)
            parts[group] = parts.get(group, 0) + 1
            users = str(row.data.get("users") or "")
            tree.users[group].update(u for u in users.split(",") if u)
            children = str(row.data.get("groups") or "")
            tree.children[group].update(g for g in children.split(",") if g)
        return tree, parts

    async def _parts(self, connection: str, version: str) -> dict[str, int]:
        """Rows per group of the stored tree `version` (read again when this process did not keep it)."""
        cached = self._trees.get(connection)
        if cached is not None and cached[0] == version:
            return dict(cached[2])
        parts: dict[str, int] = {}
        async for row in self._entities.query(Table.GROUPS, connection):
            group = row.row_key.partition(".")[0]
            parts[group] = parts.get(group, 0) + 1
        return parts

    async def save_delta(self, connection: str, state: DeltaState, *, changed: Collection[str],
                         gone: Collection[str], full: bool) -> None:
        """Write the changed groups' rows, drop the rows no group needs any more, then the `delta` row."""
        writes: list[Entity] = []
        deletes: list[str] = []
        parts = {} if full else await self._parts(connection, state.version)
        for group in gone:
            deletes += [f"{group}.{n:04d}" for n in range(parts.pop(group, 0))]
        for group in changed:
            users = sorted(state.tree.users.get(group, set()))
            runs = [users[i:i + TREE_IDS_PER_ROW] for i in range(0, len(users), TREE_IDS_PER_ROW)] or [[]]
            for n, run in enumerate(runs):
                data: JsonObject = {"users": ",".join(run)}
                if n == 0:
                    data["groups"] = ",".join(sorted(state.tree.children.get(group, set())))
                writes.append(Entity(connection, f"{group}.{n:04d}", data))
            deletes += [f"{group}.{n:04d}" for n in range(len(runs), parts.get(group, 0))]
            parts[group] = len(runs)
        if full:
            # Every row this tree does not write goes: groups no longer under the roots, and the extra rows
            # of a group that shrank since the tree was last stored.
            written = {e.row_key for e in writes}
            deletes += [row.row_key async for row in self._entities.query(Table.GROUPS, connection)
                        if row.row_key not in written]
        semaphore = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def put(entity: Entity) -> None:
            async with semaphore:
                await self._entities.upsert(Table.GROUPS, entity)

        async def drop(key: str) -> None:
            async with semaphore:
                await self._entities.delete(Table.GROUPS, connection, key)

        if isinstance(self._entities, BatchEntityStore) and writes:
            for start in range(0, len(writes), TREE_ROWS_PER_TRANSACTION):
                await self._entities.upsert_many(Table.GROUPS, writes[start:start + TREE_ROWS_PER_TRANSACTION])
            writes = []
        await asyncio.gather(*(put(e) for e in writes), *(drop(k) for k in set(deletes)))
        state.version = uuid.uuid4().hex
        data = {"syncRoots": json.dumps(state.sync_roots), "rotationRoot": state.rotation_root or "",
                "usersLink": state.users_link, "groupLinks": json.dumps(state.group_links),
                "treeVersion": state.version}
        if state.rows is not None and state.in_scope is not None:
            data["rows"], data["inScope"] = state.rows, state.in_scope
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, STATE_ROW, data))
        self._trees[connection] = (state.version, state.tree, parts)

    async def forget_delta(self, connection: str) -> None:
        """Delete the `delta` row (the tree rows are replaced by the next full run)."""
        await self._entities.delete(Table.SYNCSTATE, connection, STATE_ROW)

    # ------------------------------------------------------------------ run reports

    async def last_run(self, connection: str, *, dry_run: bool = False) -> JsonObject | None:
        """The report row, its JSON text members parsed."""
        found = await self._entities.get(Table.SYNCSTATE, connection, LAST_DRY_RUN if dry_run else LAST_RUN)
        if not found:
            return None
        data = dict(found.data)
        for key in _JSON_MEMBERS:
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        if isinstance(data.get("planned"), dict) and any(isinstance(v, list) for v in data["planned"].values()):
            # Rows written before counts were kept held the ids themselves.
            data["plannedIds"], data["planned"] = data["planned"], {k: len(v) for k, v in data["planned"].items()}
        return data

    async def put_run(self, connection: str, report: JsonObject, *, dry_run: bool = False) -> None:
        """Nested members become JSON text, as Table storage requires."""
        data = {k: (json.dumps(v, default=str) if isinstance(v, dict | list) else v)
                for k, v in report.items() if v is not None}
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, LAST_DRY_RUN if dry_run else LAST_RUN, data))

    # ------------------------------------------------------------------ enrollment-state groups

    async def enrollment_delta(self, connection: str) -> EnrollmentDelta | None:
        """The `enrollmentDelta` row."""
        found = await self._entities.get(Table.SYNCSTATE, connection, ENROLLMENT_DELTA)
        if found is None:
            return None
        return EnrollmentDelta(ids=list(json.loads(str(found.data.get("ids") or "[]"))),
                               link=str(found.data.get("link") or ""))

    async def put_enrollment_delta(self, connection: str, delta: EnrollmentDelta) -> None:
        """Replace the `enrollmentDelta` row."""
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, ENROLLMENT_DELTA, {
            "ids": json.dumps(delta.ids), "link": delta.link}))

    async def enrollment_pending(self, connection: str) -> bool:
        """Whether the `enrollmentPending` row exists."""
        return await self._entities.get(Table.SYNCSTATE, connection, ENROLLMENT_PENDING) is not None

    async def set_enrollment_pending(self, connection: str, run_id: str | None) -> None:
        """Write or delete the `enrollmentPending` row."""
        if run_id is None:
            await self._entities.delete(Table.SYNCSTATE, connection, ENROLLMENT_PENDING)
        else:
            await self._entities.upsert(Table.SYNCSTATE, Entity(connection, ENROLLMENT_PENDING, {"runId": run_id}))
