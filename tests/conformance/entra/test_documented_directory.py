"""The simulator's users, groups, directory roles, licenses and login keys against Microsoft's documented
examples: endpoints the other conformance modules leave out.

Each test names the page its request and response come from (learn.microsoft.com; Graph pages from
microsoft-graph-docs-contrib, api-reference/v1.0/api/<page>.md). Tests that change the tenant or need
permissions the demo app is not granted use a fresh in-process tenant.
"""

from __future__ import annotations

import base64
import time

import httpx
import jwt

from local.entra.demo import DEMO_DOMAIN, IDENTITY_CLIENT_ID
from local.tls import TlsFiles
from tests.conformance.entra.test_documented_examples import is_graph_error
from tests.fixtures.entra import EntraFixture, InProcessEntra

USER_MEMBERS = {"id", "userPrincipalName", "displayName", "mail", "givenName", "surname", "accountEnabled"}


async def test_get_user_by_id_and_by_upn(entra_inprocess: InProcessEntra) -> None:
    # user-get, Example 1 ("Standard users request", by id) and Example 2 (by userPrincipalName).
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    user = next(iter(entra_inprocess.sim.tenant.users.values()))
    by_id = await client.get(f"/v1.0/users/{user.id}", headers=headers)
    assert by_id.status_code == 200
    assert set(by_id.json()) >= USER_MEMBERS
    by_upn = (await client.get(f"/v1.0/users/{user.userPrincipalName}", headers=headers)).json()
    assert by_upn["id"] == user.id
    # user-get, Example 3 ($select): only what was asked for, and the id.
    selected = (await client.get(f"/v1.0/users/{user.id}", params={"$select": "displayName,mail"},
                                 headers=headers)).json()
    assert set(selected) == {"id", "displayName", "mail"}


async def test_delete_user_204_then_404(entra_inprocess: InProcessEntra) -> None:
    # user-delete: "If successful, this method returns 204 No Content"; permission User.ReadWrite.All.
    sim, client = entra_inprocess.sim, entra_inprocess.client
    user = next(u for u in sim.tenant.users.values() if not sim.tenant.roles_of(u.id))
    group = next(g for g in sim.tenant.groups.values() if user.id in g.members)
    is_graph_error(await client.delete(f"/v1.0/users/{user.id}", headers=entra_inprocess.headers()), 403,
                   "Authorization_RequestDenied")
    writer = {"authorization": f"Bearer {entra_inprocess.token(roles=['User.ReadWrite.All'])}"}
    before = (await client.get("/v1.0/users/delta", params={"$deltatoken": "latest"},
                               headers=entra_inprocess.headers())).json()["@odata.deltaLink"]
    answer = await client.delete(f"/v1.0/users/{user.id}", headers=writer)
    assert answer.status_code == 204
    assert answer.content == b""
    assert user.id not in group.members
    assert user.id in sim.tenant.deletedUsers
    is_graph_error(await client.get(f"/v1.0/users/{user.id}", headers=writer), 404, "Request_ResourceNotFound")
    is_graph_error(await client.delete(f"/v1.0/users/{user.id}", headers=writer), 404, "Request_ResourceNotFound")
    # user-delta: a deleted (restorable) user comes back with @removed and reason "changed".
    delta = (await client.get(before, headers=entra_inprocess.headers())).json()
    assert delta["value"] == [{"id": user.id, "@removed": {"reason": "changed"}}]


async def test_count_needs_consistency_level_eventual(entra_inprocess: InProcessEntra) -> None:
    # https://learn.microsoft.com/graph/aad-advanced-queries: `$count` as a segment without the header is
    # a 400 "$count is not currently supported."; `$count=true` without it is ignored ("fails silently").
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    users = len(entra_inprocess.sim.tenant.users)
    refused = await client.get("/v1.0/users/$count", headers=headers)
    is_graph_error(refused, 400, "Request_BadRequest")
    assert refused.json()["error"]["message"] == "$count is not currently supported."
    eventual = {**headers, "ConsistencyLevel": "eventual"}
    counted = await client.get("/v1.0/users/$count", headers=eventual)
    assert counted.status_code == 200
    assert counted.headers["content-type"].startswith("text/plain")
    assert counted.text == str(users)
    assert (await client.get("/v1.0/groups/$count", headers=eventual)).text == \
        str(len(entra_inprocess.sim.tenant.groups))
    silent = (await client.get("/v1.0/users", params={"$count": "true", "$top": "5"}, headers=headers)).json()
    assert "@odata.count" not in silent
    assert len(silent["value"]) == 5
    listed = (await client.get("/v1.0/users", params={"$count": "true", "$top": "5"}, headers=eventual)).json()
    assert listed["@odata.count"] == users


