"""The export engine: apply received SCIM changes to Entra on the reconcile engine (shared/services/reconcile.py):
read each change (the SCIM resource as it is now, its link, Entra as it is now), plan it with the pure rules
of shared/domain/export.py, stop the run when its removals together exceed the removal threshold, then
make each write with an audit record carrying the SCIM request's id (docs/export.md).

Idempotent: a change is planned from the SCIM resource as it is now and from Entra as it is now, so a
message delivered twice plans nothing the second time. A user about to be created is recorded first
(`creating` in its link), so a create whose answer was lost is found by its UPN on the next delivery
and still counted as the bridge's own. Each applied change is announced once as `export.applied`: the
event is held before the change's writes and released after its link is stored (docs/events.md), its
id derived from the resource's version, so a redelivery announces nothing new.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from shared.config import Connection
from shared.domain import passwords
from shared.domain.events import Event, EventType, new_event
from shared.domain.export import (
    NEW,
    EntraUser,
    Link,
    Manager,
    Plan,
    Step,
    manager_of,
    mapping_key,
    plan_group,
    plan_user,
)
from shared.domain.scim import Kind
from shared.errors import Conflict, InvalidInput, NotFound, Transient
from shared.services.audit_context import AuditContext
from shared.services.ports import AuditSink, Clock, EventOutbox, ExportChange, ExportDirectory, ScimRepository
from shared.services.reconcile import Capability, Done, Threshold, ThresholdExceeded, reconcile

log = logging.getLogger(__name__)
ACTOR = "export"
THRESHOLD_SETTING = "features.export.removalThreshold"
#: Rounds of one run: a group waiting for a member user applied in the same run is planned again after it.
ROUNDS = 3
#: Holds of `export.applied` events are named by this prefix and the event id (docs/events.md).
EXPORT_RUN = "export-"
#: A held `export.applied` younger than this may belong to a change still being applied.
HOLD_AGE = dt.timedelta(minutes=5)
#: Members above which a group's plan reads every link of the connection at once.
BULK_LINKS = 500
#: Member links a group's plan reads at once.
LINK_READS = 32


@dataclass(frozen=True)
class Applied:
    """What one change did: the plan, the writes made, the problems left."""

    plan: Plan
    written: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        """For logs, the CLI and tests."""
        return {"resourceType": self.plan.kind, "id": self.plan.scim_id, "dryRun": self.dry_run,
                "steps": [s.describe() for s in self.plan.steps], "written": self.written,
                "problems": list(self.plan.problems), "stopped": self.plan.stopped}


@dataclass
class ExportRun:
    """What a run over the pending changes did: each change applied, those still waiting, why it stopped."""

    dry_run: bool
    applied: list[Applied] = field(default_factory=list)
    #: Plans of the changes left pending: a member not in Entra yet, or the run stopped.
    waiting: list[Plan] = field(default_factory=list)
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For logs, the CLI and tests."""
        return {"dryRun": self.dry_run, "applied": [a.as_dict() for a in self.applied],
                "waiting": [{"resourceType": p.kind, "id": p.scim_id, "problems": list(p.problems)}
                            for p in self.waiting], "stopped": self.stopped}


@dataclass(frozen=True)
class _Pending:
    """One SCIM resource to export: the change ids received for it and the request id its audit carries."""

    kind: Kind
    scim_id: str
    request_id: str
    change_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Read:
    """A change read and planned: the resource's version when read (None: deleted in SCIM) and the plan."""

    pending: _Pending
    version: int | None
    plan: Plan


