"""Passkey enrollment against fakes: options, local verification, single-use ceremonies, enrollment state."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import SoftwareAuthenticator
from shared.adapters.graph.fido2 import GraphPasskeyDirectory
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import Enrollment, UserRow
from shared.errors import Conflict, Forbidden, InvalidInput
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyRegistration, PasskeyService, repair_base64url
from shared.services.ports import GraphResponse
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue, PathGraph
from tests.fakes_devices import device_repositories, passkey_repositories

JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


def conn(policy: str = "optional") -> Connection:
    return Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                      "features": {"passkeys": {"enabled": True, "policy": policy}}})


class Graph:
    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path.endswith("fido2"):
            return {"state": "enabled", "isSelfServiceRegistrationAllowed": True, "isAttestationEnforced": False,
                    "keyRestrictions": {"isEnforced": False}}
        challenge = base64.b64encode(os.urandom(32)).decode()  # Graph's padded standard base64
        return {"challengeTimeoutDateTime": "2026-01-01T00:05:00Z", "publicKey": {
            "challenge": challenge, "rp": {"id": "login.microsoftonline.com"},
            "excludeCredentials": [{"id": "ab+/cd==", "type": "public-key"}]}}

    async def send(self, method: str, path: str, *, body: dict[str, Any] | None = None, **_: Any) -> GraphResponse:
        self.posted.append(body or {})
        return GraphResponse(201, {"id": f"method-{len(self.posted)}"}, request_id="req-1")


@pytest.fixture
async def world() -> tuple[PasskeyService, Directory, Graph]:
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
                          clock=clock), directory, Graph()


def test_graphs_padded_base64_is_repaired() -> None:
    assert repair_base64url("ab+/cd==") == "ab-_cQ"


async def test_options_then_register_moves_the_user_to_paired_with_entra(world: Any) -> None:
    service, directory, graph = world
    options = await service.options(conn(), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", correlation_id="c")
    assert "=" not in options["publicKey"]["challenge"]
    assert options["publicKey"]["excludeCredentials"][0]["id"] == "ab-_cQ"
    credential = SoftwareAuthenticator().register(options)
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "Ann's key",
                                               "credential": credential})
    result = await service.register(conn(), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", body, correlation_id="c")
    assert result["id"] == "method-1"
    assert graph.posted[0]["publicKeyCredential"]["id"] == credential["id"]
    assert (await directory.get("demo", "u1")).enrollment is Enrollment.PAIRED_WITH_ENTRA
    with pytest.raises(Conflict, match="already been used"):
        await service.register(conn(), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", body, correlation_id="c")


async def test_a_bad_credential_is_refused_before_graph(world: Any) -> None:
    service, _, graph = world
    options = await service.options(conn(), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", correlation_id="c")
    credential = SoftwareAuthenticator(origin="https://evil.example").register(options)
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                               "credential": credential})
    with pytest.raises(InvalidInput, match=r"clientData\.origin"):
        await service.register(conn(), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", body, correlation_id="c")
    assert graph.posted == []


async def test_disabled_policy_is_forbidden(world: Any) -> None:
    service, _, graph = world
    with pytest.raises(Forbidden, match="disabled"):
        await service.options(conn("disabled"), GraphPasskeyDirectory(PathGraph(graph)), "dev-1", correlation_id="c")
