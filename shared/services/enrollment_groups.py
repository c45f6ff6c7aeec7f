"""The enrollment-state groups: kept equal to the users' enrollment states, recorded as owned or adopted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from shared.config import Connection
from shared.domain import enrollment
from shared.domain.directory import Enrollment, UserRow
from shared.domain.enrollment import GroupRecord, Ownership
from shared.errors import Configuration, NotFound, Stop
from shared.services.ports import AuditSink, Clock, GroupRecords, GroupWriter, JsonObject

log = logging.getLogger(__name__)


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
