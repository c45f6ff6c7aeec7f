"""Delivering a rotated password to a device: only the right device, once per token, never logged."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shared.adapters.devices import TableSpentTokens
from shared.adapters.rotations import TableRotations
from shared.config import Connection
from shared.domain.rotation import RotationSubject
from shared.errors import Forbidden, Unauthenticated
from shared.services.delivery import PasswordDelivery, RegisteredDevice
from shared.services.rotation import RotationService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeSecretStore, FakeWorkQueue
from tests.unit.test_rotation_service import FakeDirectory

UID = "33333333-3333-3333-3333-333333333333"
URL = "https://bridge.example/api/delivery/connections/demo/devices/dev-1/password"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(KEY.public_key()))
CONN = Connection.model_validate({
    "name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
    "features": {"rotation": {"enabled": True, "group": "Bridge Rotation"}},
})


class Devices:
    def __init__(self, *devices: RegisteredDevice) -> None:
        self.by_id = {d.device_id: d for d in devices}

    async def registered_device(self, connection: str, device_id: str) -> RegisteredDevice | None:
        return self.by_id.get(device_id)


class Subjects:
    def __init__(self, subject: RotationSubject) -> None:
        self.subject = subject

    async def get(self, connection: str, user_id: str) -> RotationSubject | None:
        return self.subject if user_id == self.subject.user_id else None

    async def all(self, connection: str) -> AsyncIterator[RotationSubject]:
        yield self.subject


class World:
    def __init__(self, *, device_active: bool = True, in_group: bool = True) -> None:
        self.clock = FakeClock()
        self.audit = FakeAuditSink()
        self.secrets = FakeSecretStore(self.clock)
        subjects = Subjects(RotationSubject(user_id=UID, upn="ann@contoso.example", in_rotation_group=in_group))
        entities = FakeEntityStore()
        self.rotation = RotationService(secrets=self.secrets, rotations=TableRotations(entities), audit=self.audit,
                                        queue=FakeWorkQueue(), clock=self.clock, subjects=subjects)
        self.delivery = PasswordDelivery(
            devices=Devices(RegisteredDevice("dev-1", UID, device_active, JWK)), subjects=subjects,
            rotation=self.rotation, spent=TableSpentTokens(entities), audit=self.audit, clock=self.clock)
        self.directory = FakeDirectory()

    def token(self, **overrides: Any) -> str:
        now = self.clock.now()
        claims: dict[str, Any] = {"aud": URL, "sub": "dev-1", "iat": int(now.timestamp()),
                                  "exp": int((now + dt.timedelta(minutes=4)).timestamp()), "jti": uuid.uuid4().hex}
        claims.update(overrides)
        return "Bearer " + jwt.encode(claims, KEY, algorithm="ES256")

    async def deliver(self, authorization: str, device: str = "dev-1") -> Any:
        return await self.delivery.deliver(CONN, device, authorization=authorization, url=URL, correlation_id="c1")


async def test_the_registered_device_receives_the_password_entra_holds() -> None:
    world = World()
    # The test rotates with the connection the delivery uses (a rotation group is all it needs).
    await world.rotation.rotate(CONN, world.directory, UID, rotation_id="r1", correlation_id="c0")
    delivered = await world.deliver(world.token())
    assert delivered.password == world.directory.password
    assert delivered.version
    assert delivered.rotated_at
    record = world.audit.records[-1]
    assert (record.action, record.outcome, record.vault_version) == ("password.delivered", "delivered",
                                                                     delivered.version)
    assert all(world.directory.password not in json.dumps(r.__dict__, default=str) for r in world.audit.records)


async def test_a_token_is_accepted_once() -> None:
    world = World()
    await world.rotation.rotate(CONN, world.directory, UID, rotation_id="r1", correlation_id="c0")
    token = world.token(jti="same-nonce-0001")
    await world.deliver(token)
    with pytest.raises(Unauthenticated, match="already been used"):
        await world.deliver(token)


@pytest.mark.parametrize(("make", "message"), [
    (lambda w: None, "missing Authorization"),
    (lambda w: w.token(aud="https://elsewhere.example/password"), "audience"),
    (lambda w: w.token(sub="dev-2"), "subject"),
    (lambda w: w.token(exp=int((w.clock.now() + dt.timedelta(minutes=30)).timestamp())), "5 minutes"),
])
async def test_bad_tokens_are_unauthenticated_and_audited(make: Any, message: str) -> None:
    world = World()
    with pytest.raises(Unauthenticated, match=message):
        await world.deliver(make(world))
    assert world.audit.records[-1].outcome == "unauthenticated"


async def test_an_unknown_device_looks_like_a_bad_signature() -> None:
    world = World()
    with pytest.raises(Unauthenticated, match="signature"):
        await world.deliver(world.token(sub="dev-9"), device="dev-9")


@pytest.mark.parametrize(("world", "message"), [
    (lambda: World(device_active=False), "device is not active"),
    (lambda: World(in_group=False), "not in the rotation group"),
])
async def test_inactive_devices_and_users_outside_the_group_are_forbidden(world: Any, message: str) -> None:
    w = world()
    with pytest.raises(Forbidden, match=message):
        await w.deliver(w.token())


async def test_spent_token_ids_are_forgotten_once_they_cannot_be_replayed() -> None:
    world = World()
    await world.rotation.rotate(CONN, world.directory, UID, rotation_id="r1", correlation_id="c0")
    await world.deliver(world.token())
    assert await world.delivery.forget_spent_tokens("demo") == 0
    world.clock.advance(minutes=10)
    assert await world.delivery.forget_spent_tokens("demo") == 1
