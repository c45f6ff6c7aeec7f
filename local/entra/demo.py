"""Tenants to simulate: the bundled demo tenant and large generated ones, deterministic from a seed."""

from __future__ import annotations

import random
import uuid
from typing import Any

from local.entra.state import App, Group, Tenant, User

DEMO_TENANT_ID = "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
DEMO_NAME = "Contoso Demo"
DEMO_DOMAIN = "bridge-demo.example"
# The bridge's app registration and the function app's managed identity in the demo tenant. The client
# secret is a fixed, public demo value: it opens nothing but this simulator.
BRIDGE_CLIENT_ID = "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d"
BRIDGE_PRINCIPAL_ID = "6b8c0d2e-3f4a-4b5c-9d6e-8f9a0b1c2d3e"
BRIDGE_CLIENT_SECRET = "demo-secret-not-for-production"  # noqa: S105 - a documented demo value
IDENTITY_CLIENT_ID = "7c9d1e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
IDENTITY_PRINCIPAL_ID = "8d0e2f4a-5b6c-4d7e-9f0a-1b2c3d4e5f6a"

#: What the features need (shared.domain.permissions), granted to both demo identities.
GRAPH_PERMISSIONS = [
    "User.Read.All", "GroupMember.Read.All", "Group.ReadWrite.All", "User-PasswordProfile.ReadWrite.All",
    "UserAuthMethod-Passkey.ReadWrite.All", "Policy.Read.All", "Domain.Read.All",
    "Domain-InternalFederation.ReadWrite.All", "RoleManagement.Read.Directory", "User.EnableDisableAccount.All",
    "Organization.Read.All", "Group.Create", "GroupMember.ReadWrite.All",
]
#: What the export feature adds (shared/domain/permissions.py), granted to the managed identity only, which the
#: demo connection signs in as: the app registration keeps the narrower set the license tests rely on.
EXPORT_PERMISSIONS = ["User.ReadWrite.All", "LicenseAssignment.ReadWrite.All"]
#: The app roles of the bridge's API (functions/http.py, infra/modules/entra-app.bicep).
BRIDGE_API_ROLES = ["Bridge.Admin", "Bridge.Audit.Read", "Bridge.Devices", "Bridge.Export"]
FIRST = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena", "Milo", "Nia",
         "Omar", "Pia", "Quin", "Rosa", "Sami", "Tess", "Uma", "Vik", "Wren", "Xia", "Yusuf", "Zoe"]
LAST = ["Lee", "Ito", "Khan", "Novak", "Silva", "Meyer", "Okafor", "Rossi", "Berg", "Chen", "Dubois", "Evans",
        "Fischer", "Garcia", "Haddad", "Jensen", "Kowalski", "Larsen", "Moreau", "Nagy"]


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _users(rng: random.Random, count: int, domain: str) -> list[User]:
    users = []
    # One string per distinct name, shared by the users who have it (a million users stay compact).
    names = {(first, last): (f"{first} {last}", f"{first.lower()}.{last.lower()}") for first in FIRST for last in LAST}
    for n in range(count):
        first, last = FIRST[n % len(FIRST)], LAST[(n // len(FIRST)) % len(LAST)]
        display, stem = names[first, last]
        upn = f"{stem}{n}@{domain}"
        users.append(User(id=_uid(rng), userPrincipalName=upn, displayName=display, mail=upn,
                          givenName=first, surname=last, usageLocation="US"))
    return users


def _policy() -> dict[str, Any]:
    # Shape of fido2AuthenticationMethodConfiguration
    # (https://learn.microsoft.com/graph/api/resources/fido2authenticationmethodconfiguration).
    return {"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "id": "Fido2",
            "state": "enabled", "isSelfServiceRegistrationAllowed": True, "isAttestationEnforced": False,
            "keyRestrictions": {"isEnforced": False, "enforcementType": "block", "aaGuids": []},
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}]}


