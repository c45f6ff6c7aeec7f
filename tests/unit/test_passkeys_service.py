"""Passkey enrollment against fakes: options, local verification, single-use ceremonies, enrollment state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import SoftwareAuthenticator
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import Enrollment, UserRow
from shared.errors import Conflict, Forbidden, InvalidInput
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyRegistration, PasskeyService, repair_base64url
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant

JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


def conn(policy: str = "optional") -> Connection:
    return Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                      "features": {"passkeys": {"enabled": True, "policy": policy}}})


@pytest.fixture
async def world() -> tuple[PasskeyService, Directory, MemoryTenant]:
    entities = FakeEntityStore()
    directory = Directory(TableUsers(entities))
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
    clock = FakeClock()
    audit = FakeAuditSink()
    devices = DeviceService(directory=directory, **device_repositories(entities), audit=audit, queue=FakeWorkQueue(),
                            clock=clock)
    await devices.register(conn(), "dev-1", DeviceRegistration.model_validate(
        {"user": "u1", "displayName": "key", "publicKey": JWK}), actor="t", correlation_id="c")
    return PasskeyService(devices=devices, directory=directory, **passkey_repositories(entities), audit=audit,
                          clock=clock), directory, tenant()


def tenant() -> MemoryTenant:
    """Ann (u1) with a passkey of credential id `ab-_cQ`, which Graph lists as `ab+/cQ==`."""
    entra = MemoryTenant()
    entra.add_user(id="u1", userPrincipalName="ann@contoso.example")
    entra.add_passkey("u1", "ab-_cQ")
    return entra


def test_graphs_padded_base64_is_repaired() -> None:
    assert repair_base64url("ab+/cd==") == "ab-_cQ"


async def test_options_then_register_moves_the_user_to_paired_with_entra(world: Any) -> None:
    service, directory, graph = world
    options = await service.options(conn(), graph.passkeys(), "dev-1", correlation_id="c")
    assert "=" not in options["publicKey"]["challenge"]
    assert options["publicKey"]["excludeCredentials"][0]["id"] == "ab-_cQ"
    credential = SoftwareAuthenticator().register(options)
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "Ann's key",
                                               "credential": credential})
    result = await service.register(conn(), graph.passkeys(), "dev-1", body, correlation_id="c")
    assert result["id"] == graph.fido2["u1"][-1].id
    assert graph.credential_ids[result["id"]] == credential["id"]
    assert (await directory.get("demo", "u1")).enrollment is Enrollment.PAIRED_WITH_ENTRA
    with pytest.raises(Conflict, match="already been used"):
        await service.register(conn(), graph.passkeys(), "dev-1", body, correlation_id="c")


async def test_a_bad_credential_is_refused_before_graph(world: Any) -> None:
    service, _, graph = world
    options = await service.options(conn(), graph.passkeys(), "dev-1", correlation_id="c")
    credential = SoftwareAuthenticator(origin="https://evil.example").register(options)
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                               "credential": credential})
    with pytest.raises(InvalidInput, match=r"clientData\.origin"):
        await service.register(conn(), graph.passkeys(), "dev-1", body, correlation_id="c")
    assert graph.faults.count("passkeys.register") == 0


async def test_disabled_policy_is_forbidden(world: Any) -> None:
    service, _, graph = world
    with pytest.raises(Forbidden, match="disabled"):
        await service.options(conn("disabled"), graph.passkeys(), "dev-1", correlation_id="c")
