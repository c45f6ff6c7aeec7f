"""What each feature needs from Entra: least-privileged Graph application permissions and directory roles.

One table, used by the connection test, `doctor`, the docs and the infrastructure contract test.
Sources: each API's "Permissions" section on learn.microsoft.com (linked per feature) and the
permission reference https://learn.microsoft.com/graph/permissions-reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

PERMISSIONS_REFERENCE = "https://learn.microsoft.com/graph/permissions-reference"


@dataclass(frozen=True)
class FeatureNeeds:
    """The Graph permissions and directory roles one feature needs, and where that is documented."""

    permissions: tuple[str, ...]
    roles: tuple[str, ...] = ()
    docs: tuple[str, ...] = ()
    why: str = ""


FEATURE_NEEDS: dict[str, FeatureNeeds] = {
    "sync": FeatureNeeds(
        permissions=("User.Read.All", "GroupMember.Read.All"),
        docs=("https://learn.microsoft.com/graph/api/group-list-transitivemembers",
              "https://learn.microsoft.com/graph/api/user-delta"),
        why="read the sync groups' nested members and their attributes"),
    "rotation": FeatureNeeds(
        permissions=("User.Read.All", "GroupMember.Read.All", "User-PasswordProfile.ReadWrite.All",
                     "RoleManagement.Read.Directory", "Organization.Read.All"),
        roles=("User Administrator",),
        docs=("https://learn.microsoft.com/graph/api/user-update",
              "https://learn.microsoft.com/entra/identity/role-based-access-control/privileged-roles-permissions"),
        why="reset passwords (and read who holds admin roles, whom User Administrator may not reset, and the "
            "organisation's name, which no password may contain)"),
    "passkeys": FeatureNeeds(
        permissions=("User.Read.All", "UserAuthMethod-Passkey.ReadWrite.All", "Policy.Read.All"),
        docs=("https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions",
              "https://learn.microsoft.com/graph/api/authentication-post-fido2methods"),
        why="get creation options, register and revoke passkeys, read the FIDO2 policy"),
    "enrollmentGroups": FeatureNeeds(
        permissions=("Group.Create", "GroupMember.ReadWrite.All"),
        docs=("https://learn.microsoft.com/graph/api/group-post-groups",
              "https://learn.microsoft.com/graph/api/group-post-members"),
        why="create the enrollment-state groups and keep their members"),
    "federation": FeatureNeeds(
        permissions=("Domain.Read.All", "Domain-InternalFederation.ReadWrite.All"),
        docs=("https://learn.microsoft.com/graph/api/domain-post-federationconfiguration",),
        why="read domains and create, update or remove their federation configuration"),
    "export": FeatureNeeds(
        permissions=("User.ReadWrite.All", "Group.ReadWrite.All", "Organization.Read.All",
                     "LicenseAssignment.ReadWrite.All"),
        docs=("https://learn.microsoft.com/graph/api/user-assignlicense",),
        why="create groups and users, assign licenses, set usage location"),
    "notifications": FeatureNeeds(
        permissions=("Group.Read.All", "User.Read.All"),
        docs=("https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions",),
        why="subscribe to change notifications on groups (membership) and users (docs/notifications.md)"),
}

#: Reading which directory roles the app holds (for the report): list the activated roles and their members.
#: https://learn.microsoft.com/graph/api/directoryrole-list-members (least privileged: this one).
ROLE_READ_PERMISSION = "RoleManagement.Read.Directory"


@dataclass(frozen=True)
class EndpointNeed:
    """What Graph wants for one kind of call: the least-privileged application permission, and a role."""

    methods: frozenset[str]
    pattern: str
    permission: str
    role: str | None = None
    doc: str = ""

    def matches(self, method: str, path: str) -> bool:
        """Whether a call of `method` to `path` (after the version segment) is this kind."""
        return method in self.methods and re.fullmatch(self.pattern, path) is not None


_READ = frozenset({"GET"})
_WRITE = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_ANY = _READ | _WRITE
_ID = r"[^/]+"

#: Used when Graph answers 403, to name what the bridge lacks; first match wins. Each row cites the
#: API's Permissions section on learn.microsoft.com.
ENDPOINT_NEEDS: tuple[EndpointNeed, ...] = (
    EndpointNeed(_ANY, rf"/users/{_ID}/authentication/fido2Methods(/.*)?", "UserAuthMethod-Passkey.ReadWrite.All",
                 doc="https://learn.microsoft.com/graph/api/authentication-post-fido2methods"),
    EndpointNeed(frozenset({"PATCH"}), rf"/users/{_ID}", "User-PasswordProfile.ReadWrite.All", "User Administrator",
                 doc="https://learn.microsoft.com/graph/api/user-update"),
    EndpointNeed(_READ, r"/users(/.*)?", "User.Read.All", doc="https://learn.microsoft.com/graph/api/user-list"),
    EndpointNeed(_READ, rf"/groups/{_ID}/(transitiveMembers|members)(/.*)?", "GroupMember.Read.All",
                 doc="https://learn.microsoft.com/graph/api/group-list-transitivemembers"),
    EndpointNeed(_WRITE, rf"/groups/{_ID}/members(/.*)?", "GroupMember.ReadWrite.All",
                 doc="https://learn.microsoft.com/graph/api/group-post-members"),
    EndpointNeed(frozenset({"POST"}), r"/groups", "Group.Create",
                 doc="https://learn.microsoft.com/graph/api/group-post-groups"),
    EndpointNeed(_READ, r"/groups(/.*)?", "GroupMember.Read.All",
                 doc="https://learn.microsoft.com/graph/api/group-list"),
    EndpointNeed(_ANY, rf"/domains/{_ID}/federationConfiguration(/.*)?", "Domain-InternalFederation.ReadWrite.All",
                 doc="https://learn.microsoft.com/graph/api/domain-post-federationconfiguration"),
    EndpointNeed(_READ, r"/domains(/.*)?", "Domain.Read.All", doc="https://learn.microsoft.com/graph/api/domain-get"),
    EndpointNeed(_READ, r"/policies/authenticationMethodsPolicy(/.*)?", "Policy.Read.All",
                 doc="https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get"),
    EndpointNeed(_READ, r"/(directoryRoles|roleManagement/directory)(/.*)?", ROLE_READ_PERMISSION,
                 doc="https://learn.microsoft.com/graph/api/directoryrole-list-members"),
    EndpointNeed(_READ, r"/organization(/.*)?", "Organization.Read.All",
                 doc="https://learn.microsoft.com/graph/api/organization-list"),
    EndpointNeed(_READ, r"/subscribedSkus(/.*)?", "Organization.Read.All",
                 doc="https://learn.microsoft.com/graph/api/subscribedsku-list"),
    EndpointNeed(frozenset({"POST"}), rf"/users/{_ID}/assignLicense", "LicenseAssignment.ReadWrite.All",
                 doc="https://learn.microsoft.com/graph/api/user-assignlicense"),
)

_VERSION = re.compile(r"^/(v1\.0|beta)(?=/)")


def needed_for(method: str, path: str) -> EndpointNeed | None:
    """The permission (and role) a Graph call of `method` to `path` needs, when the table knows it."""
    bare = _VERSION.sub("", path.split("?", 1)[0]).rstrip("/") or "/"
    return next((need for need in ENDPOINT_NEEDS if need.matches(method.upper(), bare)), None)


#: Roles that include another role's power for the checks here (a holder needs nothing more).
_ROLE_INCLUDES: dict[str, frozenset[str]] = {
    "Privileged Authentication Administrator": frozenset({"User Administrator"}),
    "Global Administrator": frozenset({"User Administrator", "Privileged Authentication Administrator",
                                       "Domain Name Administrator"}),
}


@dataclass(frozen=True)
class FeatureReport:
    """For one enabled feature: what is granted and what is missing, with the fix."""

    feature: str
    granted: tuple[str, ...]
    missing: tuple[str, ...]
    roles_held: tuple[str, ...]
    roles_missing: tuple[str, ...]
    remediation: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing is missing."""
        return not (self.missing or self.roles_missing)


