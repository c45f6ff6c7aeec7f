"""The simulator's FIDO2 provisioning routes against the examples of Microsoft's documentation.

Each test names the page (learn.microsoft.com/graph/api/<page>; source in microsoft-graph-docs-contrib)
whose request and response example it replays. A simulator of its own (conftest.py), so policy changes
here touch no other test.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from typing import Any

import httpx
import pytest

from local.authenticator import TEST_ROOT_NAME, AttestationRoot, SoftwareAuthenticator
from local.entra.process import RunningEntra
from local.mds import root_setting
from local.tls import TlsFiles
from shared.adapters.graph.fido2 import GraphPasskeyDirectory, unwrapped
from shared.domain.mds import MetadataRejected, TrustAnchors, root_certificate
from tests.conformance.entra_fido2.graph_calls import (
    DOCUMENTED_REGISTRATION,
    POLICY,
    POLICY_TYPE,
    b64url,
    documented_body,
    graph_error,
    options_for,
)
from tests.fakes import PathGraph


def test_creation_options_v1_has_the_documented_shape(graph: httpx.Client, users: list[str]) -> None:
    # fido2authenticationmethod-creationoptions: response example, fixed 5-minute challenge
    before = dt.datetime.now(dt.UTC)
    body = options_for(graph, users[0])
    assert body["@odata.type"] == "#microsoft.graph.webauthnCredentialCreationOptions"
    expires = dt.datetime.fromisoformat(body["challengeTimeoutDateTime"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=4) < expires - before <= dt.timedelta(minutes=5, seconds=1)
    key = body["publicKey"]
    assert key["@odata.type"] == "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions"
    assert key["rp"] == {"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialRpEntity",
                         "id": "login.microsoftonline.com", "name": "Microsoft"}
    assert {"@odata.type", "id", "displayName", "name"} <= set(key["user"])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key["challenge"])
    assert len(b64url(key["challenge"])) >= 16
    assert (key["pubKeyCredParams"][0]["type"], key["pubKeyCredParams"][0]["alg"]) == ("public-key", -7)
    assert key["authenticatorSelection"]["userVerification"] == "required"
    assert key["authenticatorSelection"]["requireResidentKey"] is True
    assert key["attestation"] == "direct"
    assert isinstance(key["timeout"], int)
    assert isinstance(key["excludeCredentials"], list)
    assert key["extensions"]["@odata.type"] == "#microsoft.graph.webauthnAuthenticationExtensionsClientInputs"


def test_the_challenge_timeout_is_a_beta_parameter(graph: httpx.Client, users: list[str]) -> None:
    # v1.0: "custom challenge timeout values are not supported"; a query string is refused with 405
    # (webauthn-interop issue 13). beta: challengeTimeoutInMinutes from 5 to 43,200.
    path = f"/users/{users[0]}/authentication/fido2Methods/creationOptions"
    graph_error(graph.get(f"/v1.0{path}", params={"challengeTimeoutInMinutes": "10"}), 405,
                "Request_UnsupportedQuery")
    graph_error(graph.get(f"/v1.0{path}(challengeTimeoutInMinutes=10)"), 400, "BadRequest")
    now = dt.datetime.now(dt.UTC)
    for minutes in (5, 10, 43200):
        body = options_for(graph, users[0], "beta", f"(challengeTimeoutInMinutes={minutes})")
        expires = dt.datetime.fromisoformat(body["challengeTimeoutDateTime"].replace("Z", "+00:00"))
        assert abs((expires - now) - dt.timedelta(minutes=minutes)) < dt.timedelta(seconds=5)
        assert body["publicKey"]["timeout"] == minutes * 60000
    for minutes in (4, 43201):
        graph_error(graph.get(f"/beta{path}(challengeTimeoutInMinutes={minutes})"), 400, "BadRequest")


def test_the_bridge_reads_creation_options_whichever_way_graph_wraps_them(graph: httpx.Client,
                                                                          users: list[str]) -> None:
    # v1.0 answers the options as the body, beta inside `value`: the bridge's adapter gives the same.
    path = f"/users/{users[0]}/authentication/fido2Methods/creationOptions"
    answers = {api: dict(graph.get(f"/{api}{path}{suffix}").json())
               for api, suffix in (("v1.0", ""), ("beta", "(challengeTimeoutInMinutes=10)"))}
    assert "value" in answers["beta"]
    assert "publicKey" in answers["v1.0"]

    class Recorded:
        async def get(self, path: str, *, api: str = "v1.0", **_: Any) -> dict[str, Any]:
            return answers[api]

    directory = GraphPasskeyDirectory(PathGraph(Recorded()))  # type: ignore[arg-type]
    v1 = asyncio.run(directory.creation_options(users[0]))
    beta = asyncio.run(directory.creation_options(users[0], 10))
    for options in (v1, beta):
        assert options.public_key["challenge"]
        assert options.public_key["rp"]["id"] == "login.microsoftonline.com"
        assert options.challenge_expires
    assert beta.public_key["timeout"] == 10 * 60000
    assert unwrapped({"publicKey": {"x": 1}, "value": {"y": 2}}) == {"publicKey": {"x": 1}, "value": {"y": 2}}


def test_the_documented_request_is_refused_for_a_challenge_never_issued(graph: httpx.Client,
                                                                        users: list[str]) -> None:
    # authentication-post-fido2methods: the published example is shortened (its attestation object ends
    # early) and its challenge was issued by another tenant; either way a 400, never a 500.
    url = f"/v1.0/users/{users[0]}/authentication/fido2Methods"
    graph_error(graph.post(url, json=DOCUMENTED_REGISTRATION), 400, "invalidRequest")
    # Its client data with a complete attestation object: refused for the challenge alone.
    foreign = SoftwareAuthenticator().register({"rp": {"id": "login.microsoftonline.com"},
                                                "challenge": "QTU1MzNDNzAtNkM3Ni00NTRDLUJDQ0YtRTREMDZCNTBFRTRE"})
    assert "challenge" in graph_error(graph.post(url, json=documented_body(foreign)), 400, "invalidRequest")


def test_register_list_get_delete(graph: httpx.Client, users: list[str]) -> None:
    # authentication-post-fido2methods (201 and its response example), fido2authenticationmethod-list,
    # -get and -delete (204; itemNotFound afterwards)
    user = users[0]
    options = options_for(graph, user)
    credential = SoftwareAuthenticator(fmt="none").register(options)
    created = graph.post(f"/v1.0/users/{user}/authentication/fido2Methods", json=documented_body(credential))
    assert created.status_code == 201, created.text
    method = created.json()
    assert method["@odata.type"] == "#microsoft.graph.fido2AuthenticationMethod"
    assert {"id", "displayName", "createdDateTime", "aaGuid", "model", "attestationCertificates",
            "attestationLevel", "passkeyType"} <= set(method)
    assert (method["displayName"], method["passkeyType"], method["attestationLevel"]) == (
        "My security key", "deviceBound", "notAttested")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", method["createdDateTime"])
    listed = graph.get(f"/v1.0/users/{user}/authentication/fido2Methods").json()
    assert method["id"] in [m["id"] for m in listed["value"]]
    assert graph.get(f"/v1.0/users/{user}/authentication/fido2Methods/{method['id']}").json() == method
    # The next options exclude the new credential, in the padded standard base64 third parties report.
    excluded = options_for(graph, user)["publicKey"]["excludeCredentials"]
    assert [base64.b64decode(c["id"]) for c in excluded] == [b64url(credential["id"])]
    assert graph.delete(f"/v1.0/users/{user}/authentication/fido2Methods/{method['id']}").status_code == 204
    graph_error(graph.delete(f"/v1.0/users/{user}/authentication/fido2Methods/{method['id']}"), 404, "itemNotFound")
    graph_error(graph.get(f"/v1.0/users/{user}/authentication/fido2Methods/{method['id']}"), 404, "itemNotFound")


def test_entra_checks_the_challenge_origin_and_reuse(graph: httpx.Client, users: list[str]) -> None:
    options = options_for(graph, users[0])
    other = graph.post(f"/v1.0/users/{users[1]}/authentication/fido2Methods",
                       json=documented_body(SoftwareAuthenticator().register(options)))
    assert "not issued for this user" in graph_error(other, 400, "invalidRequest")
    phished = SoftwareAuthenticator(origin="https://login.example.net").register(options_for(graph, users[0]))
    refused = graph.post(f"/v1.0/users/{users[0]}/authentication/fido2Methods", json=documented_body(phished))
    assert "origin" in graph_error(refused, 400, "invalidRequest")
    good = documented_body(SoftwareAuthenticator().register(options_for(graph, users[0])))
    first = graph.post(f"/v1.0/users/{users[0]}/authentication/fido2Methods", json=good)
    assert first.status_code == 201
    again = graph.post(f"/v1.0/users/{users[0]}/authentication/fido2Methods", json=good)
    graph_error(again, 400, "invalidRequest")
    graph.delete(f"/v1.0/users/{users[0]}/authentication/fido2Methods/{first.json()['id']}")


def test_policy_get_matches_the_documented_example(graph: httpx.Client) -> None:
    # fido2authenticationmethodconfiguration-get
    policy = graph.get(f"/v1.0{POLICY}").json()
    assert policy["@odata.type"] == POLICY_TYPE
    assert policy["id"] == "Fido2"
    assert policy["@odata.context"].endswith("/v1.0/$metadata#authenticationMethodConfigurations/$entity")
    assert {"state", "isSelfServiceRegistrationAllowed", "isAttestationEnforced", "keyRestrictions",
            "includeTargets", "excludeTargets"} <= set(policy)
    assert set(policy["keyRestrictions"]) == {"isEnforced", "enforcementType", "aaGuids"}
    assert {"targetType", "id", "isRegistrationRequired"} <= set(policy["includeTargets"][0])


def test_policy_update_example_enforces_attestation(graph: httpx.Client, users: list[str],
                                                    policy: dict[str, Any]) -> None:
    # fido2authenticationmethodconfiguration-update: the example sends "true" as a string; 204, no body.
    answer = graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "state": "enabled",
                                                 "isAttestationEnforced": "true"})
    assert (answer.status_code, answer.content) == (204, b"")
    assert graph.get(f"/v1.0{POLICY}").json()["isAttestationEnforced"] is True
    url = f"/v1.0/users/{users[0]}/authentication/fido2Methods"
    self_attested = SoftwareAuthenticator(fmt="packed-self").register(options_for(graph, users[0]))
    assert "attestation" in graph_error(graph.post(url, json=documented_body(self_attested)), 400, "invalidRequest")
    attested = graph.post(url, json=documented_body(SoftwareAuthenticator(fmt="packed-x5c").register(
        options_for(graph, users[0]))))
    assert attested.status_code == 201
    assert attested.json()["attestationLevel"] == "attested"
    graph.delete(f"{url}/{attested.json()['id']}")


def test_policy_update_needs_the_odata_type_and_known_properties(graph: httpx.Client,
                                                                 policy: dict[str, Any]) -> None:
    graph_error(graph.patch(f"/v1.0{POLICY}", json={"state": "enabled"}), 400, "BadRequest")
    graph_error(graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "colour": "blue"}), 400, "BadRequest")
    graph_error(graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "state": "on"}), 400, "BadRequest")


def test_key_restrictions_and_self_service_are_enforced(graph: httpx.Client, users: list[str],
                                                        policy: dict[str, Any]) -> None:
    url = f"/v1.0/users/{users[0]}/authentication/fido2Methods"
    allowed = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
    assert graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "keyRestrictions": {
        "isEnforced": True, "enforcementType": "allow", "aaGuids": [allowed]}}).status_code == 204
    blocked = SoftwareAuthenticator().register(options_for(graph, users[0]))
    assert "key restrictions" in graph_error(graph.post(url, json=documented_body(blocked)), 400, "invalidRequest")
    ok = graph.post(url, json=documented_body(SoftwareAuthenticator(aaguid=allowed).register(
        options_for(graph, users[0]))))
    assert ok.status_code == 201
    assert ok.json()["aaGuid"] == allowed
    graph.delete(f"{url}/{ok.json()['id']}")
    assert graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE,
                                               "isSelfServiceRegistrationAllowed": False}).status_code == 204
    assert "self-service" in graph_error(graph.get(f"{url}/creationOptions"), 403, "accessDenied")
    assert graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "isSelfServiceRegistrationAllowed": True,
                                               "state": "disabled"}).status_code == 204
    graph_error(graph.get(f"{url}/creationOptions"), 403, "accessDenied")


def test_users_outside_the_policy_targets_are_refused(graph: httpx.Client, users: list[str],
                                                      policy: dict[str, Any]) -> None:
    group = "00000000-0000-0000-0000-00000000dead"
    assert graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "includeTargets": [
        {"targetType": "group", "id": group, "isRegistrationRequired": False}]}).status_code == 204
    graph_error(graph.get(f"/v1.0/users/{users[0]}/authentication/fido2Methods/creationOptions"), 403,
                "accessDenied")


def test_the_metadata_blob_is_served_and_verifies_under_the_local_ca(sim: RunningEntra, tls_files: TlsFiles) -> None:
    # The FIDO Alliance's MDS3 answers GET with the JWT; anyone may read it (no token).
    answer = httpx.get(f"{sim.url}/mds3/", verify=tls_files.client_context())
    assert answer.status_code == 200
    anchors = TrustAnchors.from_blob(answer.content, root_certificate(root_setting(tls_files)))
    assert anchors.entries == 1
    with pytest.raises(MetadataRejected):
        TrustAnchors.from_blob(answer.content, AttestationRoot.generate().der)


def test_enforced_attestation_refuses_a_chain_from_an_unknown_root(graph: httpx.Client, users: list[str],
                                                                  policy: dict[str, Any]) -> None:
    answer = graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, "isAttestationEnforced": True})
    assert answer.status_code == 204
    url = f"/v1.0/users/{users[0]}/authentication/fido2Methods"
    forged = SoftwareAuthenticator(fmt="packed-x5c", root=AttestationRoot.generate(TEST_ROOT_NAME)).register(
        options_for(graph, users[0]))
    assert "x5c" in graph_error(graph.post(url, json=documented_body(forged)), 400, "invalidRequest")