async def test_users_delta_first_round(entra_inprocess: InProcessEntra) -> None:
    # user-delta, Example 1: pages linked by @odata.nextLink, the last one with @odata.deltaLink.
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    seen: list[str] = []
    body = (await client.get("/v1.0/users/delta", params={"$select": "displayName,userPrincipalName"},
                             headers=headers)).json()
    assert body["@odata.context"].endswith("$metadata#users")
    while "@odata.nextLink" in body:
        assert "$skiptoken=" in body["@odata.nextLink"]
        seen.extend(u["id"] for u in body["value"])
        body = (await client.get(body["@odata.nextLink"], headers=headers)).json()
    seen.extend(u["id"] for u in body["value"])
    assert "$deltatoken=" in body["@odata.deltaLink"]
    assert sorted(seen) == sorted(entra_inprocess.sim.tenant.users)
    assert set(body["value"][0]) == {"id", "displayName", "userPrincipalName"}


async def test_get_group(entra_inprocess: InProcessEntra) -> None:
    # group-get, Example 1: the group's members; unknown ids are 404.
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    group = next(g for g in entra_inprocess.sim.tenant.groups.values() if g.displayName == "Bridge Sync")
    body = (await client.get(f"/v1.0/groups/{group.id}", headers=headers)).json()
    assert {"id", "displayName", "mailNickname", "securityEnabled", "mailEnabled", "groupTypes"} <= set(body)
    assert (body["displayName"], body["securityEnabled"]) == ("Bridge Sync", True)
    is_graph_error(await client.get("/v1.0/groups/00000000-0000-0000-0000-000000000000", headers=headers), 404,
                   "Request_ResourceNotFound")


async def test_directory_roles_and_their_members(entra_inprocess: InProcessEntra) -> None:
    # directoryrole-list: activated roles; directoryrole-list-members, Example 1: members as full objects.
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    roles = (await client.get("/v1.0/directoryRoles", headers=headers)).json()["value"]
    admin = next(r for r in roles if r["displayName"] == "Global Administrator")
    assert admin["@odata.type"] == "#microsoft.graph.directoryRole"
    members = (await client.get(f"/v1.0/directoryRoles/{admin['id']}/members", headers=headers)).json()["value"]
    assert len(members) == 1
    assert {"displayName", "givenName", "mail", "surname", "userPrincipalName"} <= set(members[0])
    assert members[0]["userPrincipalName"].endswith("@" + DEMO_DOMAIN)
    # With $select=id (how the bridge reads them) each member still names its type.
    user_admins = next(r for r in roles if r["displayName"] == "User Administrator")
    picked = (await client.get(f"/v1.0/directoryRoles/{user_admins['id']}/members", params={"$select": "id"},
                               headers=headers)).json()["value"]
    assert {m["@odata.type"] for m in picked} == {"#microsoft.graph.servicePrincipal"}
    assert all(set(m) == {"@odata.type", "id"} for m in picked)
    is_graph_error(await client.get("/v1.0/directoryRoles/00000000-0000-0000-0000-000000000000/members",
                                    headers=headers), 404, "Request_ResourceNotFound")


async def test_organization_verified_domains(entra_inprocess: InProcessEntra) -> None:
    # organization-list, Response: verifiedDomains with name, type, isDefault, isInitial.
    org = (await entra_inprocess.client.get("/v1.0/organization", headers=entra_inprocess.headers())).json()
    [tenant] = org["value"]
    assert tenant["id"] == entra_inprocess.sim.tenant.tenantId
    assert {d["name"] for d in tenant["verifiedDomains"]} >= {DEMO_DOMAIN}
    assert all({"name", "type", "isDefault", "isInitial"} <= set(d) for d in tenant["verifiedDomains"])