class ExportService:
    """Applies SCIM changes to Entra with the connection's export rules."""

    def __init__(self, repository: ScimRepository, audit: AuditSink, *, events: EventOutbox | None = None,
                 clock: Clock | None = None, dry_run: bool = False) -> None:
        self._repo = repository
        self._audit = audit
        self._events = events
        self._clock = clock
        #: The app-wide DRY_RUN setting; a connection's own `dryRun` counts too.
        self._dry_run = dry_run

    async def plan(self, conn: Connection, entra: ExportDirectory, kind: Kind, scim_id: str, *,
                   settle_members: str | None = None) -> Plan:
        """Read the SCIM resource and Entra, and plan (nothing is written).

        With `settle_members` (a request id), a group's member user whose own change has not been applied yet is
        applied first, under that request id, rather than making the group's change wait for it."""
        rules = conn.features.export
        stored = await self._repo.get(conn.name, kind, scim_id)
        link = await self._repo.link(conn.name, kind, scim_id)
        attributes = stored.attributes if stored else None
        if kind == "Users":
            found = await entra.user(link.entra_id) if link and link.entra_id else None
            if found is None and attributes is not None:
                key = mapping_key(attributes, rules)
                if key is not None:
                    found = await entra.find_user(*key)
                if found is not None and link is not None and link.entra_id is None and link.created:
                    link = replace(link, entra_id=found.id)  # a create whose answer was lost
            skus = await entra.skus() if rules.default_license_sku and attributes is not None else []
            verified = await entra.verified_domains() if attributes is not None else []
            manager = await self._manager(conn, entra, attributes, link, found)
            return plan_user(scim_id, attributes, link, found, rules=rules, verified=verified, skus=skus,
                             manager=manager)
        display_name = str((attributes or {}).get("displayName") or "")
        named = await entra.groups_named(display_name) if display_name else []
        if link and link.entra_id and all(g.id != link.entra_id for g in named):
            linked = await entra.group(link.entra_id)
            named = [*named, linked] if linked else named
        current = await entra.member_ids(link.entra_id) if link and link.entra_id and \
            any(g.id == link.entra_id for g in named) else None
        wanted: set[str] = set()
        held: list[str] = []
        members = (attributes or {}).get("members") or []
        links = await self._member_links(conn, members)
        for member in members:
            value = str(member.get("value"))
            member_kind: Kind = "Groups" if member.get("type") == "Group" else "Users"
            member_link = links.get((member_kind, value))
            if member_link is None and member_kind == "Users":
                member_link = links.get(("Groups", value))
            if member_link is None or (not member_link.entra_id and not member_link.applied_version):
                if settle_members and await self._repo.get(conn.name, "Users", value) is not None:
                    try:
                        member_link = (await self.apply(conn, entra, "Users", value,
                                                        request_id=settle_members)).plan.link
                    except Transient:
                        # Written, but its manager is not in Entra yet: the member is, which is what the group needs.
                        member_link = await self._repo.link(conn.name, "Users", value)
                        if member_link is None or not member_link.entra_id:
                            raise
                else:
                    # The member's own change has not reached Entra yet: deliver this one again later.
                    raise Transient(f"member {value} of group {scim_id} is not in Entra yet; the change is retried")
            if member_link.entra_id:
                wanted.add(member_link.entra_id)
            else:
                held.append(f"member {value} is not in Entra ({'; '.join(member_link.problems) or 'not exported'})")
        owned: set[str] = set()
        if rules.groups.remove_duplicates and len(named) > 1:
            # Only a name with several groups needs to know which of them the bridge created.
            owned = {link_.entra_id for link_ in await self._repo.links(conn.name)
                     if link_.kind == "Groups" and link_.created and link_.entra_id}
        owners = await entra.owner_ids(link.entra_id) if rules.groups.owners and link and link.created and \
            link.entra_id and current is not None else None
        plan = plan_group(scim_id, attributes, link, named, current, wanted, rules=rules, created_by_bridge=owned,
                          owners=owners)
        return replace(plan, problems=(*plan.problems, *held)) if held else plan

    async def _member_links(self, conn: Connection, members: list[Any]) -> dict[tuple[str, str], Link]:
        """The links of a group's members: a large group's in one query of every link, a small group's read a
        few at once (one after another, a 50-member group's plan waited on 50 storage round trips)."""
        if len(members) > BULK_LINKS:
            return {(x.kind, x.scim_id): x for x in await self._repo.links(conn.name)}
        found: dict[tuple[str, str], Link] = {}
        typed: list[tuple[Kind, str]] = list(dict.fromkeys(
            ("Groups" if m.get("type") == "Group" else "Users", str(m.get("value"))) for m in members))
        await self._read_links(conn, typed, found)
        # A member without a type is a User or a Group: its Group link is read only when it has no User link.
        await self._read_links(conn, [("Groups", v) for k, v in typed if k == "Users" and (k, v) not in found], found)
        return found

    async def _read_links(self, conn: Connection, keys: list[tuple[Kind, str]],
                          found: dict[tuple[str, str], Link]) -> None:
        """Read these links, LINK_READS at once, into `found`."""
        for start in range(0, len(keys), LINK_READS):
            chunk = keys[start:start + LINK_READS]
            for key, link in zip(chunk, await asyncio.gather(*(self._repo.link(conn.name, kind, value)
                                                                 for kind, value in chunk)), strict=True):
                if link is not None:
                    found[key] = link

    async def _manager(self, conn: Connection, entra: ExportDirectory, attributes: dict[str, Any] | None,
                       link: Link | None, found: EntraUser | None) -> Manager:
        """The manager the SCIM user wants (its Entra id once its own change is applied) and the one Entra has
        (read only when it may have to change: a manager wanted, or one to clear on a user the bridge created)."""
        if attributes is None or attributes.get("active") is False:
            return Manager()
        wanted_scim = manager_of(attributes)
        created = bool(link and link.created)
        current = await entra.manager_id(found.id) if found is not None and (wanted_scim or created) else None
        if wanted_scim is None:
            return Manager(None, current)
        manager_link = await self._repo.link(conn.name, "Users", wanted_scim)
        if manager_link is not None and manager_link.entra_id:
            return Manager(manager_link.entra_id, current)
        if manager_link is None or not manager_link.applied_version:
            if await self._repo.get(conn.name, "Users", wanted_scim) is not None:
                return Manager(None, current, pending=True)
            return Manager(None, current, problem=f"manager {wanted_scim} is not a User of this service")
        return Manager(None, current, problem=f"manager {wanted_scim} is not in Entra "
                                              f"({'; '.join(manager_link.problems) or 'not exported'})")

    async def apply(self, conn: Connection, entra: ExportDirectory, kind: Kind, scim_id: str, *,
                    request_id: str, change_id: str | None = None, dry_run: bool = False) -> Applied:
        """Apply one change as a run of its own: read and plan, check the threshold, then make each write
        with an audit record carrying the SCIM request's id. A member user not yet applied is applied first;
        a member group not in Entra yet raises Transient (the change is delivered again). A dry run (asked,
        or set for the connection or the app) plans and writes nothing."""
        dry_run = dry_run or conn.dry_run or self._dry_run
        job = _Export(self, conn, entra, [_Pending(kind, scim_id, request_id, (change_id,) if change_id else ())],
                      settle=not dry_run)
        stopped = await self._run(conn, job, request_id, dry_run=dry_run)
        [plan] = job.plans
        if dry_run:
            return Applied(plan, 0, True)
        if stopped is not None:
            return Applied(replace(plan, steps=(), problems=(*plan.problems, stopped), stopped=True), 0, False)
        if plan.retry:
            raise Transient(plan.retry)  # written, and left pending: the queue delivers it again
        return job.applied[0]

    async def run(self, conn: Connection, entra: ExportDirectory, *, dry_run: bool = False,
                  correlation_id: str = "export-run") -> ExportRun:
        """Apply every pending change in one run, oldest first: the removal threshold counts the removals of
        all of them together. A group waiting for a member user of the same run is planned again once that
        user is applied; what still waits stays pending. A dry run (asked, or set for the connection or the app)
        plans and writes nothing."""
        dry_run = dry_run or conn.dry_run or self._dry_run
        waiting: list[_Pending] = []
        for change in await self._repo.changes(conn.name):
            same = next((p for p in waiting if (p.kind, p.scim_id) == (change.kind, change.scim_id)), None)
            if same is None:
                waiting.append(_Pending(change.kind, change.scim_id, change.request_id, (change.id,)))
            else:
                waiting[waiting.index(same)] = replace(same, change_ids=(*same.change_ids, change.id))
        result = ExportRun(dry_run=dry_run)
        removed = 0
        latest: dict[tuple[str, str], Plan] = {}
        order: list[tuple[str, str]] = []
        for _ in range(1 if dry_run else ROUNDS):
            job = _Export(self, conn, entra, waiting, settle=False)
            result.stopped = await self._run(conn, job, correlation_id, dry_run=dry_run, removed=removed)
            for plan in job.plans:
                order += [] if (plan.kind, plan.scim_id) in latest else [(plan.kind, plan.scim_id)]
                latest[(plan.kind, plan.scim_id)] = plan
            result.applied += job.applied
            removed += sum(a.plan.removals for a in job.applied)
            if dry_run or result.stopped is not None:
                break
            waiting = job.waiting
            if not job.applied or not waiting:
                break
        if dry_run:
            result.applied = [Applied(latest[key], 0, True) for key in order]
        else:
            result.waiting = [latest[(p.kind, p.scim_id)] for p in waiting]
        return result

    async def _run(self, conn: Connection, job: _Export, correlation_id: str, *, dry_run: bool,
                   removed: int = 0) -> str | None:
        """Run `job` on the engine; why it stopped (the threshold), else None. `removed`: removals already made
        by earlier rounds of the same run, which the threshold counts too."""
        rules = conn.features.export
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        threshold = Threshold(rules.removal_threshold, THRESHOLD_SETTING)
        try:
            report = await reconcile(job, audit, dry_run=dry_run,
                                     limit=lambda removals: threshold(removed + removals))
        except ThresholdExceeded as stop:
            # Nothing of the run was written: its changes stay pending, each one that removes names the problem.
            for plan in job.plans:
                if plan.removals:
                    await self._repo.put_link(conn.name, replace(plan.link, problems=(*plan.problems, stop.detail)))
            return stop.detail
        finally:
            if not dry_run:
                await audit.flush()
        return report.stopped

    def _announcement(self, conn: Connection, read: _Read) -> Event | None:
        """The change's `export.applied` event (None without an outbox): ids and the version only."""
        if self._events is None or self._clock is None:
            return None
        version = "deleted" if read.version is None else str(read.version)
        return new_event(EventType.EXPORT_APPLIED, connection=conn.name, subject=read.pending.scim_id,
                         change=f"{read.pending.kind}/{read.pending.scim_id}@{version}", time=self._clock.now(),
                         resourceType=read.pending.kind, scimId=read.pending.scim_id, version=version)

    async def recover_events(self, connection: str) -> int:
        """Release the `export.applied` events a process stopped between a change's writes and their release left
        held, when the stored link shows the change applied; drop the others (docs/events.md). Only holds older
        than HOLD_AGE are judged, so a change being applied is left alone; a change applied later (its message
        delivered again, or replayed from the poison queue) holds and releases its event anew. Returns how
        many were released."""
        if self._events is None or self._clock is None:
            return 0
        cutoff = self._clock.now() - HOLD_AGE
        released = 0
        for run, held in (await self._events.held(connection)).items():
            if not run.startswith(EXPORT_RUN) or any(e.time > cutoff for e in held):
                continue
            proven = {e.id for e in held if await self._applied(connection, e)}
            await self._events.release(connection, run, proven)
            released += len(proven)
        return released

    async def _applied(self, connection: str, event: Event) -> bool:
        """Whether the stored link shows the change a held `export.applied` announces: `end` stores the link
        with the version applied only after every write of the change (0 for a deletion, whose change it
        then drops)."""
        kind, version = event.data.get("resourceType"), event.data.get("version")
        if event.type is not EventType.EXPORT_APPLIED or kind not in ("Users", "Groups"):
            return False
        link = await self._repo.link(connection, kind, event.subject)
        if link is None:
            return False
        if version != "deleted":
            return str(link.applied_version) == version
        return (link.applied_version == 0 and await self._repo.get(connection, kind, event.subject) is None
                and not any((c.kind, c.scim_id) == (kind, event.subject) for c in await self._repo.changes(connection)))

    async def pending(self, conn: Connection, entra: ExportDirectory) -> list[Plan]:
        """The plan of every pending change (dry-run: nothing is written)."""
        return [applied.plan for applied in (await self.run(conn, entra, dry_run=True)).applied]

    async def changes(self, connection: str) -> list[ExportChange]:
        """Received changes not yet applied, oldest first."""
        return await self._repo.changes(connection)

    async def summary(self, connection: str) -> dict[str, Any]:
        """Counts and problems for the connection's status."""
        links = await self._repo.links(connection)
        changes = await self._repo.changes(connection)
        return {"users": sum(1 for x in links if x.kind == "Users" and x.entra_id),
                "groups": sum(1 for x in links if x.kind == "Groups" and x.entra_id),
                "created": sum(1 for x in links if x.created and x.entra_id),
                "pending": len(changes),
                "problems": [{"resourceType": x.kind, "id": x.scim_id, "problem": p}
                             for x in links for p in x.problems]}