def _skus() -> list[dict[str, Any]]:
    # Sku ids and part numbers from
    # https://learn.microsoft.com/entra/identity/users/licensing-service-plan-reference
    return [{"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "skuPartNumber": "ENTERPRISEPACK", "enabled": 250,
             "servicePlans": [{"servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0",
                               "servicePlanName": "EXCHANGE_S_ENTERPRISE", "provisioningStatus": "Success",
                               "appliesTo": "User"}]},
            {"skuId": "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "skuPartNumber": "EMS", "enabled": 25,
             "servicePlans": [{"servicePlanId": "41781fb2-bc02-4b7c-bd55-b576c07bb09d",
                               "servicePlanName": "AAD_PREMIUM", "provisioningStatus": "Success",
                               "appliesTo": "User"}]}]


def bridge_apps() -> dict[str, App]:
    """The bridge's app registration and managed identity, granted what the features need."""
    return {
        BRIDGE_CLIENT_ID: App(clientId=BRIDGE_CLIENT_ID, servicePrincipalId=BRIDGE_PRINCIPAL_ID,
                              displayName="Entra Bridge", secrets=[BRIDGE_CLIENT_SECRET],
                              graphRoles=list(GRAPH_PERMISSIONS),
                              # Assigned the bridge API's own app roles, so the demo app can call the API
                              # with App Service Authentication on (WEBSITE_AUTH_ENABLED=true).
                              apiRoles={BRIDGE_CLIENT_ID: list(BRIDGE_API_ROLES)}),
        IDENTITY_CLIENT_ID: App(clientId=IDENTITY_CLIENT_ID, servicePrincipalId=IDENTITY_PRINCIPAL_ID,
                                displayName="func-entra-bridge (managed identity)",
                                graphRoles=[*GRAPH_PERMISSIONS, *EXPORT_PERMISSIONS],
                                managedIdentity=True),
    }


def demo_tenant(users: int = 300) -> Tenant:
    """The bundled demo tenant: nested sync groups, a rotation group, admins, synced users, the bridge's apps."""
    rng = random.Random(20261123)  # noqa: S311 - deterministic test data, not security
    people = _users(rng, users, DEMO_DOMAIN)
    people[5].onPremisesSyncEnabled = True
    people[6].onPremisesSyncEnabled = True

    def gid() -> str:
        return _uid(rng)

    team_a1 = Group(id=gid(), displayName="Sync Team A1", mailNickname="syncteama1",
                    members=[u.id for u in people[100:160]])
    team_a = Group(id=gid(), displayName="Sync Team A", mailNickname="syncteama",
                   members=[*(u.id for u in people[40:100]), team_a1.id])
    sync = Group(id=gid(), displayName="Bridge Sync", mailNickname="bridgesync",
                 members=[*(u.id for u in people[0:40]), team_a.id])
    rotation = Group(id=gid(), displayName="Bridge Rotation", mailNickname="bridgerotation",
                     members=[u.id for u in people[0:30]])
    others = Group(id=gid(), displayName="Marketing", mailNickname="marketing",
                   members=[u.id for u in people[200:260]])
    tenant = Tenant(
        tenantId=DEMO_TENANT_ID, displayName=DEMO_NAME,
        domains=[{"id": "contosodemo.onmicrosoft.com", "isInitial": True, "isDefault": False, "isVerified": True,
                  "authenticationType": "Managed"},
                 {"id": DEMO_DOMAIN, "isInitial": False, "isDefault": True, "isVerified": True,
                  "authenticationType": "Managed"}],
        users={u.id: u for u in people}, groups={g.id: g for g in (sync, team_a, team_a1, rotation, others)},
        # people[1] is in the rotation group and a Global Administrator: the bridge must refuse it.
        roles={"Global Administrator": [people[1].id], "Helpdesk Administrator": [people[2].id],
               "User Administrator": [BRIDGE_PRINCIPAL_ID, IDENTITY_PRINCIPAL_ID]},
        apps=bridge_apps(), fido2Policy=_policy(), skus=_skus())
    return tenant


