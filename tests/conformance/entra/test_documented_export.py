"""The simulator's export surface against the examples of Microsoft's documentation: user create, group create
(security with owners and members, Microsoft 365 with its default properties), owners, license errors and
verified domains. Each test names its page on learn.microsoft.com/graph/api."""

from __future__ import annotations

from typing import Any

from tests.fixtures.entra import BRIDGE_CLIENT_ID, InProcessEntra

WRITE = ["User.ReadWrite.All", "Group.ReadWrite.All", "LicenseAssignment.ReadWrite.All", "Organization.Read.All"]


async def _call(entra: InProcessEntra, method: str, path: str, body: Any = None,
                roles: list[str] | None = None) -> Any:
    token = entra.token(BRIDGE_CLIENT_ID, roles=WRITE if roles is None else roles)
    return await entra.client.request(method, f"/v1.0{path}", json=body, headers={"authorization": f"Bearer {token}"})


def _domain(entra: InProcessEntra) -> str:
    return next(d["id"] for d in entra.sim.tenant.domains if d.get("isDefault"))


async def test_create_user_example(entra_inprocess: InProcessEntra) -> None:
    # user-post-users, "Example 1: Create a user".
    upn = f"AdeleV@{_domain(entra_inprocess)}"
    body = {"accountEnabled": True, "displayName": "Adele Vance", "mailNickname": "AdeleV",
            "userPrincipalName": upn, "passwordProfile": {"forceChangePasswordNextSignIn": True,
                                                          "password": "xWwvJ]6NMw+bWH-d"}}
    created = await _call(entra_inprocess, "POST", "/users", body)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["businessPhones"] == []
    assert user["displayName"] == "Adele Vance"
    assert user["userPrincipalName"] == upn
    assert user["mail"] is None
    assert "passwordProfile" not in user
    assert created.headers["location"].endswith(f"/users/{user['id']}")
    # The same UPN again, a missing required property, an unverified domain: 400 with Graph's messages.
    again = await _call(entra_inprocess, "POST", "/users", body)
    assert again.status_code == 400
    assert "userPrincipalName already exists" in again.json()["error"]["message"]
    missing = await _call(entra_inprocess, "POST", "/users", {k: v for k, v in body.items() if k != "mailNickname"})
    assert missing.status_code == 400
    assert "mailNickname" in missing.json()["error"]["message"]
    elsewhere = await _call(entra_inprocess, "POST", "/users",
                            {**body, "userPrincipalName": "AdeleV@unverified.example"})
    assert elsewhere.status_code == 400
    assert "verified domain" in elsewhere.json()["error"]["message"]
    # Creating users needs User.ReadWrite.All (Directory.ReadWrite.All is not granted here).
    other = {**body, "userPrincipalName": f"x@{_domain(entra_inprocess)}"}
    refused = await _call(entra_inprocess, "POST", "/users", other, roles=["User.Read.All"])
    assert refused.status_code == 403


async def test_create_security_group_with_owner_and_members_example(entra_inprocess: InProcessEntra) -> None:
    # group-post-groups, "Example 3: Create a Microsoft 365 group, security group ... with owners and members"
    # as a security group; group-list-owners, group-post-owners, group-delete-owners.
    users = list(entra_inprocess.sim.tenant.users.values())[:3]
    graph = "https://graph.microsoft.com/v1.0"
    body = {"description": "Group with designated owner and members", "displayName": "Operations group",
            "groupTypes": [], "mailEnabled": False, "mailNickname": "operations2019", "securityEnabled": True,
            "owners@odata.bind": [f"{graph}/users/{users[0].id}"],
            "members@odata.bind": [f"{graph}/users/{users[1].id}", f"{graph}/users/{users[2].id}"]}
    created = await _call(entra_inprocess, "POST", "/groups", body)
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["securityEnabled"] is True
    assert group["mail"] is None
    assert group["proxyAddresses"] == []
    owners = (await _call(entra_inprocess, "GET", f"/groups/{group['id']}/owners")).json()["value"]
    assert [o["id"] for o in owners] == [users[0].id]
    members = (await _call(entra_inprocess, "GET", f"/groups/{group['id']}/members")).json()["value"]
    assert {m["id"] for m in members} == {users[1].id, users[2].id}
    add = await _call(entra_inprocess, "POST", f"/groups/{group['id']}/owners/$ref",
                      {"@odata.id": f"{graph}/directoryObjects/{users[1].id}"})
    assert add.status_code == 204
    twice = await _call(entra_inprocess, "POST", f"/groups/{group['id']}/owners/$ref",
                        {"@odata.id": f"{graph}/directoryObjects/{users[1].id}"})
    assert twice.status_code == 400
    removed = await _call(entra_inprocess, "DELETE", f"/groups/{group['id']}/owners/{users[0].id}/$ref")
    assert removed.status_code == 204
    owners = (await _call(entra_inprocess, "GET", f"/groups/{group['id']}/owners")).json()["value"]
    assert [o["id"] for o in owners] == [users[1].id]


async def test_create_microsoft_365_group_example(entra_inprocess: InProcessEntra) -> None:
    # group-post-groups, "Example 1: Create a Microsoft 365 group": mail on the default domain, Public visibility.
    body = {"description": "Self help community for library", "displayName": "Library Assist",
            "groupTypes": ["Unified"], "mailEnabled": True, "mailNickname": "library", "securityEnabled": False}
    created = await _call(entra_inprocess, "POST", "/groups", body)
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["groupTypes"] == ["Unified"]
    assert group["mail"] == f"library@{_domain(entra_inprocess)}"
    assert group["proxyAddresses"] == [f"SMTP:{group['mail']}"]
    assert group["visibility"] == "Public"
    assert group["renewedDateTime"] == group["createdDateTime"]
    listed = (await _call(entra_inprocess, "GET", "/groups", None)).json()["value"]
    assert next(g for g in listed if g["id"] == group["id"])["mail"] == group["mail"]


async def test_license_errors_and_verified_domains(entra_inprocess: InProcessEntra) -> None:
    # user-assignlicense: a user without usageLocation cannot get a license; no free seat is refused.
    # organization-get: verifiedDomains lists the verified domains only.
    tenant = entra_inprocess.sim.tenant
    tenant.domains.append({"id": "pending.example", "isVerified": False, "isDefault": False, "isInitial": False})
    org = (await _call(entra_inprocess, "GET", "/organization")).json()["value"][0]
    names = {d["name"] for d in org["verifiedDomains"]}
    assert "pending.example" not in names
    assert _domain(entra_inprocess) in names
    tenant.skus = [{"skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df", "skuPartNumber": "ENTERPRISEPREMIUM",
                    "enabled": 1}]
    first, second = list(tenant.users.values())[:2]
    first.usageLocation, second.usageLocation = None, "CH"
    add = {"addLicenses": [{"skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df", "disabledPlans": []}],
           "removeLicenses": []}
    no_location = await _call(entra_inprocess, "POST", f"/users/{first.id}/assignLicense", add)
    assert no_location.status_code == 400
    assert "usage location" in no_location.json()["error"]["message"]
    assert (await _call(entra_inprocess, "POST", f"/users/{second.id}/assignLicense", add)).status_code == 200
    first.usageLocation = "CH"
    no_seat = await _call(entra_inprocess, "POST", f"/users/{first.id}/assignLicense", add)
    assert no_seat.status_code == 400
    assert "no available licenses" in no_seat.json()["error"]["message"]
