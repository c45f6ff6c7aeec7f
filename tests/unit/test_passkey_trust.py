"""Passkey checks as current as Graph's: the tenant policy's age, Graph's refusal, and MDS attestation trust."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.utils import websafe_decode
from fido2.webauthn import CollectedClientData
from jwt.algorithms import ECAlgorithm

from local.authenticator import DEFAULT_AAGUID, TEST_ROOT_NAME, AttestationRoot, SoftwareAuthenticator
from local.mds import local_blob, root_setting
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.attestation import AttestationRejected, KeyRestrictions, verify
from shared.domain.directory import UserRow
from shared.domain.mds import TrustAnchors, root_certificate
from shared.errors import InvalidInput, Transient
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyRegistration, PasskeyService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant

JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
CONN = Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                  "features": {"passkeys": {"enabled": True}}})
BAN = {"isEnforced": True, "enforcementType": "block", "aaGuids": [DEFAULT_AAGUID]}


def entra_checks(user_id: str, credential: dict[str, Any], policy: dict[str, Any]) -> None:
    """Entra's own checks of a registration, minus the challenge it keeps to itself: the policy it holds now."""
    data = {"id": credential["id"], "rawId": credential["id"], "type": "public-key",
            "response": credential["response"]}
    try:
        challenge = CollectedClientData(websafe_decode(data["response"]["clientDataJSON"])).challenge
        verify(data, challenge=challenge, restrictions=KeyRestrictions.from_policy(policy))
    except AttestationRejected as err:
        raise InvalidInput(f"Graph POST /users/{user_id}/authentication/fido2Methods: 400 invalidRequest: The passkey "
                           f"could not be registered: {err}", request_id="graph-req-400") from None


def entra(clock: FakeClock) -> MemoryTenant:
    """Ann (u1) in a tenant whose policy can change under the bridge: Graph itself always applies the current one."""
    tenant = MemoryTenant(clock=clock)
    tenant.add_user(id="u1", userPrincipalName="ann@contoso.example")
    tenant.attestation = entra_checks
    return tenant


def posts(tenant: MemoryTenant) -> int:
    """Registrations sent to Entra."""
    return tenant.faults.count("passkeys.register")


def policy_reads(tenant: MemoryTenant) -> int:
    """Reads of the FIDO2 policy."""
    return tenant.faults.count("passkeys.policy")


class Anchors:
    def __init__(self, anchors: TrustAnchors | Exception) -> None:
        self.value = anchors
        self.reads = 0

    async def anchors(self) -> TrustAnchors:
        self.reads += 1
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@pytest.fixture(scope="module")
def test_anchors() -> TrustAnchors:
    return TrustAnchors.from_blob(local_blob(), root_certificate(root_setting()))


async def world(trust: Anchors | None = None, max_age: float = 30) -> tuple[PasskeyService, MemoryTenant, FakeClock,
                                                                           FakeAuditSink]:
    entities = FakeEntityStore()
    directory = Directory(TableUsers(entities))
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
    clock, audit = FakeClock(), FakeAuditSink()
    devices = DeviceService(directory=directory, **device_repositories(entities), audit=audit, queue=FakeWorkQueue(),
                            clock=clock)
    await devices.register(CONN, "dev-1", DeviceRegistration.model_validate(
        {"user": "u1", "displayName": "key", "publicKey": JWK}), actor="t", correlation_id="c")
    service = PasskeyService(devices=devices, directory=directory, **passkey_repositories(entities), audit=audit,
                             clock=clock,
                             policy_max_age=dt.timedelta(seconds=max_age), trust=trust)
    return service, entra(clock), clock, audit


async def register(service: PasskeyService, tenant: MemoryTenant,
                   authenticator: SoftwareAuthenticator | None = None) -> dict[str, Any]:
    directory = tenant.passkeys()
    options = await service.options(CONN, directory, "dev-1", correlation_id="c")
    credential = (authenticator or SoftwareAuthenticator()).register(options)
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "key",
                                               "credential": credential})
    return await service.register(CONN, directory, "dev-1", body, correlation_id="c")