def generated_tenant(users: int, groups: int, depth: int, seed: int) -> Tenant:
    """A large deterministic tenant: `groups` sync trees of `depth` levels sharing the users."""
    rng = random.Random(seed)  # noqa: S311 - deterministic test data, not security
    people = _users(rng, users, "generated.example")
    tenant_groups: list[Group] = []
    per_group = max(1, users // max(1, groups))
    roots = []
    for g in range(groups):
        chunk = [u.id for u in people[g * per_group:(g + 1) * per_group]]
        levels = max(1, depth)
        size = max(1, len(chunk) // levels)
        child: Group | None = None
        for level in reversed(range(levels)):
            part = chunk[level * size:(level + 1) * size if level < levels - 1 else len(chunk)]
            group = Group(id=_uid(rng), displayName=f"Sync {g}-{level}", mailNickname=f"sync{g}x{level}",
                          members=[*part, *([child.id] if child else [])])
            tenant_groups.append(group)
            child = group
        if child is not None:
            roots.append(child.id)
    root = Group(id=_uid(rng), displayName="Bridge Sync", mailNickname="bridgesync", members=roots)
    rotation = Group(id=_uid(rng), displayName="Bridge Rotation", mailNickname="bridgerotation",
                     members=[u.id for u in people[: min(len(people), 2000)]])
    return Tenant(tenantId=_uid(rng), displayName="Generated Tenant",
                  domains=[{"id": "generated.example", "isInitial": False, "isDefault": True, "isVerified": True,
                            "authenticationType": "Managed"}],
                  users={u.id: u for u in people}, groups={g.id: g for g in (*tenant_groups, root, rotation)},
                  roles={"User Administrator": [BRIDGE_PRINCIPAL_ID, IDENTITY_PRINCIPAL_ID]}, apps=bridge_apps(),
                  fido2Policy=_policy(), skus=_skus())


SECOND_TENANT_ID = "2b4d6f8a-1c3e-4a5b-9d7f-0e2c4a6b8d0f"
SECOND_NAME = "Fabrikam Demo"
SECOND_DOMAIN = "fabrikam-demo.example"


def second_demo_tenant(users: int = 120) -> Tenant:
    """A second demo tenant (Fabrikam): the demo tenant's shape with its own ids, domain and users.

    The bridge's app registration is multi-tenant, so it signs in here with the same client id and
    secret (its service principal in this tenant), as an app consented in two tenants does.
    """
    tenant = demo_tenant(users)
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SECOND_DOMAIN}/{old}"))
           for old in (*tenant.users, *tenant.groups)}
    people = []
    for user in tenant.users.values():
        local_part = user.userPrincipalName.split("@")[0]
        upn = f"{local_part}@{SECOND_DOMAIN}"
        user.id, user.userPrincipalName, user.mail = ids[user.id], upn, upn
        people.append(user)
    groups = []
    for group in tenant.groups.values():
        group.id, group.members = ids[group.id], [ids.get(m, m) for m in group.members]
        groups.append(group)
    apps = {k: a for k, a in bridge_apps().items() if not a.managedIdentity}
    return Tenant(
        tenantId=SECOND_TENANT_ID, displayName=SECOND_NAME,
        domains=[{"id": "fabrikamdemo.onmicrosoft.com", "isInitial": True, "isDefault": False, "isVerified": True,
                  "authenticationType": "Managed"},
                 {"id": SECOND_DOMAIN, "isInitial": False, "isDefault": True, "isVerified": True,
                  "authenticationType": "Managed"}],
        users={u.id: u for u in people}, groups={g.id: g for g in groups},
        roles={name: [ids.get(m, m) for m in members if m != IDENTITY_PRINCIPAL_ID]
               for name, members in tenant.roles.items()},
        apps=apps, fido2Policy=_policy(), skus=_skus())
