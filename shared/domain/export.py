"""Export rules: what Entra must become for one SCIM user or group, planned without I/O (docs/export.md).

The engine reads (the SCIM resource, its link to an Entra object, Entra's matching objects), calls
`plan_user` or `plan_group` here, then applies the steps one by one with an audit record each. A plan
holds no secret: the password of a created user is drawn when the step is applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from shared.domain.features import ExportFeature
from shared.domain.scim import ENTERPRISE_SCHEMA, Kind

Action = Literal["user.create", "user.update", "user.disable", "user.delete", "user.assignLicense",
                 "group.create", "group.delete", "group.addMember", "group.removeMember", "link"]
#: Actions that remove: the removal threshold counts them across a run (shared/services/export.py).
REMOVALS = frozenset({"user.delete", "user.disable", "group.delete", "group.removeMember"})
#: The target of a step that acts on the object a previous step of the same plan creates.
NEW = "(new)"
#: mailNickname: ASCII letters and digits and a few marks, at most 64 characters
#: (https://learn.microsoft.com/graph/api/resources/group#properties).
_NICKNAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class EntraUser:
    """An Entra user as export reads it."""

    id: str
    user_principal_name: str
    mail: str | None = None
    employee_id: str | None = None
    account_enabled: bool = True
    usage_location: str | None = None
    display_name: str | None = None
    licenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntraGroup:
    """An Entra group as export reads it."""

    id: str
    display_name: str
    mail_nickname: str | None = None
    mail: str | None = None
    mail_enabled: bool = False
    security_enabled: bool = True
    group_types: tuple[str, ...] = ()

    @property
    def unified(self) -> bool:
        """A Microsoft 365 group."""
        return "Unified" in self.group_types


@dataclass(frozen=True)
class Sku:
    """A subscribed SKU and its free seats (prepaidUnits.enabled - consumedUnits)."""

    sku_id: str
    part_number: str
    free: int


@dataclass(frozen=True)
class Link:
    """A SCIM resource's Entra object: its id once known, and whether the bridge created it."""

    kind: Kind
    scim_id: str
    entra_id: str | None = None
    created: bool = False
    problems: tuple[str, ...] = ()
    applied_version: int = 0


@dataclass(frozen=True)
class Step:
    """One Entra write."""

    action: Action
    target: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The action, as the reconcile engine counts and audits it (`export.` + kind)."""
        return self.action

    @property
    def removals(self) -> int:
        """1 for a deletion, a disable or a member removal; the engine's threshold counts them over a run."""
        return 1 if self.action in REMOVALS else 0

    def describe(self) -> str:
        """One line for the dry-run listing."""
        extra = ", ".join(f"{k}={v}" for k, v in self.detail.items() if k != "body")
        return f"{self.action} {self.target}" + (f" ({extra})" if extra else "")


@dataclass(frozen=True)
class Plan:
    """The steps for one SCIM resource, the problems that hold part of it back, and the link after it."""

    kind: Kind
    scim_id: str
    steps: tuple[Step, ...]
    problems: tuple[str, ...]
    link: Link
    stopped: bool = False

    @property
    def removals(self) -> int:
        """Deletions, disables and member removals in this plan."""
        return sum(s.removals for s in self.steps)


def mail_nickname(text: str) -> str:
    """A mailNickname from a name: characters Entra refuses dropped, at most 64."""
    cleaned = _NICKNAME.sub("", text.split("@", 1)[0])[:64]
    return cleaned or "user"


