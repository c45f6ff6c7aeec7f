"""The bridge directory (`users` table), the views other features take of it, and the enrollment-state groups."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from shared.config import Connection
from shared.domain import enrollment
from shared.domain.directory import Enrollment, UserRow
from shared.domain.enrollment import GroupRecord, Ownership
from shared.domain.rotation import RotationSubject
from shared.errors import Configuration, NotFound, Stop
from shared.services.ports import (
    TRANSACTION_ROWS,
    AuditSink,
    BatchEntityStore,
    Clock,
    Entity,
    EntityStore,
    GroupRecords,
    JsonObject,
)
from shared.topology import Table

log = logging.getLogger(__name__)


#: Partitions of one connection's users. A Table storage partition serves about 2,000 entities per
#: second (https://learn.microsoft.com/azure/storage/tables/storage-performance-checklist#partitions),
#: so a 100,000-user import in one partition would take 50 s of writes at best; spread over 256 it is
#: bound by the account's 20,000 entities/s instead. Azurite looks a row up by scanning its partition,
#: so its cost per write grows with the partition: 256 partitions of a 100,000-user connection write
#: about four times as fast there as 16 did.
SHARDS = 256
#: Partitions read (and old rows deleted) side by side.
READ_CONCURRENCY = 16
#: Rows of the first page of a range query; a connection that fits is read by that one query.
RANGE_PAGE = 1000
#: Point reads in flight at once (a sync reads only the rows of the users that changed).
POINT_READ_CONCURRENCY = 32
#: Partitions read side by side by `scan`, which holds only those partitions' rows.
SCAN_CONCURRENCY = 4
#: The layout before this one: 16 partitions named with two digits.
_OLD_SHARDS = 16


def partition_of(connection: str, user_id: str) -> str:
    """The partition of a user's row: the connection name and a shard from the object id's CRC-32.

    Connection names are slugs without dots, so one connection's partitions never meet another's.
    """
    return _shard(connection, zlib.crc32(user_id.encode()) % SHARDS)


def _shard(connection: str, number: int) -> str:
    return f"{connection}.{number:03d}"


def _earlier_partitions(connection: str, user_id: str | None = None) -> list[str]:
    """Where earlier layouts kept users (of one user, when given): first one partition per connection,
    then 16 shards named with two digits. Their rows are still read until a sync moves them."""
    if user_id is not None:
        return [connection, f"{connection}.{zlib.crc32(user_id.encode()) % _OLD_SHARDS:02d}"]
    return [connection, *(f"{connection}.{n:02d}" for n in range(_OLD_SHARDS))]


class Directory:
    """The `users` table of every connection, spread over SHARDS partitions per connection."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        found = await self._entities.get(Table.USERS, partition_of(connection, user_id), user_id)
        if found is None:
            # A row of an earlier layout, not yet moved by a sync.
            earlier = await asyncio.gather(*(self._entities.get(Table.USERS, partition, user_id)
                                             for partition in _earlier_partitions(connection, user_id)))
            found = next((row for row in earlier if row is not None), None)
        return self._parse(found) if found else None

    async def get_many(self, connection: str, user_ids: Iterable[str], *, earlier: bool = False) -> dict[str, UserRow]:
        """The rows of some users by object id (absent ones left out), by point reads side by side.

        Only the current layout is read unless `earlier` (rows of an earlier layout not yet moved).
        """
        semaphore = asyncio.Semaphore(POINT_READ_CONCURRENCY)

        async def one(user_id: str) -> UserRow | None:
            async with semaphore:
                if earlier:
                    return await self.get(connection, user_id)
                found = await self._entities.get(Table.USERS, partition_of(connection, user_id), user_id)
                return self._parse(found) if found else None

        rows = await asyncio.gather(*(one(u) for u in dict.fromkeys(user_ids)))
        return {row.id: row for row in rows if row is not None}

    async def is_empty(self, connection: str) -> bool:
        """Whether the connection has no row in its partitions (one query of one row)."""
        async for _ in self._entities.query_partitions(Table.USERS, f"{connection}.", f"{connection}/", limit=1):
            return False
        return True

    async def has_earlier_rows(self, connection: str) -> bool:
        """Whether rows of an earlier layout wait to be moved (17 small queries)."""
        for partition in _earlier_partitions(connection):
            async for _ in self._entities.query(Table.USERS, partition, limit=1):
                return True
        return False

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Every row of the connection's current partitions, holding only the partitions being read
        (SCAN_CONCURRENCY of SHARDS), not the directory: what a full run sweeps for removals."""
        first = [found async for found in self._entities.query_partitions(
            Table.USERS, f"{connection}.", f"{connection}/", limit=RANGE_PAGE)]
        if len(first) < RANGE_PAGE:
            partitions: list[str] = []
        else:
            first, partitions = [], [_shard(connection, n) for n in range(SHARDS)]
        for found in first:
            if (row := self._parse(found)) is not None:
                yield row
        for start in range(0, len(partitions), SCAN_CONCURRENCY):
            for rows in await asyncio.gather(*(self._partition(p) for p in
                                               partitions[start:start + SCAN_CONCURRENCY])):
                for found in rows:
                    if (row := self._parse(found)) is not None:
                        yield row

    async def find(self, connection: str, user: str) -> UserRow | None:
        """One user by object id or UPN (case-insensitive)."""
        if "@" not in user:
            return await self.get(connection, user)
        wanted = user.lower()
        async for row in self.all(connection):
            if row.upn.lower() == wanted:
                return row
        return None

    async def all(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of a connection, once, in a stable order.

        A row of an earlier layout comes last, and only if it was not moved yet.
        """
        unsharded = [row async for row in self._rows(connection)]
        seen: set[str] = set()
        earlier: list[UserRow] = []
        async for found in self._sharded(connection):
            row = self._parse(found)
            if row is None:
                continue
            if found.partition_key != partition_of(connection, row.id):
                earlier.append(row)
                continue
            seen.add(row.id)
            yield row
        for row in [*earlier, *unsharded]:
            if row.id not in seen:
                seen.add(row.id)
                yield row

    async def _sharded(self, connection: str) -> AsyncIterator[Entity]:
        """The rows of the connection's partitions, `{connection}.*` (names are slugs without dots).

        A connection that fits in one page is read by one range query. A bigger one is read partition
        by partition, READ_CONCURRENCY at a time: Azure serves partitions in parallel, and Azurite
        scans its whole table for a range query but finds one partition through its index.
        """
        first = [found async for found in self._entities.query_partitions(
            Table.USERS, f"{connection}.", f"{connection}/", limit=RANGE_PAGE)]
        if len(first) < RANGE_PAGE:
            for found in first:
                yield found
            return
        partitions = [_shard(connection, n) for n in range(SHARDS)] + _earlier_partitions(connection)[1:]
        for start in range(0, len(partitions), READ_CONCURRENCY):
            for rows in await asyncio.gather(*(self._partition(p) for p in
                                               partitions[start:start + READ_CONCURRENCY])):
                for found in rows:
                    yield found

    async def _partition(self, partition: str) -> list[Entity]:
        return [found async for found in self._entities.query(Table.USERS, partition)]

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        await self._entities.upsert(Table.USERS, Entity(partition_of(connection, row.id), row.id, row.to_row()))

    @staticmethod
    def batches(connection: str, rows: Iterable[UserRow]) -> list[list[UserRow]]:
        """`rows` in groups of one partition and at most TRANSACTION_ROWS rows: one storage transaction each."""
        by_partition: dict[str, list[UserRow]] = {}
        for row in rows:
            by_partition.setdefault(partition_of(connection, row.id), []).append(row)
        return [group[start:start + TRANSACTION_ROWS] for group in by_partition.values()
                for start in range(0, len(group), TRANSACTION_ROWS)]

    async def put_many(self, connection: str, rows: Sequence[UserRow]) -> None:
        """Create or replace many rows: in transactions of up to 100 rows of a partition when the store has
        them, else one by one. Give it one of `batches` to make it a single transaction.

        A failure raises; rows of earlier transactions stay written.
        """
        entities = [Entity(partition_of(connection, row.id), row.id, row.to_row()) for row in rows]
        if isinstance(self._entities, BatchEntityStore):
            await self._entities.upsert_many(Table.USERS, entities)
            return
        for entity in entities:
            await self._entities.upsert(Table.USERS, entity)

    async def move_earlier_rows(self, connection: str) -> int:
        """Move rows of earlier layouts to their partitions; returns how many were moved.

        A row already in its partition (moved before a failed delete) keeps that version. Each row is
        written in its place before its old copy is deleted.
        """
        partitions = _earlier_partitions(connection)
        earlier = [found for rows in await asyncio.gather(*(self._partition(p) for p in partitions))
                   for found in rows]
        if not earlier:
            return 0
        placed = await self._placed(connection)
        moving = [row for found in earlier if (row := self._parse(found)) is not None and row.id not in placed]
        for batch in self.batches(connection, moving):
            await self.put_many(connection, batch)
        for start in range(0, len(earlier), READ_CONCURRENCY):
            await asyncio.gather(*(self._entities.delete(Table.USERS, found.partition_key, found.row_key)
                                   for found in earlier[start:start + READ_CONCURRENCY]))
        log.info("moved %d users of connection %s to their partitions", len(earlier), connection)
        return len(earlier)

    async def _placed(self, connection: str) -> set[str]:
        """Object ids of the rows already in their partitions."""
        return {found.row_key async for found in self._sharded(connection)
                if found.partition_key == partition_of(connection, found.row_key)}

    async def _rows(self, partition: str) -> AsyncIterator[UserRow]:
        async for found in self._entities.query(Table.USERS, partition):
            row = self._parse(found)
            if row is not None:
                yield row

    @staticmethod
    def _parse(found: Entity) -> UserRow | None:
        try:
            return UserRow.model_validate({"id": found.row_key, **found.data})
        except ValidationError:
            log.warning("users row %s/%s is malformed; skipped", found.partition_key, found.row_key)
            return None


