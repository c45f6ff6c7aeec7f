"""The rotation protocol against fakes of its ports: nothing is lost, nothing done twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from shared.config import Connection
from shared.domain.rotation import CURRENT, FAILED, PENDING, SUPERSEDED, RotationSubject, secret_name
from shared.errors import Ambiguous, Conflict, InvalidInput, NotFound, PermissionDenied, Throttled
from shared.services.rotation import RotationService, Status
from shared.topology import Queue
from tests.fakes import FakeAuditSink, FakeClock, FakeSecretStore, FakeWorkQueue
from tests.fakes_devices import FakeRotations

UID = "22222222-2222-2222-2222-222222222222"
CONN = Connection.model_validate({
    "name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
    "features": {"rotation": {"enabled": True, "group": "Bridge Rotation", "keepSuperseded": 1}},
})


@dataclass
class FakeDirectory:
    """Entra's password store as rotation sees it, with scripted faults."""

    password: str | None = None
    script: list[str] = field(default_factory=list)  # "ok", "reject", "ambiguous", "lost", "throttle", "deny"
    roles: frozenset[str] = frozenset({"User Administrator"})
    user_roles: frozenset[str] = frozenset()
    calls: int = 0

    async def reset(self, user_id: str, password: str) -> str | None:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "reject":
            raise InvalidInput("The specified password does not comply with password complexity requirements.",
                               request_id="req-400")
        if step == "throttle":
            raise Throttled("Please retry again later.", retry_after=3)
        if step == "deny":
            raise PermissionDenied("Insufficient privileges to complete the operation.", role="User Administrator")
        if step == "lost":  # never reached Entra
            raise Ambiguous("connection dropped before the request was sent")
        self.password = password
        if step == "ambiguous":  # applied, response lost
            raise Ambiguous("connection dropped after the write")
        return f"req-{self.calls}"

    async def admin_roles(self, user_id: str) -> frozenset[str]:
        return self.user_roles

    async def app_roles(self) -> frozenset[str]:
        return self.roles

    async def tenant_name(self) -> str:
        return "Contoso Demo"


class Subjects:
    def __init__(self, *subjects: RotationSubject) -> None:
        self.by_id = {s.user_id: s for s in subjects}

    async def get(self, connection: str, user_id: str) -> RotationSubject | None:
        return self.by_id.get(user_id)

    async def all(self, connection: str) -> AsyncIterator[RotationSubject]:
        for s in self.by_id.values():
            yield s


@pytest.fixture
def world() -> tuple[RotationService, FakeSecretStore, FakeAuditSink, FakeWorkQueue, FakeClock]:
    clock = FakeClock()
    secrets = FakeSecretStore(clock)
    audit = FakeAuditSink()
    queue = FakeWorkQueue()
    subjects = Subjects(RotationSubject(user_id=UID, upn="ann.lee@contoso.example", display_name="Ann Lee"))
    service = RotationService(secrets=secrets, rotations=FakeRotations(), audit=audit, queue=queue, clock=clock,
                              subjects=subjects)
    return service, secrets, audit, queue, clock


def states(secrets: FakeSecretStore) -> list[tuple[str | None, bool]]:
    return [(v.state, v.enabled) for v in secrets.secrets[secret_name("demo", UID)]]


async def entra_password_is_in_vault(service: RotationService, directory: FakeDirectory) -> bool:
    delivered = await service.read_for_device(CONN, UID)
    return directory.password in {delivered.password, *(p for _, p in delivered.possibly_current)}