async def test_assign_license_example_and_usage_location(entra_inprocess: InProcessEntra) -> None:
    # user-assignlicense, Request (addLicenses with disabledPlans, removeLicenses) and Response (200 with the
    # user and its assignedLicenses); a user without usageLocation cannot get one (usageLocation in
    # https://learn.microsoft.com/graph/api/resources/user#properties).
    sim, client = entra_inprocess.sim, entra_inprocess.client
    headers = {"authorization": f"Bearer {entra_inprocess.token(roles=['LicenseAssignment.ReadWrite.All'])}"}
    sku = sim.tenant.skus[0]
    plan = sku["servicePlans"][0]["servicePlanId"]
    user = next(iter(sim.tenant.users.values()))
    answer = await client.post(f"/v1.0/users/{user.id}/assignLicense", headers=headers, json={
        "addLicenses": [{"disabledPlans": [plan], "skuId": sku["skuId"]}], "removeLicenses": []})
    assert answer.status_code == 200
    body = answer.json()
    assert body["accountEnabled"] is True
    assert body["assignedLicenses"] == [{"skuId": sku["skuId"], "disabledPlans": [plan]}]
    removed = await client.post(f"/v1.0/users/{user.id}/assignLicense", headers=headers,
                                json={"addLicenses": [], "removeLicenses": [sku["skuId"]]})
    assert removed.json()["assignedLicenses"] == []
    user.usageLocation = None
    refused = await client.post(f"/v1.0/users/{user.id}/assignLicense", headers=headers, json={
        "addLicenses": [{"disabledPlans": [], "skuId": sku["skuId"]}], "removeLicenses": []})
    is_graph_error(refused, 400, "Request_BadRequest")
    assert refused.json()["error"]["message"] == ("License assignment cannot be done for user with invalid usage "
                                                  "location.")
    unknown = await client.post(f"/v1.0/users/{user.id}/assignLicense", headers=headers, json={
        "addLicenses": [{"skuId": "00000000-0000-0000-0000-000000000000"}], "removeLicenses": []})
    is_graph_error(unknown, 400, "Request_BadRequest")


def test_jwks_publishes_the_key_that_signs_tokens(entra: EntraFixture, tls_files: TlsFiles) -> None:
    # https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-the-signature: the token's
    # `kid` names a key of the tenant's jwks_uri; keys are RSA with n and e, use "sig".
    context = tls_files.client_context()
    config = httpx.get(f"{entra.url}/{entra.tenant_id}/v2.0/.well-known/openid-configuration", verify=context).json()
    keys = httpx.get(config["jwks_uri"], verify=context).json()["keys"]
    assert all({"kty", "use", "kid", "n", "e"} <= set(k) and k["kty"] == "RSA" and k["use"] == "sig" for k in keys)
    token = httpx.post(config["token_endpoint"], verify=context, data={
        "grant_type": "client_credentials", "client_id": entra.client_id, "client_secret": entra.client_secret,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    [key] = [k for k in keys if k["kid"] == header["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="https://graph.microsoft.com",
                        issuer=config["issuer"])
    assert (claims["tid"], claims["appid"]) == (entra.tenant_id, entra.client_id)
    assert int(base64.urlsafe_b64decode(key["e"] + "==").hex(), 16) == 65537


def test_managed_identity_rest_endpoint(entra: EntraFixture, tls_files: TlsFiles) -> None:
    # https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference:
    # GET {IDENTITY_ENDPOINT}?resource=...&api-version=2019-08-01 with X-IDENTITY-HEADER; the response holds
    # access_token, expires_on (epoch seconds), resource, token_type and client_id.
    context = tls_files.client_context()
    params = {"resource": "https://vault.azure.net", "api-version": "2019-08-01"}
    answer = httpx.get(entra.identity_endpoint, params=params, verify=context,
                       headers={"X-IDENTITY-HEADER": entra.identity_header})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert (body["resource"], body["token_type"], body["client_id"]) == ("https://vault.azure.net", "Bearer",
                                                                          IDENTITY_CLIENT_ID)
    assert int(body["expires_on"]) > time.time()
    missing = httpx.get(entra.identity_endpoint, params=params, verify=context)
    assert missing.status_code == 401