def primary_mail(attributes: Mapping[str, Any]) -> str | None:
    """The SCIM user's primary email, else its first."""
    emails = [e for e in attributes.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    return str(primary["value"]) if primary else None


def employee_number(attributes: Mapping[str, Any]) -> str | None:
    """employeeNumber of the enterprise extension."""
    value = (attributes.get(ENTERPRISE_SCHEMA) or {}).get("employeeNumber")
    return str(value) if value else None


def domain_of(name: str) -> str:
    """The part after @, lower-cased ('' when none)."""
    return name.rsplit("@", 1)[1].lower() if "@" in name else ""


def upn_for(attributes: Mapping[str, Any], rules: ExportFeature) -> str:
    """The UPN a SCIM user gets in Entra: its userName, or with userNameAtDomain its userName's local
    part at the configured domain."""
    user_name = str(attributes.get("userName") or "")
    if rules.username_mapping == "userNameAtDomain":
        return f"{user_name.split('@', 1)[0]}@{rules.user_domain or ''}"
    return user_name


def upn_problem(upn: str, verified: Sequence[str], rules: ExportFeature) -> str | None:
    """Why `upn` cannot be used in Entra, naming the domain and setting; None when it can."""
    domain = domain_of(upn)
    if rules.username_mapping == "userNameAtDomain" and not rules.user_domain:
        return "usernameMapping userNameAtDomain needs features.export.userDomain (a verified domain)"
    if not domain:
        return f"userName {upn!r} has no domain: a UPN is name@domain with a verified domain of the tenant"
    if domain not in {d.lower() for d in verified}:
        return (f"domain {domain!r} of userName is not a verified domain of the tenant (verified: "
                f"{', '.join(sorted(verified)) or 'none'})")
    return None


def mapping_key(attributes: Mapping[str, Any], rules: ExportFeature) -> tuple[str, str] | None:
    """The Entra property and value that map this SCIM user when no id is linked (usernameMapping)."""
    if rules.username_mapping == "mail":
        mail = primary_mail(attributes)
        return ("mail", mail) if mail else None
    if rules.username_mapping == "employeeId":
        number = employee_number(attributes)
        return ("employeeId", number) if number else None
    return "userPrincipalName", upn_for(attributes, rules)


def _user_fields(attributes: Mapping[str, Any]) -> dict[str, Any]:
    name = attributes.get("name") or {}
    extension = attributes.get(ENTERPRISE_SCHEMA) or {}
    fields = {"displayName": attributes.get("displayName") or name.get("formatted") or attributes.get("userName"),
              "givenName": name.get("givenName"), "surname": name.get("familyName"),
              "department": extension.get("department"), "employeeId": extension.get("employeeNumber")}
    return {k: v for k, v in fields.items() if v}


def plan_user(scim_id: str, attributes: Mapping[str, Any] | None, link: Link | None, found: EntraUser | None,
              *, rules: ExportFeature, verified: Sequence[str], skus: Sequence[Sku]) -> Plan:
    """The steps that bring Entra's user in line with the SCIM user (None: deleted in SCIM)."""
    link = link or Link("Users", scim_id)
    steps: list[Step] = []
    problems: list[str] = []
    if attributes is None or attributes.get("active") is False:
        deleted = attributes is None
        if found is None:
            return Plan("Users", scim_id, (), (), link)
        if not link.created:
            note = (f"Entra user {found.user_principal_name} was not created by the bridge: it is left as it is "
                    f"(docs/architecture.md, invariant 9)")
            return Plan("Users", scim_id, (), (note,), link)
        if deleted and rules.delete_users:
            steps.append(Step("user.delete", found.id, {"upn": found.user_principal_name}))
        elif found.account_enabled:
            steps.append(Step("user.disable", found.id, {"upn": found.user_principal_name}))
        return Plan("Users", scim_id, tuple(steps), (), replace(link, entra_id=found.id))

    fields = _user_fields(attributes)
    target = found.id if found else NEW
    if found is None:
        upn = upn_for(attributes, rules)
        problem = upn_problem(upn, verified, rules)
        if problem:
            return Plan("Users", scim_id, (), (problem,), link)
        body = {"accountEnabled": attributes.get("active") is not False, "userPrincipalName": upn,
                "mailNickname": mail_nickname(upn), **fields}
        if rules.usage_location:
            body["usageLocation"] = rules.usage_location
        steps.append(Step("user.create", NEW, {"upn": upn, "body": body}))
        usage_location = rules.usage_location
        licenses: tuple[str, ...] = ()
    else:
        if link.entra_id != found.id:
            steps.append(Step("link", found.id, {"upn": found.user_principal_name}))
        changes = {k: v for k, v in fields.items() if k in ("displayName",) and v != found.display_name}
        if link.created and found.account_enabled != (attributes.get("active") is not False):
            changes["accountEnabled"] = attributes.get("active") is not False
        usage_location = found.usage_location
        if not usage_location and rules.usage_location:
            changes["usageLocation"] = usage_location = rules.usage_location
        if changes:
            steps.append(Step("user.update", target, {"fields": sorted(changes), "body": changes}))
        licenses = found.licenses
    if rules.default_license_sku and rules.default_license_sku not in licenses:
        sku = next((s for s in skus if rules.default_license_sku in (s.sku_id, s.part_number)), None)
        if sku is None:
            problems.append(f"defaultLicenseSku {rules.default_license_sku!r} is not among the tenant's "
                            "subscribedSkus")
        elif sku.sku_id in licenses:
            pass
        elif sku.free <= 0:
            problems.append(f"no free seat of {sku.part_number or sku.sku_id} for the default license: buy seats "
                            "or free some, then the next change of the user assigns it")
        elif not usage_location:
            problems.append("a license needs the user's usageLocation: set features.export.usageLocation")
        else:
            steps.append(Step("user.assignLicense", target, {"sku": sku.sku_id}))
    return Plan("Users", scim_id, tuple(steps), tuple(problems), link)


def group_matches(group: EntraGroup, display_name: str, rules: ExportFeature) -> bool:
    """Whether an Entra group of this name is the SCIM group's, per `groups.match`."""
    if group.display_name.lower() != display_name.lower():
        return False
    if rules.groups.match == "nameOnly":
        return True
    wants_unified = rules.groups.kind == "microsoft365"
    return group.unified == wants_unified and (group.mail_nickname or "").lower() == mail_nickname(
        display_name).lower()


def group_body(display_name: str, rules: ExportFeature) -> dict[str, Any]:
    """The properties of a created group: a security group, or a Microsoft 365 group
    (https://learn.microsoft.com/graph/api/group-post-groups)."""
    if rules.groups.kind == "microsoft365":
        return {"displayName": display_name, "mailNickname": mail_nickname(display_name), "mailEnabled": True,
                "securityEnabled": False, "groupTypes": ["Unified"]}
    return {"displayName": display_name, "mailNickname": mail_nickname(display_name), "mailEnabled": False,
            "securityEnabled": True, "groupTypes": []}


def plan_group(scim_id: str, attributes: Mapping[str, Any] | None, link: Link | None,
               named: Sequence[EntraGroup], current_members: set[str] | None, wanted_members: set[str],
               *, rules: ExportFeature, created_by_bridge: set[str]) -> Plan:
    """The steps that bring Entra's group in line with the SCIM group (None: deleted in SCIM).

    `named` are Entra's groups of the SCIM group's displayName (and the linked one), `current_members`
    the linked group's direct members, `wanted_members` the Entra ids of the SCIM members.
    """
    link = link or Link("Groups", scim_id)
    linked = next((g for g in named if g.id == link.entra_id), None)
    if attributes is None:
        if linked is not None and link.created:
            deletion = (Step("group.delete", linked.id, {"displayName": linked.display_name}),)
            return Plan("Groups", scim_id, deletion, (), link)
        return Plan("Groups", scim_id, (), (), link)
    display_name = str(attributes.get("displayName") or "")
    steps: list[Step] = []
    problems: list[str] = []
    target = linked
    if target is None:
        target = next((g for g in named if group_matches(g, display_name, rules)), None)
        if target is not None:
            steps.append(Step("link", target.id, {"displayName": display_name}))
    same_name = [g for g in named if g.display_name.lower() == display_name.lower()]
    if target is None:
        if same_name and rules.groups.create_when_unmatched == "onlyIfNameUnused":
            problems.append(f"no Entra group matches {display_name!r} ({rules.groups.match}) and the name is used by "
                            f"{', '.join(g.id for g in same_name)}: nothing is created (groups.createWhenUnmatched "
                            "onlyIfNameUnused)")
            return Plan("Groups", scim_id, (), tuple(problems), link)
        steps.append(Step("group.create", NEW, {"displayName": display_name,
                                                "body": group_body(display_name, rules)}))
        current_members = set()
    target_id = target.id if target is not None else NEW
    for other in same_name:
        if other.id == target_id:
            continue
        if rules.groups.remove_duplicates and other.id in created_by_bridge:
            steps.append(Step("group.delete", other.id, {"displayName": other.display_name, "duplicate": True}))
        else:
            problems.append(f"duplicate Entra group {other.id} named {display_name!r} is left (not created by the "
                            "bridge, or groups.removeDuplicates is off)")
    current = current_members or set()
    for member in sorted(wanted_members - current):
        steps.append(Step("group.addMember", target_id, {"member": member}))
    for member in sorted(current - wanted_members):
        steps.append(Step("group.removeMember", target_id, {"member": member}))
    return Plan("Groups", scim_id, tuple(steps), tuple(problems), link)