def rotation_subject(row: UserRow) -> RotationSubject:
    """What rotation needs of a directory row."""
    return RotationSubject(user_id=row.id, upn=row.upn, display_name=row.display_name, active=row.active,
                           in_rotation_group=row.in_rotation_group, on_premises_sync=row.on_premises_sync)


class RotationSubjects:
    """Implements shared.services.rotation.SubjectSource on the bridge directory."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    async def get(self, connection: str, user_id: str) -> RotationSubject | None:
        """One user as rotation sees it."""
        row = await self._directory.get(connection, user_id)
        return rotation_subject(row) if row else None

    async def all(self, connection: str) -> AsyncIterator[RotationSubject]:
        """Every user as rotation sees it."""
        async for row in self._directory.all(connection):
            yield rotation_subject(row)


# ----------------------------------------------------------------------------- enrollment-state groups


@runtime_checkable
class GroupWriter(Protocol):
    """What the enrollment-state groups need from Entra (implemented in shared/adapters/directory.py)."""

    async def find_groups(self, display_name: str) -> list[str]:
        """Ids of the groups with exactly this display name."""
        ...

    async def create_group(self, display_name: str, mail_nickname: str, description: str) -> str:
        """Create a security group; returns its id."""
        ...

    async def member_ids(self, group_id: str) -> set[str]:
        """Ids of the group's direct members."""
        ...

    async def add_members(self, group_id: str, user_ids: Sequence[str]) -> None:
        """Add users to a group."""
        ...

    async def remove_member(self, group_id: str, user_id: str) -> None:
        """Remove one member; absent counts as removed."""
        ...

    async def delete_group(self, group_id: str) -> None:
        """Delete a group; absent counts as deleted."""
        ...

    async def group(self, group_id: str) -> JsonObject | None:
        """The group's id, displayName, description and mailNickname; None when it does not exist."""
        ...


