"""Enrollment policy: `optional` lets a provider finish a device's enrollment without a passkey (a refused
passkey answers `passkey-skipped` and the device is "passkey skipped"); `required` keeps the device "pending
passkey" until its passkey is registered in Entra, lists it in status, and (withholdPasswordsUntilPasskey)
withholds its password. Tried as a provider would get it wrong: replays, unknown ceremonies, outages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from functions.http import problem
from local.authenticator import SoftwareAuthenticator
from shared.adapters.users import TableUsers
from shared.config import Connection, PasskeyPolicy
from shared.domain.devices import DevicePasskey, DeviceRow, passkey_status
from shared.domain.directory import UserRow
from shared.errors import (
    BridgeError,
    Conflict,
    InvalidInput,
    NotFound,
    PasskeyPending,
    PasskeySkipped,
    Transient,
)
from shared.services.delivery import PasswordDelivery, RegisteredDevice
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.enrollment import DeviceEnrollment
from shared.services.passkeys import PasskeyRegistration, PasskeyService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant
from tests.unit import test_password_delivery as delivery_tests

JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


def conn(policy: str = "optional", **passkeys: Any) -> Connection:
    return Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                      "features": {"passkeys": {"enabled": True, "policy": policy, **passkeys}}})


class World:
    def __init__(self) -> None:
        self.entities = FakeEntityStore()
        self.directory = Directory(TableUsers(self.entities))
        self.audit = FakeAuditSink()
        clock = FakeClock()
        self.graph = MemoryTenant(clock=clock)
        self.graph.add_user(id="u1", userPrincipalName="ann@contoso.example")
        self.devices = DeviceService(directory=self.directory, **device_repositories(self.entities), audit=self.audit,
                                     queue=FakeWorkQueue(), clock=clock)
        self.passkeys = PasskeyService(devices=self.devices, directory=self.directory,
                                       **passkey_repositories(self.entities),
                                       audit=self.audit, clock=clock)
        self.enrollment = DeviceEnrollment(passkeys=self.passkeys, devices=self.devices)

    async def start(self) -> World:
        await self.directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
        await self.devices.register(conn(), "dev-1", DeviceRegistration.model_validate(
            {"user": "u1", "displayName": "key", "publicKey": JWK}), actor="t", correlation_id="c")
        return self

    async def attempt(self, connection: Connection, **authenticator: Any) -> tuple[PasskeyRegistration, Any]:
        """Options, then a registration with a software authenticator; returns the body and the outcome."""
        entra = self.graph.passkeys()
        options = await self.passkeys.options(connection, entra, "dev-1", correlation_id="c")
        body = PasskeyRegistration.model_validate({
            "ceremonyId": options["ceremonyId"], "displayName": "Ann's key",
            "credential": SoftwareAuthenticator(**authenticator).register(options)})
        try:
            return body, await self.enrollment.register(connection, entra, "dev-1", body, correlation_id="c")
        except BridgeError as err:
            return body, err

    async def status(self, connection: Connection) -> DevicePasskey:
        row = await self.devices.get("demo", "dev-1")
        return self.devices.passkey_status(connection, row, await self.devices.passkeys("demo", "dev-1"))


@pytest.fixture
async def world() -> World:
    return await World().start()


async def test_optional_a_refused_passkey_is_skippable_and_the_device_enrolled_without_it(world: World) -> None:
    optional = conn("optional")
    assert await world.status(optional) is DevicePasskey.PENDING
    _, outcome = await world.attempt(optional, origin="https://evil.example")
    assert isinstance(outcome, PasskeySkipped)
    assert isinstance(outcome.cause, InvalidInput)
    assert world.graph.faults.count("passkeys.register") == 0
    assert await world.status(optional) is DevicePasskey.SKIPPED
    body = json.loads(problem(outcome, instance="/x", correlation_id="c").get_body())
    assert body["type"] == "urn:entra-bridge:problem:passkey-skipped"
    assert body["status"] == 422
    assert body["skippable"] is True
    assert body["passkey"] == "skipped"
    assert body["cause"] == "urn:entra-bridge:problem:invalid-input"
    assert body["field"].startswith("credential (clientData.origin")
    skipped = [r for r in world.audit.records if r.action == "device.passkeySkipped"]
    assert [(r.target, r.outcome, r.detail["device"]) for r in skipped] == [("u1", "skipped", "dev-1")]
    summary = await world.devices.passkey_enrollment(optional)
    assert summary is not None
    assert summary["devices"] == {"pending": 0, "registered": 0, "skipped": 1}
    assert summary["pendingPasskey"] == []

    # A passkey registered later still counts.
    _, created = await world.attempt(optional)
    assert created["passkey"] == "registered"
    assert await world.status(optional) is DevicePasskey.REGISTERED

    # A second passkey refused later leaves the device registered, and records no skip.
    _, outcome = await world.attempt(optional, origin="https://evil.example")
    assert isinstance(outcome, PasskeySkipped)
    assert outcome.extensions()["passkey"] == "registered"
    assert await world.status(optional) is DevicePasskey.REGISTERED
    assert sum(1 for r in world.audit.records if r.action == "device.passkeySkipped") == 1


async def test_optional_graphs_refusal_of_the_key_is_skippable(world: World) -> None:
    world.graph.faults.fail("passkeys.register",
                            InvalidInput("Graph refused the key: the AAGUID is blocked", request_id="req-9"))
    _, outcome = await world.attempt(conn("optional"))
    assert isinstance(outcome, PasskeySkipped)
    # The bridge answers Graph's refusal as its own (the same problem type), keeping Entra's words and request id.
    assert isinstance(outcome.cause, InvalidInput)
    assert "Graph refused the key" in outcome.cause.detail
    assert outcome.extensions()["requestId"] == "req-9"
    assert await world.status(conn("optional")) is DevicePasskey.SKIPPED


@pytest.mark.parametrize("failure", [Transient("Graph answered 503"), NotFound("the user is gone")])
async def test_optional_outages_and_other_failures_are_not_skipped(world: World, failure: BridgeError) -> None:
    world.graph.faults.fail("passkeys.register", failure)
    _, outcome = await world.attempt(conn("optional"))
    assert outcome is failure
    assert await world.status(conn("optional")) is DevicePasskey.PENDING
    assert not [r for r in world.audit.records if r.action == "device.passkeySkipped"]


async def test_optional_request_errors_are_not_skipped(world: World) -> None:
    optional = conn("optional")
    body, created = await world.attempt(optional)
    assert created["passkey"] == "registered"
    # A replayed ceremony and an unknown one are the caller's mistakes, not a refused passkey.
    entra = world.graph.passkeys()
    with pytest.raises(Conflict, match="already been used"):
        await world.enrollment.register(optional, entra, "dev-1", body, correlation_id="c")
    forged = body.model_copy(update={"ceremony_id": "cer-" + "0" * 32 + "-u1"})
    with pytest.raises(NotFound):
        await world.enrollment.register(optional, entra, "dev-1", forged, correlation_id="c")
    assert not [r for r in world.audit.records if r.action == "device.passkeySkipped"]


async def test_required_keeps_the_device_pending_until_its_passkey_is_registered(world: World) -> None:
    required = conn("required")
    _, outcome = await world.attempt(required, origin="https://evil.example")
    assert isinstance(outcome, InvalidInput)
    assert not isinstance(outcome, PasskeySkipped)
    world.graph.faults.fail("passkeys.register", InvalidInput("Graph refused the key"))
    _, outcome = await world.attempt(required)
    assert isinstance(outcome, InvalidInput)
    assert not isinstance(outcome, PasskeySkipped)
    assert "Graph refused the key" in outcome.detail
    assert await world.status(required) is DevicePasskey.PENDING
    summary = await world.devices.passkey_enrollment(required)
    assert summary is not None
    assert summary["policy"] == "required"
    assert summary["devices"] == {"pending": 1, "registered": 0, "skipped": 0}
    assert [d["deviceId"] for d in summary["pendingPasskey"]] == ["dev-1"]

    _, created = await world.attempt(required)
    assert created["passkey"] == "registered"
    summary = await world.devices.passkey_enrollment(required)
    assert summary is not None
    assert summary["devices"] == {"pending": 0, "registered": 1, "skipped": 0}
    assert summary["pendingPasskey"] == []


async def test_a_skip_under_optional_does_not_count_once_the_policy_is_required(world: World) -> None:
    await world.attempt(conn("optional"), origin="https://evil.example")
    assert await world.status(conn("optional")) is DevicePasskey.SKIPPED
    assert await world.status(conn("required")) is DevicePasskey.PENDING
    row = await world.devices.get("demo", "dev-1")
    assert passkey_status(row, True, PasskeyPolicy.REQUIRED) is DevicePasskey.REGISTERED
    assert passkey_status(DeviceRow.model_validate(row.to_row() | {"passkeySkippedAt": None}), False,
                          PasskeyPolicy.OPTIONAL) is DevicePasskey.PENDING


# ----------------------------------------------------------------------------- password delivery


class Devices(delivery_tests.Devices):
    def __init__(self, *devices: RegisteredDevice, with_passkey: bool) -> None:
        super().__init__(*devices)
        self.with_passkey = with_passkey

    async def has_passkey(self, connection: str, device_id: str) -> bool:
        return self.with_passkey


def delivery_world(with_passkey: bool) -> delivery_tests.World:
    world = delivery_tests.World()
    world.delivery = PasswordDelivery(
        devices=Devices(RegisteredDevice("dev-1", delivery_tests.UID, True, delivery_tests.JWK),
                        with_passkey=with_passkey),
        subjects=world.delivery._subjects, rotation=world.rotation, spent=world.delivery._spent,
        audit=world.audit, clock=world.clock)
    return world


def with_passkeys(policy: str, withhold: bool) -> Connection:
    doc = delivery_tests.CONN.model_dump(mode="json", by_alias=True)
    doc["features"]["passkeys"] = {"enabled": True, "policy": policy, "withholdPasswordsUntilPasskey": withhold}
    return Connection.model_validate(doc)


async def deliver(world: delivery_tests.World, connection: Connection) -> Any:
    await world.rotation.rotate(connection, world.directory, delivery_tests.UID, rotation_id="r1",
                                correlation_id="c0")
    return await world.delivery.deliver(connection, "dev-1", authorization=world.token(), url=delivery_tests.URL,
                                        correlation_id="c1")


async def test_required_with_the_setting_withholds_the_password_from_a_device_pending_its_passkey() -> None:
    world = delivery_world(with_passkey=False)
    connection = with_passkeys("required", withhold=True)
    with pytest.raises(PasskeyPending) as caught:
        await deliver(world, connection)
    body = json.loads(problem(caught.value, instance="/x", correlation_id="c").get_body())
    assert body["type"] == "urn:entra-bridge:problem:passkey-pending"
    assert body["status"] == 403
    assert body["setting"] == "features.passkeys.withholdPasswordsUntilPasskey"
    assert "withholdPasswordsUntilPasskey" in body["detail"]
    record = world.audit.records[-1]
    assert (record.action, record.outcome) == ("password.delivery", "withheld")
    assert all(world.directory.password not in json.dumps(r.__dict__, default=str) for r in world.audit.records)


@pytest.mark.parametrize(("policy", "withhold", "with_passkey"), [
    ("required", True, True), ("required", False, False), ("optional", True, False)])
async def test_otherwise_the_password_is_delivered(policy: str, withhold: bool, with_passkey: bool) -> None:
    world = delivery_world(with_passkey=with_passkey)
    delivered = await deliver(world, with_passkeys(policy, withhold))
    assert delivered.password == world.directory.password
