"""The simulator's domains and federationConfiguration against Microsoft's documented examples.

Each test names the learn.microsoft.com/graph/api page its request and response come from (source in
the microsoft-graph-docs-contrib repository, api-reference/v1.0/api/<page>.md). A fresh demo tenant is
served in-process for each test, so federating its domains changes nothing for other tests.
"""

from __future__ import annotations

from typing import Any

import httpx

from local.entra.demo import DEMO_DOMAIN
from tests.conformance.entra.test_documented_examples import is_graph_error
from tests.fixtures.entra import InProcessEntra

INITIAL = "contosodemo.onmicrosoft.com"
# domain-post-federationconfiguration, Request (the certificate text is the page's, shortened there).
DOCUMENTED_REQUEST: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.internalDomainFederation",
    "displayName": "Contoso",
    "issuerUri": "http://contoso.com/adfs/services/trust",
    "metadataExchangeUri": "https://sts.contoso.com/adfs/services/trust/mex",
    "signingCertificate": "MIIE3jCCAsagAwIBAgIQQcyDaZz3MI",
    "passiveSignInUri": "https://sts.contoso.com/adfs/ls",
    "preferredAuthenticationProtocol": "wsFed",
    "activeSignInUri": "https://sts.contoso.com/adfs/services/trust/2005/usernamemixed",
    "signOutUri": "https://sts.contoso.com/adfs/ls",
    "promptLoginBehavior": "nativeSupport",
    "isSignedAuthenticationRequestRequired": True,
    "nextSigningCertificate": "MIIE3jCCAsagAwIBAgIQQcyDaZz3MI",
    "federatedIdpMfaBehavior": "rejectMfaByFederatedIdp",
}
# domain-get, Response: every member the example shows.
DOMAIN_MEMBERS = {"authenticationType", "availabilityStatus", "id", "isAdminManaged", "isDefault", "isInitial",
                  "isRoot", "isVerified", "supportedServices", "passwordValidityPeriodInDays",
                  "passwordNotificationWindowInDays", "state"}


def config_url(domain: str, config_id: str | None = None) -> str:
    return f"/v1.0/domains/{domain}/federationConfiguration" + (f"/{config_id}" if config_id else "")


async def federate(entra: InProcessEntra, domain: str = DEMO_DOMAIN) -> dict[str, Any]:
    answer = await entra.client.post(config_url(domain), headers=entra.headers(), json=DOCUMENTED_REQUEST)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_list_and_get_domains_have_the_documented_members(entra_inprocess: InProcessEntra) -> None:
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    # domain-list, Response: a collection of domain objects.
    listed = (await client.get("/v1.0/domains", headers=headers)).json()
    assert {d["id"] for d in listed["value"]} == {INITIAL, DEMO_DOMAIN}
    assert all(set(d) == DOMAIN_MEMBERS for d in listed["value"])
    # domain-get, Response: the initial domain of the example is Managed, initial, root and verified.
    answer = await client.get(f"/v1.0/domains/{INITIAL}", headers=headers)
    assert answer.status_code == 200
    domain = answer.json()
    assert domain["@odata.context"].endswith("$metadata#domains/$entity")
    assert set(domain) - {"@odata.context"} == DOMAIN_MEMBERS
    assert (domain["authenticationType"], domain["isInitial"], domain["isRoot"], domain["isVerified"]) == \
        ("Managed", True, True, True)
    assert domain["supportedServices"] == ["Email", "OfficeCommunicationsOnline"]
    is_graph_error(await client.get("/v1.0/domains/nowhere.example", headers=headers), 404,
                   "Request_ResourceNotFound")


async def test_a_managed_domain_has_no_federation_configuration(entra_inprocess: InProcessEntra) -> None:
    # domain-list-federationconfiguration, Response: "If there isn't an internalDomainFederation object
    # [...] this API returns a 404 Not Found response code."
    answer = await entra_inprocess.client.get(config_url(DEMO_DOMAIN), headers=entra_inprocess.headers())
    is_graph_error(answer, 404, "Request_ResourceNotFound")


