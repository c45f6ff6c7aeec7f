"""The export engine: apply a received SCIM change to Entra, in the shape read, pure plan, apply with an
audit record per write (docs/export.md).

Idempotent: a change is planned from the SCIM resource as it is now and from Entra as it is now, so a
message delivered twice plans nothing the second time. A user about to be created is recorded first
(`creating` in its link), so a create whose answer was lost is found by its UPN on the next delivery
and still counted as the bridge's own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from shared.config import Connection
from shared.domain import passwords
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
    thresholded_run,
)
from shared.domain.scim import Kind
from shared.errors import BridgeError, Conflict, InvalidInput, NotFound, Transient
from shared.services.ports import AuditSink, ExportChange, ExportDirectory, ScimRepository

log = logging.getLogger(__name__)
ACTOR = "export"
#: Members above which a group's plan reads every link of the connection at once.
BULK_LINKS = 500


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


class ExportService:
    """Applies SCIM changes to Entra with the connection's export rules."""

    def __init__(self, repository: ScimRepository, audit: AuditSink) -> None:
        self._repo = repository
        self._audit = audit

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
        # A large group's links are read in one query rather than one read per member.
        links = {(x.kind, x.scim_id): x for x in await self._repo.links(conn.name)} if len(members) > BULK_LINKS \
            else None
        for member in members:
            value = str(member.get("value"))
            member_kind: Kind = "Groups" if member.get("type") == "Group" else "Users"
            member_link = links.get((member_kind, value)) if links is not None else \
                await self._repo.link(conn.name, member_kind, value)
            if member_link is None and member_kind == "Users":
                member_link = links.get(("Groups", value)) if links is not None else \
                    await self._repo.link(conn.name, "Groups", value)
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
        """Plan, then make each write with an audit record carrying the SCIM request's id."""
        if dry_run:
            return Applied(await self.plan(conn, entra, kind, scim_id), 0, True)
        plan = await self.plan(conn, entra, kind, scim_id, settle_members=request_id)
        link = plan.link
        written = 0
        target = link.entra_id
        for step in plan.steps:
            if step.action == "user.create":
                link = replace(link, created=True, entra_id=None)
                await self._repo.put_link(conn.name, link)
            try:
                result_id = await self._write(conn, entra, step, NEW if target is None else target, request_id)
            except (InvalidInput, Conflict):
                if step.action != "user.create":
                    raise
                # Another delivery of this user's change created it meanwhile (the link says it is ours): adopt it.
                again = await entra.find_user("userPrincipalName", str(step.detail["upn"]))
                if again is None:
                    raise
                result_id = again.id
            if step.action in ("user.create", "group.create", "link"):
                target = result_id or step.target
                link = replace(link, entra_id=target, created=link.created or step.action.endswith(".create"))
                await self._repo.put_link(conn.name, link)
            if step.action == "user.delete" or (step.action == "group.delete" and step.target == link.entra_id):
                link = replace(link, entra_id=None)
            written += step.action != "link"
        stored = await self._repo.get(conn.name, kind, scim_id)
        link = replace(link, problems=plan.problems, applied_version=stored.version if stored else 0)
        await self._repo.put_link(conn.name, link)
        if plan.retry:
            await self._audit.flush()
            raise Transient(plan.retry)
        if change_id:
            await self._repo.drop_change(conn.name, change_id)
        if plan.problems:
            log.warning("export of %s %s left problems: %s", kind, scim_id, "; ".join(plan.problems))
        await self._audit.flush()
        return Applied(replace(plan, link=link), written, False)

    async def _write(self, conn: Connection, entra: ExportDirectory, step: Step, target: str,
                     request_id: str) -> str | None:
        """One Entra write and its audit record (the failure is recorded too, then raised)."""
        detail = {k: v for k, v in step.detail.items() if k != "body"}
        subject = target if step.target == NEW else step.target
        try:
            if step.action == "link":
                return step.target
            if step.action == "user.create":
                result = await entra.create_user(self._new_user(conn, dict(step.detail["body"])))
            elif step.action == "group.create":
                result = await entra.create_group(dict(step.detail["body"]),
                                                  owners=tuple(step.detail.get("owners") or ()))
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
            else:
                try:
                    result = await entra.remove_member(subject, str(step.detail["member"]))
                except NotFound:
                    return None  # already gone: the state wanted
        except BridgeError as exc:
            await self._audit.record(connection=conn.name, actor=ACTOR, action=f"export.{step.action}", target=subject,
                                     outcome="failed", correlation_id=request_id, detail={**detail,
                                                                                          "error": exc.title})
            raise
        await self._audit.record(connection=conn.name, actor=ACTOR, action=f"export.{step.action}",
                                 target=result.id or subject, outcome="done", correlation_id=request_id,
                                 graph_request_id=result.request_id, detail=detail)
        return result.id

    @staticmethod
    def _new_user(conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
        """A created user's body with its password profile: Graph requires a password on create
        (https://learn.microsoft.com/graph/api/user-post-users). It is random and kept nowhere; `passwordless`
        asks for no change of it and lets it not expire, so the user onboards with a Temporary Access Pass and a
        passkey and never meets a password prompt (docs/export.md)."""
        password = passwords.generate(passwords.PasswordPolicy(), banned=passwords.banned_terms(
            [str(body.get("userPrincipalName")), str(body.get("displayName"))]))
        if conn.features.export.new_users == "passwordless":
            body["passwordProfile"] = {"forceChangePasswordNextSignIn": False, "password": password}
            body["passwordPolicies"] = "DisablePasswordExpiration"
        else:
            body["passwordProfile"] = {"forceChangePasswordNextSignIn": True, "password": password}
        return body

    async def pending(self, conn: Connection, entra: ExportDirectory) -> list[Plan]:
        """The plan of every pending change (dry-run: nothing is written)."""
        plans: list[Plan] = []
        seen: set[tuple[str, str]] = set()
        for change in await self._repo.changes(conn.name):
            if (change.kind, change.scim_id) in seen:
                continue
            seen.add((change.kind, change.scim_id))
            try:
                plans.append(await self.plan(conn, entra, change.kind, change.scim_id))
            except Transient as exc:
                plans.append(Plan(change.kind, change.scim_id, (), (exc.detail,), Link(change.kind, change.scim_id)))
        return thresholded_run(plans, conn.features.export)

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
