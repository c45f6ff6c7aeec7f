"""The device registry against fakes: registration rules, keys, removal with revocation and progress."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pydantic import ValidationError

from shared.adapters.devices import TablePasskeys
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.devices import DeviceState, PasskeyRow, PublicJwk
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.errors import Conflict, NotFound
from shared.messages import WorkMessage
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.topology import Queue
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories
from tests.fakes_graph import MemoryTenant

CONN = Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001"})
JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


def entra(*methods: str) -> MemoryTenant:
    """Ann (u1) with these passkeys in Entra."""
    tenant = MemoryTenant()
    tenant.add_user(id="u1", userPrincipalName="ann@contoso.example")
    for method in methods:
        tenant.add_passkey("u1", method_id=method)
    return tenant


@pytest.fixture
async def world() -> tuple[DeviceService, FakeEntityStore, FakeWorkQueue, Directory]:
    entities = FakeEntityStore()
    directory = Directory(TableUsers(entities))
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
    await directory.put("demo", UserRow(id="u2", upn="bob@contoso.example", state=UserState.DEACTIVATED))
    queue = FakeWorkQueue()
    return DeviceService(directory=directory, **device_repositories(entities), audit=FakeAuditSink(), queue=queue,
                         clock=FakeClock()), entities, queue, directory


def body(user: str = "ann@contoso.example", key: dict[str, Any] | None = None) -> DeviceRegistration:
    return DeviceRegistration.model_validate({"user": user, "displayName": "Ann's key", "publicKey": key or JWK})


def test_only_p256_public_keys_are_accepted() -> None:
    PublicJwk.model_validate(JWK)
    with pytest.raises(ValidationError, match="P-256"):
        PublicJwk.model_validate({**JWK, "crv": "P-384"})
    with pytest.raises(ValidationError, match="private key"):
        PublicJwk.model_validate({**JWK, "d": "secret"})
    with pytest.raises(ValidationError, match="32 bytes"):
        PublicJwk.model_validate({**JWK, "x": base64.urlsafe_b64encode(b"short").decode().rstrip("=")})


async def test_register_by_upn_then_update(world: Any) -> None:
    service, _, _, directory = world
    row, created = await service.register(CONN, "dev-1", body(), actor="t", correlation_id="c")
    assert created
    assert row.user_id == "u1"
    assert (await directory.get("demo", "u1")).enrollment is Enrollment.PAIRED_WITH_PROVIDER
    _, created = await service.register(CONN, "dev-1", body("u1"), actor="t", correlation_id="c")
    assert not created
    found = await service.registered_device("demo", "dev-1")
    assert found is not None
    assert found.active


async def test_unknown_inactive_or_foreign_users_are_refused(world: Any) -> None:
    service, _, _, directory = world
    with pytest.raises(NotFound, match="sync it first"):
        await service.register(CONN, "dev-1", body("nobody@contoso.example"), actor="t", correlation_id="c")
    with pytest.raises(Conflict, match="deactivated"):
        await service.register(CONN, "dev-1", body("u2"), actor="t", correlation_id="c")
    await directory.put("demo", UserRow(id="u3", upn="cy@contoso.example"))
    await service.register(CONN, "dev-1", body("u1"), actor="t", correlation_id="c")
    with pytest.raises(Conflict, match="another user"):
        await service.register(CONN, "dev-1", body("u3"), actor="t", correlation_id="c")


async def test_removal_revokes_each_passkey_and_reports_progress(world: Any) -> None:
    service, entities, queue, directory = world
    await service.register(CONN, "dev-1", body(), actor="t", correlation_id="c")
    for method in ("m1", "m2"):
        await TablePasskeys(entities).put("demo", PasskeyRow(method_id=method, user_id="u1", device_id="dev-1"))
    operation = await service.remove(CONN, "dev-1", actor="t", correlation_id="c")
    assert await service.remove(CONN, "dev-1", actor="t", correlation_id="c") == operation
    assert (await service.operation("demo", operation))["total"] == 2
    message = WorkMessage.model_validate(queue.messages(Queue.DEVICE)[0])
    graph = entra("m1")  # m2 is already gone from Entra
    result = await service.complete_removal(CONN, graph.passkeys(), message)
    assert (result["status"], result["done"]) == ("completed", 2)
    assert graph.fido2["u1"] == []
    assert graph.faults.count("passkeys.revoke") == 2
    assert (await service.get("demo", "dev-1")).state is DeviceState.REMOVED
    assert await service.passkeys("demo", "dev-1") == []
    assert (await directory.get("demo", "u1")).enrollment is Enrollment.NOT_ENROLLED
    again = await service.complete_removal(CONN, graph.passkeys(), message)
    assert again["status"] == "completed"


async def test_a_redelivered_removal_counts_the_passkeys_a_stopped_delivery_revoked(world: Any) -> None:
    service, entities, queue, _ = world
    await service.register(CONN, "dev-1", body(), actor="t", correlation_id="c")
    for method in ("m1", "m2", "m3"):
        await TablePasskeys(entities).put("demo", PasskeyRow(method_id=method, user_id="u1", device_id="dev-1"))
    operation = await service.remove(CONN, "dev-1", actor="t", correlation_id="c")
    # The first delivery revoked m1 and deleted its row, then its process stopped before recording progress.
    await TablePasskeys(entities).delete("demo", "dev-1", "m1")
    assert (await service.operation("demo", operation))["done"] == 0
    message = WorkMessage.model_validate(queue.messages(Queue.DEVICE)[0])
    graph = entra("m2", "m3")
    result = await service.complete_removal(CONN, graph.passkeys(), message)
    assert (result["status"], result["done"], result["total"]) == ("completed", 3, 3)
    assert graph.fido2["u1"] == []
    assert graph.faults.count("passkeys.revoke") == 2, "m1, revoked by the stopped delivery, is not asked again"