class _Export(Capability[_Read, Step]):
    """SCIM changes on the reconcile engine: one batch per resource, one Entra write per step."""

    audit_prefix = "export."

    def __init__(self, service: ExportService, conn: Connection, entra: ExportDirectory, items: Sequence[_Pending],
                 *, settle: bool) -> None:
        self._service = service
        self._repo = service._repo
        self._conn = conn
        self._entra = entra
        self._items = list(items)
        self._settle = settle
        #: Every plan read, in order (with its problem when the change waits for a member).
        self.plans: list[Plan] = []
        self.waiting: list[_Pending] = []
        self.applied: list[Applied] = []
        self._link = Link("Users", "")
        self._target: str | None = None
        self._written = 0
        self._event: Event | None = None

    async def read(self) -> AsyncIterator[_Read]:
        for item in self._items:
            stored = await self._repo.get(self._conn.name, item.kind, item.scim_id)
            try:
                plan = await self._service.plan(self._conn, self._entra, item.kind, item.scim_id,
                                                settle_members=item.request_id if self._settle else None)
            except Transient as exc:
                if self._settle:
                    raise  # one change on its own: the queue delivers it again
                self.waiting.append(item)
                self.plans.append(Plan(item.kind, item.scim_id, (), (exc.detail,), Link(item.kind, item.scim_id)))
                continue
            self.plans.append(plan)
            yield _Read(item, stored.version if stored else None, plan)

    def plan(self, batch: _Read) -> Sequence[Step]:
        return batch.plan.steps

    def context(self, batch: _Read, audit: AuditContext) -> AuditContext:
        return audit.bind(correlation_id=batch.pending.request_id)

    def describe(self, action: Step) -> dict[str, Any]:
        return {k: v for k, v in action.detail.items() if k != "body"}

    async def begin(self, batch: _Read, actions: Sequence[Step]) -> None:
        self._link, self._written = batch.plan.link, 0
        self._target = self._link.entra_id
        self._event = self._service._announcement(self._conn, batch)
        if self._event is not None and self._service._events is not None:
            await self._service._events.hold(self._conn.name, _run_of(self._event), [self._event])

    async def apply(self, action: Step) -> Done | None:
        conn, link = self._conn, self._link
        if action.action == "user.create":
            link = replace(link, created=True, entra_id=None)
            await self._repo.put_link(conn.name, link)
        done = await self._write(action, NEW if self._target is None else self._target)
        if action.action in ("user.create", "group.create", "link"):
            self._target = (done.target if done else None) or action.target
            link = replace(link, entra_id=self._target, created=link.created or action.action.endswith(".create"))
            await self._repo.put_link(conn.name, link)
        if action.action == "user.delete" or (action.action == "group.delete" and action.target == link.entra_id):
            link = replace(link, entra_id=None)
        self._link = link
        self._written += action.action != "link"
        return None if action.action == "link" else done

    async def _write(self, step: Step, target: str) -> Done | None:
        """One Entra write; what the engine audits (None: nothing written)."""
        entra = self._entra
        subject = target if step.target == NEW else step.target
        if step.action == "link":
            return Done("linked", target=step.target)
        if step.action == "user.create":
            body = _new_user(self._conn, dict(step.detail["body"]))
            try:
                result = await entra.create_user(body)
            except (InvalidInput, Conflict):
                # Another delivery of this user's change created it meanwhile (the link says it is ours): adopt it.
                again = await entra.find_user("userPrincipalName", str(step.detail["upn"]))
                if again is None:
                    raise
                return Done("adopted", target=again.id,
                            detail={"reason": "created meanwhile by another delivery of the same change"})
        elif step.action == "group.create":
            result = await entra.create_group(dict(step.detail["body"]), owners=tuple(step.detail.get("owners") or ()))
        elif step.action == "user.update":
            result = await entra.update_user(subject, dict(step.detail["body"]))
        elif step.action == "user.setManager":
            result = await entra.set_manager(subject, str(step.detail["manager"]))
        elif step.action == "user.removeManager":
            result = await entra.remove_manager(subject)
        elif step.action == "group.update":
            result = await entra.update_group(subject, dict(step.detail["body"]))
        elif step.action == "group.addOwner":
            result = await entra.add_owner(subject, str(step.detail["owner"]))
        elif step.action == "user.disable":
            result = await entra.update_user(subject, {"accountEnabled": False})
        elif step.action == "user.delete":
            result = await entra.delete_user(subject)
        elif step.action == "user.assignLicense":
            result = await entra.assign_license(subject, str(step.detail["sku"]))
        elif step.action == "group.delete":
            result = await entra.delete_group(subject)
        elif step.action == "group.addMember":
            result = await entra.add_member(subject, str(step.detail["member"]))
        elif step.action == "group.removeMember":
            try:
                result = await entra.remove_member(subject, str(step.detail["member"]))
            except NotFound:
                return None  # already gone: the state wanted
        else:
            assert_never(step.action)
        return Done("done", target=result.id or subject, graph_request_id=result.request_id)

    async def end(self, batch: _Read, actions: Sequence[Step]) -> None:
        conn = self._conn
        link = replace(self._link, problems=batch.plan.problems, applied_version=batch.version or 0)
        await self._repo.put_link(conn.name, link)
        # A user whose manager is not in Entra yet stays pending, to be delivered (or run) again.
        for change_id in () if batch.plan.retry else batch.pending.change_ids:
            await self._repo.drop_change(conn.name, change_id)
        if batch.plan.problems:
            log.warning("export of %s %s left problems: %s", batch.pending.kind, batch.pending.scim_id,
                        "; ".join(batch.plan.problems))
        if self._event is not None and self._service._events is not None:
            await self._service._events.release(conn.name, _run_of(self._event), held=[self._event])
        self.applied.append(Applied(replace(batch.plan, link=link), self._written, False))


def _new_user(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
    """A created user's body with its password profile: Graph requires a password on create
    (https://learn.microsoft.com/graph/api/user-post-users). It is random and kept nowhere; `passwordless` asks
    for no change of it and lets it not expire, so the user onboards with a Temporary Access Pass and a passkey
    and never meets a password prompt (docs/export.md)."""
    password = passwords.generate(passwords.PasswordPolicy(), banned=passwords.banned_terms(
        [str(body.get("userPrincipalName")), str(body.get("displayName"))]))
    if conn.features.export.new_users == "passwordless":
        body["passwordProfile"] = {"forceChangePasswordNextSignIn": False, "password": password}
        body["passwordPolicies"] = "DisablePasswordExpiration"
    else:
        body["passwordProfile"] = {"forceChangePasswordNextSignIn": True, "password": password}
    return body


def _run_of(event: Event) -> str:
    """The hold of one change's event (docs/events.md)."""
    return f"{EXPORT_RUN}{event.id}"