async def test_a_ban_older_than_the_max_age_is_honoured_without_a_graph_write() -> None:
    service, tenant, clock, _ = await world()
    await register(service, tenant)
    tenant.fido2_policy["keyRestrictions"] = BAN
    clock.advance(seconds=30)
    with pytest.raises(InvalidInput) as caught:
        await register(service, tenant)
    assert caught.value.field == "credential (aaguid)"
    assert posts(tenant) == 1, "refused here, before Graph"


async def test_graphs_refusal_of_a_fresh_ban_is_the_bridges_refusal_and_the_next_one_stays_here() -> None:
    service, tenant, clock, audit = await world()
    await register(service, tenant)
    tenant.fido2_policy["keyRestrictions"] = BAN  # set a second ago: the bridge's copy does not know it yet
    clock.advance(seconds=1)
    with pytest.raises(InvalidInput) as from_graph:
        await register(service, tenant)
    assert posts(tenant) == 2
    clock.advance(seconds=1)
    with pytest.raises(InvalidInput) as from_bridge:
        await register(service, tenant)
    assert posts(tenant) == 2, "the policy was read again when Graph refused: no second write"
    assert type(from_graph.value) is type(from_bridge.value)
    assert from_graph.value.type_uri == from_bridge.value.type_uri
    assert from_graph.value.field == from_bridge.value.field == "credential (aaguid)"
    assert "blocked by the tenant's FIDO2 key restrictions" in from_graph.value.detail
    assert from_graph.value.request_id == "graph-req-400"
    rejected = [r for r in audit.records if r.action == "passkey.rejected"]
    assert [r.detail.get("refusedBy") for r in rejected] == ["entra", None]
    assert rejected[0].graph_request_id == "graph-req-400"


async def test_the_policy_is_read_once_within_the_max_age() -> None:
    service, tenant, clock, _ = await world(max_age=30)
    await register(service, tenant)
    reads = policy_reads(tenant)
    clock.advance(seconds=29)
    await register(service, tenant)
    assert policy_reads(tenant) == reads
    clock.advance(seconds=1)
    await register(service, tenant)
    assert policy_reads(tenant) == reads + 1


async def test_a_refusal_graph_explains_otherwise_still_names_entra() -> None:
    service, tenant, _, _ = await world()

    tenant.faults.fail("passkeys.register", InvalidInput(
        "Graph POST /users/u1/authentication/fido2Methods: 400 invalidRequest: The challenge has expired.",
        request_id="r-1"))
    with pytest.raises(InvalidInput, match=r"Entra refused it: .*challenge has expired") as caught:
        await register(service, tenant)
    assert caught.value.field == "credential"
    assert caught.value.request_id == "r-1"


async def test_enforced_attestation_needs_a_root_from_the_metadata(test_anchors: TrustAnchors) -> None:
    trust = Anchors(test_anchors)
    service, tenant, _, audit = await world(trust)
    tenant.fido2_policy["isAttestationEnforced"] = True
    forged = SoftwareAuthenticator(fmt="packed-x5c", root=AttestationRoot.generate(TEST_ROOT_NAME))
    with pytest.raises(InvalidInput) as caught:
        await register(service, tenant, forged)
    assert caught.value.field == "credential (attestationStatement.x5c)"
    assert posts(tenant) == 0
    result = await register(service, tenant, SoftwareAuthenticator(fmt="packed-x5c"))
    assert (result["attestation"], result["attestationTrust"]) == ("basic", "trusted")
    assert audit.records[-1].action == "passkey.registered"
    assert audit.records[-1].detail["attestationTrust"] == "trusted"


async def test_metadata_is_read_only_when_attestation_is_enforced(test_anchors: TrustAnchors) -> None:
    trust = Anchors(test_anchors)
    service, tenant, _, _ = await world(trust)
    result = await register(service, tenant, SoftwareAuthenticator(fmt="packed-x5c"))
    assert result["attestationTrust"] == "not-checked"
    assert trust.reads == 0


async def test_no_metadata_with_enforced_attestation_is_a_503_not_an_acceptance() -> None:
    trust = Anchors(Transient("no FIDO metadata to check attestation against: FIDO_MDS_URL answered 502"))
    service, tenant, _, _ = await world(trust)
    tenant.fido2_policy["isAttestationEnforced"] = True
    with pytest.raises(Transient, match="FIDO_MDS_URL"):
        await register(service, tenant, SoftwareAuthenticator(fmt="packed-x5c"))
    assert posts(tenant) == 0