async def test_a_rotation_writes_vault_first_then_graph_then_marks_current(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, audit, _, _ = world
    directory = FakeDirectory()
    outcome = await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    assert outcome.status is Status.ROTATED
    assert states(secrets) == [(CURRENT, True)]
    delivered = await service.read_for_device(CONN, UID)
    assert delivered.password == directory.password
    assert audit.actions() == ["vault.put", "rotation.completed"]
    assert audit.records[-1].graph_request_id
    assert all(directory.password not in str(r.detail) for r in audit.records)


async def test_replay_of_the_same_rotation_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, _, _, _ = world
    directory = FakeDirectory()
    await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    again = await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    assert again.replay
    assert directory.calls == 1
    assert len(secrets.secrets[secret_name("demo", UID)]) == 1


async def test_definite_rejection_marks_failed_and_retries_with_a_new_password(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, _, _, _ = world
    directory = FakeDirectory(script=["reject", "ok"])
    outcome = await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    assert outcome.status is Status.ROTATED
    assert states(secrets) == [(CURRENT, True), (FAILED, False)]
    assert await entra_password_is_in_vault(service, directory)


async def test_three_rejections_fail_with_the_reason(world) -> None:  # type: ignore[no-untyped-def]
    service, _, audit, _, _ = world
    outcome = await service.rotate(CONN, FakeDirectory(script=["reject"] * 3), UID, rotation_id="r1",
                                   correlation_id="c1")
    assert outcome.status is Status.FAILED
    assert "complexity" in (outcome.reason or "")
    assert audit.actions()[-1] == "rotation.failed"


async def test_ambiguous_write_keeps_password_possibly_current_until_next_success(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, _, _, clock = world
    directory = FakeDirectory(script=["ok", "ambiguous"])
    await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    clock.advance(minutes=10)
    with pytest.raises(Ambiguous):
        await service.rotate(CONN, directory, UID, rotation_id="r2", correlation_id="c2")
    assert states(secrets) == [(PENDING, True), (CURRENT, True)]
    assert await entra_password_is_in_vault(service, directory)
    row, _ = await service.status_row("demo", UID)
    assert row.status is Status.POSSIBLY_CURRENT
    # The retry of the same message resolves it with a fresh password.
    outcome = await service.rotate(CONN, directory, UID, rotation_id="r2", correlation_id="c2")
    assert outcome.status is Status.ROTATED
    assert states(secrets) == [(CURRENT, True), (SUPERSEDED, True), (SUPERSEDED, False)]
    assert await entra_password_is_in_vault(service, directory)


async def test_throttle_and_permission_errors_fail_the_version_and_propagate(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, _, _, _ = world
    with pytest.raises(Throttled):
        await service.rotate(CONN, FakeDirectory(script=["throttle"]), UID, rotation_id="r1", correlation_id="c1")
    with pytest.raises(PermissionDenied):
        await service.rotate(CONN, FakeDirectory(script=["deny"]), UID, rotation_id="r2", correlation_id="c1")
    assert states(secrets) == [(FAILED, False), (FAILED, False)]


async def test_admin_users_are_refused_naming_the_role(world) -> None:  # type: ignore[no-untyped-def]
    service, secrets, audit, _, _ = world
    directory = FakeDirectory(user_roles=frozenset({"Global Administrator"}))
    outcome = await service.rotate(CONN, directory, UID, rotation_id="r1", correlation_id="c1")
    assert outcome.status is Status.REFUSED
    assert "Privileged Authentication Administrator" in (outcome.reason or "")
    assert directory.calls == 0
    assert secret_name("demo", UID) not in secrets.secrets
    assert audit.actions() == ["rotation.refused"]


async def test_a_held_lease_stops_a_second_rotation(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, _, _ = world
    rotations: FakeRotations = service._rotations
    now = FakeClock().now()
    await rotations.claim("demo", UID, await rotations.get("demo", UID), "other", now=now,
                          until=now + dt.timedelta(minutes=1))
    with pytest.raises(Conflict, match="lease"):
        await service.rotate(CONN, FakeDirectory(), UID, rotation_id="r1", correlation_id="c1")


async def test_plan_enqueues_due_users_once_per_day_and_manual_guard(world) -> None:  # type: ignore[no-untyped-def]
    service, _, _, queue, clock = world
    assert await service.plan(CONN, correlation_id="t1") == 1
    message = queue.messages(Queue.ROTATION)[0]
    assert message["kind"] == "rotate"
    assert message["target"] == UID
    await service.rotate(CONN, FakeDirectory(), UID, rotation_id=message["idempotencyKey"], correlation_id="t1")
    assert await service.plan(CONN, correlation_id="t2") == 0
    with pytest.raises(Conflict, match="minIntervalMinutes"):
        await service.request(CONN, UID, actor="admin", correlation_id="m1")
    clock.advance(minutes=6)
    assert (await service.request(CONN, UID, actor="admin", correlation_id="m2")).startswith("manual-")
    with pytest.raises(NotFound):
        await service.request(CONN, "nobody", actor="admin", correlation_id="m3")