def enabled_features(sync: bool, rotation: bool, passkeys: bool, federation: bool, export: bool) -> list[str]:
    """Feature table keys for a connection's enabled flags (enrollment groups come with passkeys)."""
    flags = {"sync": sync, "rotation": rotation, "passkeys": passkeys, "enrollmentGroups": passkeys,
             "federation": federation, "export": export}
    return [name for name, on in flags.items() if on]


def roles_that_satisfy(roles: Iterable[str]) -> set[str]:
    """The roles that give any of `roles`: the roles themselves and the roles that include them."""
    wanted = set(roles)
    return wanted | {holder for holder, includes in _ROLE_INCLUDES.items() if includes & wanted}


def report(features: Iterable[str], granted_permissions: Iterable[str],
           held_roles: Iterable[str]) -> list[FeatureReport]:
    """Compare what each feature needs with what the app was granted and holds."""
    granted = set(granted_permissions)
    held = set(held_roles)
    effective = set(held)
    for role in held:
        effective |= _ROLE_INCLUDES.get(role, frozenset())
    reports = []
    for name in features:
        needs = FEATURE_NEEDS[name]
        missing = tuple(p for p in needs.permissions if p not in granted)
        roles_missing = tuple(r for r in needs.roles if r not in effective)
        fixes = []
        if missing:
            fixes.append("Entra admin center > Enterprise applications > (the bridge's app or managed identity) > "
                         f"Permissions: grant the Microsoft Graph application permissions {', '.join(missing)} "
                         "with admin consent (for a managed identity: redeploy infra with the feature enabled)")
        if roles_missing:
            fixes.append("Entra admin center > Roles and administrators: assign "
                         f"{', '.join(roles_missing)} to the bridge's service principal")
        reports.append(FeatureReport(name, tuple(p for p in needs.permissions if p in granted), missing,
                                     tuple(r for r in needs.roles if r in effective), roles_missing, fixes))
    return reports
