"""The enrollment-state groups: kept equal to the users' enrollment states, recorded as owned or adopted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shared.config import Connection
from shared.domain import enrollment
from shared.domain.directory import Enrollment, UserRow
from shared.domain.enrollment import GroupRecord, MemberChange, MembershipPlan, Ownership
from shared.errors import Configuration, NotFound, Stop
from shared.services.audit_context import AuditContext
from shared.services.ports import AuditSink, Clock, GroupRecords, JsonObject
from shared.services.reconcile import Capability, Done, reconcile

log = logging.getLogger(__name__)


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
        audit = self._context(conn, correlation_id, run_id)
        records = await self._records.records(conn.name)
        names = conn.features.passkeys.enrollment_groups
        ids: dict[Enrollment, str] = {}
        for state in Enrollment:
            name = enrollment.group_name(names, state)
            current = enrollment.in_use(records, state, name)
            if current is None:
                current = await self._record(conn, writer, state, name, records, audit)
                records = [r for r in records if r.id != current.id] + [current]
            ids[state] = current.id
        return ids

    def _context(self, conn: Connection, correlation_id: str, run_id: str = "", actor: str = "sync") -> AuditContext:
        """The audit context of one call: its connection, actor, correlation id and run."""
        return AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id,
                            run_id=run_id)

    async def _record(self, conn: Connection, writer: GroupWriter, state: Enrollment, name: str,
                      records: list[GroupRecord], audit: AuditContext) -> GroupRecord:
        found = await writer.find_groups(name)
        if len(found) > 1:
            raise Configuration(f"{len(found)} groups are named {name!r}; keep one or rename "
                                f"features.passkeys.enrollmentGroups.{_alias(state)}", setting="CONNECTIONS")
        run_id = audit.run_id
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
            await audit.record("enrollmentGroup.adopted", record.id, "adopted", **detail,
                               reason="a group with the configured name already existed; the bridge uses it and "
                               "will never delete it")
            return record
        group_id = await writer.create_group(name, enrollment.mail_nickname(state), enrollment.description(state))
        if not group_id:
            raise Stop(f"creating the enrollment-state group {name!r} returned no id")
        record = enrollment.GroupRecord(id=group_id, name=name, state=state, ownership=Ownership.OWNED,
                                        recorded_at=self._clock.now(), run_id=run_id)
        # Recorded before anything else happens, so uninstall can find it by id whatever it is called later.
        await self._records.put(conn.name, record)
        await audit.record("enrollmentGroup.created", group_id, "created", **detail)
        return record

    async def reconcile(self, conn: Connection, writer: GroupWriter, rows: Iterable[UserRow] | AsyncIterable[UserRow],
                        *, correlation_id: str, run_id: str = "") -> enrollment.MembershipPlan:
        """Make every group's members equal to the users in that state (drift repaired both ways).

        `rows` are every row of the directory (streamed: only their ids are kept). A recorded group deleted
        in Entra since is forgotten (audited `enrollmentGroup.missing`) and made again, or adopted, by name.
        """
        audit = self._context(conn, correlation_id, run_id)

        async def read() -> tuple[dict[Enrollment, str], MembershipPlan]:
            ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
            current: dict[Enrollment, set[str]] = {}
            for state, group_id in ids.items():
                try:
                    current[state] = await writer.member_ids(group_id)
                except NotFound:
                    await self._forget_missing(conn, audit, state, group_id)
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
            return ids, enrollment.plan_wanted(wanted, current)

        return await self._run(writer, audit, read)

    async def present(self, conn: Connection, writer: GroupWriter, *, correlation_id: str,
                      run_id: str = "") -> bool:
        """Whether every recorded group still exists in Entra (one read each). A group deleted since is
        forgotten (audited `enrollmentGroup.missing`); the caller then reconciles every user."""
        ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
        present = True
        for state, group_id in ids.items():
            if await writer.group(group_id) is None:
                present = False
                await self._forget_missing(conn, self._context(conn, correlation_id, run_id), state, group_id)
        return present

    async def _forget_missing(self, conn: Connection, audit: AuditContext, state: Enrollment, group_id: str) -> None:
        """Forget a recorded group deleted in Entra since (it is made again, or adopted, by name)."""
        await self._records.forget(conn.name, group_id)
        await audit.record("enrollmentGroup.missing", group_id, "forgotten", state=state.value, runId=audit.run_id,
                           reason="the recorded group no longer exists in Entra")

    async def move_users(self, conn: Connection, writer: GroupWriter,
                         moves: Mapping[str, tuple[Enrollment | None, Enrollment | None]], *,
                         correlation_id: str, run_id: str = "") -> enrollment.MembershipPlan:
        """Move the users whose target group changed in this run (user id -> (group before, group now)):
        out of the group before, into the group now. Groups that were equal to the states before stay so."""
        async def read() -> tuple[dict[Enrollment, str], MembershipPlan]:
            ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
            return ids, enrollment.plan_moves(moves)

        return await self._run(writer, self._context(conn, correlation_id, run_id), read)

    async def move(self, conn: Connection, writer: GroupWriter, user_id: str, to: Enrollment | None, *,
                   correlation_id: str) -> None:
        """Move one user into the group of `to` (None: out of every group) right away."""
        async def read() -> tuple[dict[Enrollment, str], MembershipPlan]:
            return await self.ensure(conn, writer, correlation_id=correlation_id), enrollment.plan_move(user_id, to)

        await self._run(writer, self._context(conn, correlation_id), read)

    async def repair(self, conn: Connection, writer: GroupWriter, seen: Mapping[str, Mapping[Enrollment, bool]],
                     rows: Mapping[str, UserRow], *, correlation_id: str,
                     run_id: str = "") -> enrollment.MembershipPlan:
        """Undo what others changed in the groups: `seen` is, for each user a groups/delta round reported, whether
        they are now in each group it reported on; `rows` the directory rows of those users (none: in no group)."""
        async def read() -> tuple[dict[Enrollment, str], MembershipPlan]:
            ids = await self.ensure(conn, writer, correlation_id=correlation_id, run_id=run_id)
            goals = {user_id: enrollment.target(rows[user_id]) if user_id in rows else None for user_id in seen}
            return ids, enrollment.plan_repair(seen, goals)

        return await self._run(writer, self._context(conn, correlation_id, run_id), read)

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
        audit = self._context(conn, correlation_id, actor=actor)
        for record in delete:
            await writer.delete_group(record.id)
            await self._records.forget(conn.name, record.id)
            await audit.record("enrollmentGroup.deleted", record.id, "deleted", **record.view(configured[record.state]))
        for record in report.left:
            await self._records.forget(conn.name, record.id)
            await audit.record("enrollmentGroup.left", record.id, "left", **record.view(configured[record.state]),
                               reason=report.reason(record))
        await audit.record("enrollmentGroups.uninstalled", conn.name, "completed", deleted=[r.id for r in delete],
                           left=[r.id for r in report.left], renamedSince=[r.id for r in report.renamed])
        return report

    async def _run(self, writer: GroupWriter, audit: AuditContext,
                   read: Callable[[], Awaitable[tuple[dict[Enrollment, str], MembershipPlan]]]) -> MembershipPlan:
        """Read the groups and the moves, then apply them on the reconcile engine, one audit record per group."""
        members = _Members(writer, read)
        await reconcile(members, audit)
        return members.changes


class _Members(Capability[tuple[dict[Enrollment, str], MembershipPlan], MemberChange]):
    """The enrollment-state groups' members on the reconcile engine: one read, one change per group."""

    audit_prefix = "enrollmentGroup."

    def __init__(self, writer: GroupWriter,
                 read: Callable[[], Awaitable[tuple[dict[Enrollment, str], MembershipPlan]]]) -> None:
        self._writer = writer
        self._read = read
        self.changes = MembershipPlan()

    async def read(self) -> AsyncIterator[tuple[dict[Enrollment, str], MembershipPlan]]:
        ids, self.changes = await self._read()
        yield ids, self.changes

    def plan(self, batch: tuple[dict[Enrollment, str], MembershipPlan]) -> Sequence[MemberChange]:
        return enrollment.member_changes(*batch)

    async def apply(self, action: MemberChange) -> Done:
        if action.added:
            await self._writer.add_members(action.group_id, list(action.added))
        for user_id in action.removed:
            await self._writer.remove_member(action.group_id, user_id)
        return Done("updated")

    def describe(self, action: MemberChange) -> JsonObject:
        return {"state": action.state.value, "added": len(action.added), "removed": len(action.removed),
                "addedIds": list(action.added[:20]), "removedIds": list(action.removed[:20])}


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
