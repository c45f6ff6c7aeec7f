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
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_EXTENSION_SCHEMA, Kind, ScimError

Action = Literal["user.create", "user.update", "user.disable", "user.delete", "user.assignLicense",
                 "user.setManager", "user.removeManager", "group.create", "group.update", "group.delete",
                 "group.addMember", "group.removeMember", "group.addOwner", "link"]
#: Actions that remove: the removal threshold counts them across a run (shared/services/export.py).
REMOVALS = frozenset({"user.delete", "user.disable", "group.delete", "group.removeMember"})
#: The target of a step that acts on the object a previous step of the same plan creates.
NEW = "(new)"
#: mailNickname: ASCII letters and digits and a few marks, at most 64 characters
#: (https://learn.microsoft.com/graph/api/resources/group#properties).
_NICKNAME = re.compile(r"[^A-Za-z0-9._-]")
#: Graph user properties export keeps equal to the SCIM user's, each with the SCIM attribute it comes from and
#: the most characters Graph takes (https://learn.microsoft.com/graph/api/resources/user#properties).
USER_PROPERTIES: dict[str, tuple[str, int]] = {
    "displayName": ("displayName", 256), "givenName": ("name.givenName", 64), "surname": ("name.familyName", 64),
    "jobTitle": ("title", 128), "mail": ("emails", 254), "businessPhones": ('phoneNumbers[type eq "work"]', 64),
    "mobilePhone": ('phoneNumbers[type eq "mobile"]', 64),
    "streetAddress": ('addresses[type eq "work"].streetAddress', 1024),
    "city": ('addresses[type eq "work"].locality', 128), "state": ('addresses[type eq "work"].region', 128),
    "postalCode": ('addresses[type eq "work"].postalCode', 40),
    "country": ('addresses[type eq "work"].country', 128),
    "employeeId": (f"{ENTERPRISE_SCHEMA}:employeeNumber", 16),
    "department": (f"{ENTERPRISE_SCHEMA}:department", 64),
    "companyName": (f"{ENTERPRISE_SCHEMA}:organization", 64)}
#: A group's description: Graph takes at most 1,024 characters (group resource, properties).
DESCRIPTION_LENGTH = 1024
#: mail: an address of ASCII characters (Graph refuses accented ones), name@domain.
_MAIL = re.compile(r"^[\x21-\x7e]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")


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
    #: The USER_PROPERTIES as Entra holds them (absent: null, businessPhones: []).
    properties: Mapping[str, Any] = field(default_factory=dict)


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
    description: str | None = None

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
    #: Why the change must be delivered again once these steps are written (a manager not in Entra yet), or None.
    retry: str | None = None

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


def _typed(values: Any, wanted: str) -> dict[str, Any] | None:
    """The multi-valued entry of this type (the primary one first), else None."""
    entries = [e for e in values or [] if isinstance(e, dict) and e.get("type") == wanted]
    return next((e for e in entries if e.get("primary")), entries[0] if entries else None)