@dataclass(frozen=True)
class UninstallReport:
    """What an uninstall deleted (or, in a dry run, would delete) and which groups it left in Entra."""

    dry_run: bool
    deleted: list[GroupRecord]
    #: Adopted groups, and recorded-as-owned groups that no longer look like the bridge's (`unrecognised`).
    left: list[GroupRecord]
    renamed: list[GroupRecord]
    configured: dict[Enrollment, str]
    unrecognised: list[GroupRecord]

    def as_dict(self) -> JsonObject:
        """JSON form: each group with id, name, state, ownership, when and run it was recorded; each group
        left with the reason."""
        return {"dryRun": self.dry_run,
                "deleted": [r.view(self.configured.get(r.state)) for r in self.deleted],
                "left": [{**r.view(self.configured.get(r.state)), "reason": self.reason(r)} for r in self.left]}

    def reason(self, record: GroupRecord) -> str:
        """Why a group is left in Entra."""
        if record in self.unrecognised:
            return ("recorded as created by the bridge, but neither its description nor its mailNickname is the "
                    "bridge's: left for a person to check")
        return "adopted: it existed before the bridge used it"


class EnrollmentGroups:
    """Keeps the enrollment-state groups of a connection equal to its users' states.

    Every group it uses is recorded (GroupRecords) the moment it is created (owned) or found by name
    (adopted); only owned groups are ever deleted (docs/architecture.md, Invariants, 9).
    """

    def __init__(self, records: GroupRecords, audit: AuditSink, clock: Clock) -> None:
        self._records = records
        self._audit = audit
        self._clock = clock

    async def known(self, connection: str) -> list[GroupRecord]:
        """The groups recorded for a connection, owned and adopted."""
        return await self._records.records(connection)

    async def ensure(self, conn: Connection, writer: GroupWriter, *, correlation_id: str,
                     run_id: str = "") -> dict[Enrollment, str]:
        """The id of each group: the recorded one for its configured name, else one found by that name
        (adopted, or owned if the bridge recorded it before), else a new one (owned)."""
        records = await self._records.records(conn.name)
        names = conn.features.passkeys.enrollment_groups
        ids: dict[Enrollment, str] = {}
        for state in Enrollment:
            name = enrollment.group_name(names, state)
            current = enrollment.in_use(records, state, name)
            if current is None:
                current = await self._record(conn, writer, state, name, records, correlation_id, run_id)
                records = [r for r in records if r.id != current.id] + [current]
            ids[state] = current.id
        return ids

    async def _record(self, conn: Connection, writer: GroupWriter, state: Enrollment, name: str,
                      records: list[GroupRecord], correlation_id: str, run_id: str) -> GroupRecord:
        found = await writer.find_groups(name)
        if len(found) > 1:
            raise Configuration(f"{len(found)} groups are named {name!r}; keep one or rename "
                                f"features.passkeys.enrollmentGroups.{_alias(state)}", setting="CONNECTIONS")
        detail: JsonObject = {"name": name, "state": state.value, "runId": run_id}
        earlier = next((r for r in records if found and r.id == found[0]), None)
        if earlier is not None:
            # The configured name went back to a group the bridge already recorded: it keeps its ownership.
            record = earlier.model_copy(update={"state": state, "name": name})
            await self._records.put(conn.name, record)
            log.info("enrollment-state group %s (%s) of %s is in use again", record.id, record.ownership.value,
                     conn.name)
            return record
        if found:
            record = enrollment.GroupRecord(id=found[0], name=name, state=state, ownership=Ownership.ADOPTED,
                                            recorded_at=self._clock.now(), run_id=run_id)
            await self._records.put(conn.name, record)
            await self._audit.record(connection=conn.name, actor="sync", action="enrollmentGroup.adopted",
                                     target=record.id, outcome="adopted", correlation_id=correlation_id,
                                     detail={**detail, "reason": "a group with the configured name already existed; "
                                             "the bridge uses it and will never delete it"})
            return record
        group_id = await writer.create_group(name, enrollment.mail_nickname(state), enrollment.description(state))
        if not group_id:
            raise Stop(f"creating the enrollment-state group {name!r} returned no id")
        record = enrollment.GroupRecord(id=group_id, name=name, state=state, ownership=Ownership.OWNED,
                                        recorded_at=self._clock.now(), run_id=run_id)
        # Recorded before anything else happens, so uninstall can find it by id whatever it is called later.
        await self._records.put(conn.name, record)
        await self._audit.record(connection=conn.name, actor="sync", action="enrollmentGroup.created",
                                 target=group_id, outcome="created", correlation_id=correlation_id, detail=detail)
        return record

    async def reconcile(self, conn: Connection, writer: GroupWriter, rows: Iterable[UserRow] | AsyncIterable[UserRow],
                        *, correlation_id: str, run_id: str = "") -> enrollment.MembershipPlan:
        """Make every group's members equal to the users in that state (drift repaired both ways).

        `rows` are every row of the directory (streamed: only their ids are kept). A recorded group deleted
        in Entra since is forgotten (audited `enrollmentGroup.missing`) and made again, or adopted, by name.
        """
        ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
        current: dict[Enrollment, set[str]] = {}
        for state, group_id in ids.items():
            try:
                current[state] = await writer.member_ids(group_id)
            except NotFound:
                await self._records.forget(conn.name, group_id)
                await self._audit.record(connection=conn.name, actor="sync", action="enrollmentGroup.missing",
                                         target=group_id, outcome="forgotten", correlation_id=correlation_id,
                                         detail={"state": state.value, "runId": run_id,
                                                 "reason": "the recorded group no longer exists in Entra"})
        if len(current) < len(ids):
            ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
            for state, group_id in ids.items():
                if state not in current:
                    current[state] = await writer.member_ids(group_id)
        wanted: dict[Enrollment, set[str]] = {state: set() for state in Enrollment}
        async for row in _rows(rows):
            goal = enrollment.target(row)
            if goal is not None:
                wanted[goal].add(row.id)
        changes = enrollment.MembershipPlan()
        for state in Enrollment:
            changes.add[state] = sorted(wanted[state] - current.get(state, set()))
            changes.remove[state] = sorted(current.get(state, set()) - wanted[state])
        await self._apply(conn, writer, ids, changes, correlation_id)
        return changes

    async def present(self, conn: Connection, writer: GroupWriter, *, correlation_id: str,
                      run_id: str = "") -> bool:
        """Whether every recorded group still exists in Entra (one read each). A group deleted since is
        forgotten (audited `enrollmentGroup.missing`); the caller then reconciles every user."""
        ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
        present = True
        for state, group_id in ids.items():
            if await writer.group(group_id) is None:
                present = False
                await self._records.forget(conn.name, group_id)
                await self._audit.record(connection=conn.name, actor="sync", action="enrollmentGroup.missing",
                                         target=group_id, outcome="forgotten", correlation_id=correlation_id,
                                         detail={"state": state.value, "runId": run_id,
                                                 "reason": "the recorded group no longer exists in Entra"})
        return present

    async def move_users(self, conn: Connection, writer: GroupWriter,
                         moves: Mapping[str, tuple[Enrollment | None, Enrollment | None]], *,
                         correlation_id: str, run_id: str = "") -> enrollment.MembershipPlan:
        """Move the users whose target group changed in this run (user id -> (group before, group now)):
        out of the group before, into the group now. Groups that were equal to the states before stay so."""
        ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
        changes = enrollment.MembershipPlan()
        for user_id, (before, after) in sorted(moves.items()):
            if before is after:
                continue
            if after is not None:
                changes.add[after].append(user_id)
            if before is not None:
                changes.remove[before].append(user_id)
        await self._apply(conn, writer, ids, changes, correlation_id)
        return changes

    async def move(self, conn: Connection, writer: GroupWriter, user_id: str, to: Enrollment | None, *,
                   correlation_id: str) -> None:
        """Move one user into the group of `to` (None: out of every group) right away."""
        ids = await self.ensure(conn, writer, correlation_id=correlation_id)
        await self._apply(conn, writer, ids, enrollment.plan_move(user_id, to), correlation_id)

    async def repair(self, conn: Connection, writer: GroupWriter, seen: Mapping[str, Mapping[Enrollment, bool]],
                     rows: Mapping[str, UserRow], *, correlation_id: str,
                     run_id: str = "") -> enrollment.MembershipPlan:
        """Undo what others changed in the groups: `seen` is, for each user a groups/delta round reported, whether
        they are now in each group it reported on; `rows` the directory rows of those users (none: in no group)."""
        ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
        changes = enrollment.MembershipPlan()
        for user_id, memberships in sorted(seen.items()):
            goal = enrollment.target(rows[user_id]) if user_id in rows else None
            for state, member in memberships.items():
                if member and state is not goal:
                    changes.remove[state].append(user_id)
                elif not member and state is goal:
                    changes.add[state].append(user_id)
        await self._apply(conn, writer, ids, changes, correlation_id)
        return changes

    async def uninstall(self, conn: Connection, writer: GroupWriter, *, correlation_id: str,
                        actor: str = "sync", dry_run: bool = False) -> UninstallReport:
        """Delete the groups the bridge owns, found by recorded object id (also when renamed since); leave
        and name every adopted group. A dry run only says what would be deleted.

        Safe to repeat: a group already gone counts as deleted, and each record is dropped only after
        its group was deleted (or, for an adopted group, left).
        """
        names = conn.features.passkeys.enrollment_groups
        configured = {state: enrollment.group_name(names, state) for state in Enrollment}
        plan = enrollment.plan_uninstall(await self._records.records(conn.name), names)
        # A record says "owned", but a record is only storage: the group itself must still look like the
        # bridge's before it is deleted (a record from an older version, or written by someone else, may lie).
        unrecognised = []
        for record in plan.delete:
            found = await writer.group(record.id)
            if found is not None and not enrollment.made_by_bridge(found, record.state):
                unrecognised.append(record)
        delete = [r for r in plan.delete if r not in unrecognised]
        report = UninstallReport(dry_run=dry_run, deleted=delete, left=[*plan.leave, *unrecognised],
                                 renamed=[r for r in plan.renamed if r not in unrecognised], configured=configured,
                                 unrecognised=unrecognised)
        if dry_run:
            return report
        for record in delete:
            await writer.delete_group(record.id)
            await self._records.forget(conn.name, record.id)
            await self._audit.record(connection=conn.name, actor=actor, action="enrollmentGroup.deleted",
                                     target=record.id, outcome="deleted", correlation_id=correlation_id,
                                     detail=record.view(configured[record.state]))
        for record in report.left:
            await self._records.forget(conn.name, record.id)
            await self._audit.record(connection=conn.name, actor=actor, action="enrollmentGroup.left",
                                     target=record.id, outcome="left", correlation_id=correlation_id,
                                     detail={**record.view(configured[record.state]), "reason": report.reason(record)})
        await self._audit.record(connection=conn.name, actor=actor, action="enrollmentGroups.uninstalled",
                                 target=conn.name, outcome="completed", correlation_id=correlation_id,
                                 detail={"deleted": [r.id for r in delete], "left": [r.id for r in report.left],
                                         "renamedSince": [r.id for r in report.renamed]})
        return report

    async def _apply(self, conn: Connection, writer: GroupWriter, ids: dict[Enrollment, str],
                     changes: enrollment.MembershipPlan, correlation_id: str) -> None:
        for state, group_id in ids.items():
            added, removed = changes.add[state], changes.remove[state]
            if added:
                await writer.add_members(group_id, added)
            for user_id in removed:
                await writer.remove_member(group_id, user_id)
            if added or removed:
                await self._audit.record(connection=conn.name, actor="sync", action="enrollmentGroup.members",
                                         target=group_id, outcome="updated", correlation_id=correlation_id,
                                         detail={"state": state.value, "added": len(added), "removed": len(removed),
                                                 "addedIds": added[:20], "removedIds": removed[:20]})


async def _rows(rows: Iterable[UserRow] | AsyncIterable[UserRow]) -> AsyncIterator[UserRow]:
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row


def _alias(state: Enrollment) -> str:
    """The setting's name of a state's group (camelCase, as in CONNECTIONS)."""
    head, *rest = state.value.split("_")
    return head + "".join(part.title() for part in rest)