async def test_create_list_get_update_delete_follow_the_examples(entra_inprocess: InProcessEntra) -> None:
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    # domain-post-federationconfiguration, Response: 201 with the object and signingCertificateUpdateStatus.
    created = await federate(entra_inprocess)
    assert created["@odata.type"] == "#microsoft.graph.internalDomainFederation"
    for name, value in DOCUMENTED_REQUEST.items():
        assert created[name] == value, name
    assert set(created["signingCertificateUpdateStatus"]) == {"certificateUpdateResult", "lastRunDateTime"}
    assert created["signingCertificateUpdateStatus"]["certificateUpdateResult"] == "Success"
    config_id = created["id"]
    # The domain now signs in through the IdP.
    domain = (await client.get(f"/v1.0/domains/{DEMO_DOMAIN}", headers=headers)).json()
    assert domain["authenticationType"] == "Federated"
    # domain-list-federationconfiguration, Response: a collection of exactly one object.
    listed = (await client.get(config_url(DEMO_DOMAIN), headers=headers)).json()
    assert [c["id"] for c in listed["value"]] == [config_id]
    assert listed["value"][0]["@odata.type"] == "#microsoft.graph.internalDomainFederation"
    # internaldomainfederation-get: 200 with the object.
    got = await client.get(config_url(DEMO_DOMAIN, config_id), headers=headers)
    assert got.status_code == 200
    assert got.json()["issuerUri"] == DOCUMENTED_REQUEST["issuerUri"]
    # internaldomainfederation-update, Request and Response: 200 with the updated object.
    updated = await client.patch(config_url(DEMO_DOMAIN, config_id), headers=headers, json={
        "displayName": "Contoso name change", "federatedIdpMfaBehavior": "acceptIfMfaDoneByFederatedIdp"})
    assert updated.status_code == 200
    body = updated.json()
    assert (body["displayName"], body["federatedIdpMfaBehavior"]) == ("Contoso name change",
                                                                      "acceptIfMfaDoneByFederatedIdp")
    assert body["issuerUri"] == DOCUMENTED_REQUEST["issuerUri"]
    # internaldomainfederation-delete: 204 No Content; the domain is Managed again.
    deleted = await client.delete(config_url(DEMO_DOMAIN, config_id), headers=headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    domain = (await client.get(f"/v1.0/domains/{DEMO_DOMAIN}", headers=headers)).json()
    assert domain["authenticationType"] == "Managed"
    is_graph_error(await client.get(config_url(DEMO_DOMAIN, config_id), headers=headers), 404,
                   "Request_ResourceNotFound")
    is_graph_error(await client.delete(config_url(DEMO_DOMAIN, config_id), headers=headers), 404,
                   "Request_ResourceNotFound")


async def test_preconditions_and_bad_bodies_are_refused(entra_inprocess: InProcessEntra) -> None:
    sim, client, headers = entra_inprocess.sim, entra_inprocess.client, entra_inprocess.headers()
    sim.tenant.domains.append({"id": "unverified.example", "isVerified": False, "authenticationType": "Managed"})

    async def post(domain: str, body: dict[str, Any]) -> httpx.Response:
        return await client.post(config_url(domain), headers=headers, json=body)

    # The initial *.onmicrosoft.com domain and unverified domains cannot be federated.
    initial = await post(INITIAL, DOCUMENTED_REQUEST)
    is_graph_error(initial, 400, "Request_BadRequest")
    assert "initial domain" in initial.json()["error"]["message"]
    unverified = await post("unverified.example", DOCUMENTED_REQUEST)
    is_graph_error(unverified, 400, "Request_BadRequest")
    assert "not verified" in unverified.json()["error"]["message"]
    is_graph_error(await post("nowhere.example", DOCUMENTED_REQUEST), 404, "Request_ResourceNotFound")
    # Members outside internalDomainFederation, values outside its enumerations, missing endpoints.
    is_graph_error(await post(DEMO_DOMAIN, {**DOCUMENTED_REQUEST, "supportsMfa": True}), 400, "Request_BadRequest")
    is_graph_error(await post(DEMO_DOMAIN, {**DOCUMENTED_REQUEST, "preferredAuthenticationProtocol": "oidc"}), 400,
                   "Request_BadRequest")
    is_graph_error(await post(DEMO_DOMAIN, {**DOCUMENTED_REQUEST, "federatedIdpMfaBehavior": "sometimes"}), 400,
                   "Request_BadRequest")
    without_issuer = {k: v for k, v in DOCUMENTED_REQUEST.items() if k != "issuerUri"}
    is_graph_error(await post(DEMO_DOMAIN, without_issuer), 400, "Request_BadRequest")
    assert not any(d.get("federationConfiguration") for d in sim.tenant.domains)
    # A domain holds one configuration: a second POST is refused, PATCH is the way to change it.
    created = await federate(entra_inprocess)
    is_graph_error(await post(DEMO_DOMAIN, DOCUMENTED_REQUEST), 409, "Request_MultipleObjectsWithSameKeyValue")
    bad_patch = await client.patch(config_url(DEMO_DOMAIN, created["id"]), headers=headers,
                                   json={"promptLoginBehavior": "always"})
    is_graph_error(bad_patch, 400, "Request_BadRequest")


async def test_permissions_as_documented(entra_inprocess: InProcessEntra) -> None:
    # domain-get and domain-list-federationconfiguration: Domain.Read.All; domain-post-federationconfiguration,
    # internaldomainfederation-update and -delete: Domain-InternalFederation.ReadWrite.All.
    client = entra_inprocess.client
    reader = {"authorization": f"Bearer {entra_inprocess.token(roles=['Domain.Read.All'])}"}
    nobody = {"authorization": f"Bearer {entra_inprocess.token(roles=['User.Read.All'])}"}
    assert (await client.get(f"/v1.0/domains/{DEMO_DOMAIN}", headers=reader)).status_code == 200
    is_graph_error(await client.get(f"/v1.0/domains/{DEMO_DOMAIN}", headers=nobody), 403,
                   "Authorization_RequestDenied")
    is_graph_error(await client.post(config_url(DEMO_DOMAIN), headers=reader, json=DOCUMENTED_REQUEST), 403,
                   "Authorization_RequestDenied")
    created = await federate(entra_inprocess)
    assert (await client.get(config_url(DEMO_DOMAIN), headers=reader)).status_code == 200
    is_graph_error(await client.delete(config_url(DEMO_DOMAIN, created["id"]), headers=reader), 403,
                   "Authorization_RequestDenied")