def user_properties(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Every USER_PROPERTIES value of a SCIM user (None when the SCIM user has none; businessPhones a list)."""
    name = attributes.get("name") or {}
    extension = attributes.get(ENTERPRISE_SCHEMA) or {}
    phones = attributes.get("phoneNumbers")
    work = _typed(phones, "work")
    mobile = _typed(phones, "mobile")
    address = _typed(attributes.get("addresses"), "work") or {}
    found = {"displayName": attributes.get("displayName") or name.get("formatted") or attributes.get("userName"),
             "givenName": name.get("givenName"), "surname": name.get("familyName"), "jobTitle": attributes.get("title"),
             "mail": primary_mail(attributes),
             # Graph keeps one business phone (user resource, businessPhones).
             "businessPhones": [str(work["value"])] if work and work.get("value") else [],
             "mobilePhone": mobile.get("value") if mobile else None,
             "streetAddress": address.get("streetAddress"),
             "city": address.get("locality"), "state": address.get("region"),
             "postalCode": address.get("postalCode"), "country": address.get("country"),
             "employeeId": extension.get("employeeNumber"), "department": extension.get("department"),
             "companyName": extension.get("organization")}
    return {k: (v if k == "businessPhones" else (str(v) if v not in (None, "") else None)) for k, v in found.items()}


def check_user(attributes: Mapping[str, Any], scim_id: str | None = None) -> None:
    """Refuse a SCIM user whose values Entra would refuse, naming the attribute (ScimError, invalidValue)."""
    for key, value in user_properties(attributes).items():
        attribute, most = USER_PROPERTIES[key]
        for text in value if isinstance(value, list) else [value]:
            if text is not None and len(text) > most:
                raise ScimError(400, f"{attribute}: {len(text)} characters; Entra's {key} takes at most {most}",
                                "invalidValue")
    mail = primary_mail(attributes)
    if mail is not None and not _MAIL.match(mail):
        raise ScimError(400, f"emails: {mail!r} is not an address Entra's mail takes (name@domain, ASCII only)",
                        "invalidValue")
    manager = ((attributes.get(ENTERPRISE_SCHEMA) or {}).get("manager") or {}).get("value")
    if manager is not None and scim_id is not None and str(manager) == scim_id:
        raise ScimError(400, f"{ENTERPRISE_SCHEMA}:manager: user {scim_id} cannot be its own manager", "invalidValue")


def check_group(attributes: Mapping[str, Any]) -> None:
    """Refuse a SCIM group whose values Entra would refuse, naming the attribute."""
    description = group_description(attributes)
    if description is not None and len(description) > DESCRIPTION_LENGTH:
        raise ScimError(400, f"{GROUP_EXTENSION_SCHEMA}:description: {len(description)} characters; Entra's "
                             f"description takes at most {DESCRIPTION_LENGTH}", "invalidValue")


def manager_of(attributes: Mapping[str, Any]) -> str | None:
    """The SCIM id of the user's manager (enterprise extension), or None."""
    value = ((attributes.get(ENTERPRISE_SCHEMA) or {}).get("manager") or {}).get("value")
    return str(value) if value else None


def group_description(attributes: Mapping[str, Any]) -> str | None:
    """The group's description (the bridge's Group extension), or None."""
    value = (attributes.get(GROUP_EXTENSION_SCHEMA) or {}).get("description")
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Manager:
    """The manager a SCIM user wants in Entra and the one Entra has (object ids; None: none)."""

    wanted: str | None = None
    current: str | None = None
    #: Why the wanted manager cannot be set (it could not be exported), or None.
    problem: str | None = None
    #: The wanted manager's own change is not applied yet: the user's change is delivered again after its writes.
    pending: bool = False


def _property_changes(wanted: Mapping[str, Any], found: EntraUser, *, clear: bool) -> dict[str, Any]:
    """The properties to PATCH: those that differ; values the SCIM user lacks are cleared only with `clear`."""
    changes: dict[str, Any] = {}
    for key, value in wanted.items():
        dedicated = {"displayName": found.display_name, "mail": found.mail, "employeeId": found.employee_id}
        have = dedicated[key] if key in dedicated else found.properties.get(key)
        if value in (None, []) and not clear:
            continue
        if (value or None) != (have or None):
            changes[key] = value
    return changes


def plan_user(scim_id: str, attributes: Mapping[str, Any] | None, link: Link | None, found: EntraUser | None,
              *, rules: ExportFeature, verified: Sequence[str], skus: Sequence[Sku],
              manager: Manager | None = None) -> Plan:
    """The steps that bring Entra's user in line with the SCIM user (None: deleted in SCIM).

    Every USER_PROPERTIES value is written; on a user the bridge created a value the SCIM user no longer has is
    cleared, on a user found by the mapping it is left (another source may own it). `mail` is written only on a
    verified domain of the tenant (`verified`), else the status names it."""
    link = link or Link("Users", scim_id)
    manager = manager or Manager()
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

    wanted = user_properties(attributes)
    mail = wanted.get("mail")
    if mail and domain_of(mail) not in {d.lower() for d in verified}:
        problems.append(f"mail {mail} is not written: its domain is not a verified domain of the tenant")
        wanted.pop("mail")
    target = found.id if found else NEW
    if found is None:
        upn = upn_for(attributes, rules)
        problem = upn_problem(upn, verified, rules)
        if problem:
            return Plan("Users", scim_id, (), (problem,), link)
        body = {"accountEnabled": attributes.get("active") is not False, "userPrincipalName": upn,
                "mailNickname": mail_nickname(upn), **{k: v for k, v in wanted.items() if v not in (None, [])}}
        if rules.usage_location:
            body["usageLocation"] = rules.usage_location
        steps.append(Step("user.create", NEW, {"upn": upn, "body": body}))
        usage_location = rules.usage_location
        licenses: tuple[str, ...] = ()
    else:
        if link.entra_id != found.id:
            steps.append(Step("link", found.id, {"upn": found.user_principal_name}))
        changes = _property_changes(wanted, found, clear=link.created)
        if link.created and found.account_enabled != (attributes.get("active") is not False):
            changes["accountEnabled"] = attributes.get("active") is not False
        usage_location = found.usage_location
        if not usage_location and rules.usage_location:
            changes["usageLocation"] = usage_location = rules.usage_location
        if changes:
            steps.append(Step("user.update", target, {"fields": sorted(changes), "body": changes}))
        licenses = found.licenses
    retry = None
    if manager.problem:
        problems.append(manager.problem)
    elif manager.pending:
        retry = f"the manager of user {scim_id} is not in Entra yet; the change is delivered again"
    elif manager.wanted and manager.wanted != manager.current:
        steps.append(Step("user.setManager", target, {"manager": manager.wanted}))
    elif manager.wanted is None and manager.current and link.created:
        steps.append(Step("user.removeManager", target, {"manager": manager.current}))
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
    return Plan("Users", scim_id, tuple(steps), tuple(problems), link, retry=retry)


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
               *, rules: ExportFeature, created_by_bridge: set[str], owners: set[str] | None = None) -> Plan:
    """The steps that bring Entra's group in line with the SCIM group (None: deleted in SCIM).

    `named` are Entra's groups of the SCIM group's displayName (and the linked one), `current_members`
    the linked group's direct members, `wanted_members` the Entra ids of the SCIM members, `owners` the linked
    group's owners when the bridge created it and `groups.owners` is set (else None: not read).
    """
    link = link or Link("Groups", scim_id)
    linked = next((g for g in named if g.id == link.entra_id), None)
    if attributes is None:
        if linked is not None and link.created:
            deletion = (Step("group.delete", linked.id, {"displayName": linked.display_name}),)
            return Plan("Groups", scim_id, deletion, (), link)
        return Plan("Groups", scim_id, (), (), link)
    display_name = str(attributes.get("displayName") or "")
    description = group_description(attributes)
    steps: list[Step] = []
    problems: list[str] = []
    target = linked
    if target is None:
        target = next((g for g in named if group_matches(g, display_name, rules)), None)
        if target is not None:
            steps.append(Step("link", target.id, {"displayName": display_name}))
    same_name = [g for g in named if g.display_name.lower() == display_name.lower()]
    created = link.created and linked is not None
    if target is None:
        if same_name and rules.groups.create_when_unmatched == "onlyIfNameUnused":
            problems.append(f"no Entra group matches {display_name!r} ({rules.groups.match}) and the name is used by "
                            f"{', '.join(g.id for g in same_name)}: nothing is created (groups.createWhenUnmatched "
                            "onlyIfNameUnused)")
            return Plan("Groups", scim_id, (), tuple(problems), link)
        body = group_body(display_name, rules)
        if description:
            body["description"] = description
        steps.append(Step("group.create", NEW, {"displayName": display_name, "body": body,
                                                "owners": tuple(rules.groups.owners)}))
        current_members = set()
        created = True
    else:
        # A rename or a new description in SCIM renames the group the bridge created or matched; a matched group's
        # description is cleared only by the bridge's own groups (another tool may have written it).
        changes: dict[str, Any] = {}
        if target.display_name != display_name:
            changes["displayName"] = display_name
        if description != target.description and (description is not None or created):
            changes["description"] = description
        if changes:
            steps.append(Step("group.update", target.id, {"fields": sorted(changes), "body": changes}))
    target_id = target.id if target is not None else NEW
    if created and not rules.groups.owners:
        problems.append(f"Entra group {display_name!r} has no owner set by the bridge, only administrators and the "
                        "bridge's app manage it: set features.export.groups.owners")
    elif created and owners is not None:
        for owner in rules.groups.owners:
            if owner not in owners:
                steps.append(Step("group.addOwner", target_id, {"owner": owner}))
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

