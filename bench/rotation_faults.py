"""Rotation under faults: many rotations with random failures and worker kills, then the invariants.

Every port the rotation service uses is replaced by an in-memory stand-in that fails on purpose:
Graph answers 429, 5xx, drops the connection before or after applying the write, or rejects the
password; Key Vault fails before or after applying a call; the worker is killed between any two
steps. Messages flow through a queue that behaves like the Functions host (visibility timeout,
dequeue count, poison queue after `maxDequeueCount`, delayed sends).

Afterwards it checks, for every user, that the password Entra holds is one a device can receive (the
vault's current version or a possibly-current one), that every rotation completed or was recorded as
failed with a reason, that every poisoned message has audit records, and that no password appears in
any log line or audit record.

    python -m bench.rotation_faults --rotations 1000 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import heapq
import io
import json
import logging
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

from local.memory import FakeAuditSink, FakeClock, FakeEntityStore, FakeSecretStore
from shared.adapters.rotations import TableRotations
from shared.config import Connection
from shared.domain.rotation import RotationSubject, secret_name
from shared.errors import Ambiguous, BridgeError, InvalidInput, Throttled, Transient
from shared.messages import WorkMessage
from shared.services.ports import Entity, JsonObject, SecretVersion
from shared.services.rotation import RotationService
from shared.topology import Queue, Table

MAX_DEQUEUE = 5  # host.json extensions.queues.maxDequeueCount
VISIBILITY_SECONDS = 30  # host.json extensions.queues.visibilityTimeout
CRASH_VISIBILITY_SECONDS = 600  # a message whose worker died reappears when its lease runs out

CONNECTION = Connection.model_validate({
    "name": "faults", "tenantId": "00000000-0000-0000-0000-0000000000fa",
    "features": {"rotation": {"enabled": True, "group": "Bridge Rotation", "keepSuperseded": 2}},
})


class WorkerKilled(BaseException):
    """The worker process died: nothing after this point runs."""


@dataclass
class Dice:
    """Seeded randomness shared by every faulty stand-in."""

    rng: random.Random
    kills: int = 0
    active: bool = True

    def roll(self) -> float:
        """A uniform draw in [0, 1); 1.0 (never a fault) once the faults are switched off."""
        return self.rng.random() if self.active else 1.0

    def kill(self, probability: float) -> None:
        if self.roll() < probability:
            self.kills += 1
            raise WorkerKilled


@dataclass
class FaultyDirectory:
    """Entra's password store with Graph's failure modes."""

    dice: Dice
    passwords: dict[str, str]
    applied: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    async def reset(self, user_id: str, password: str) -> str | None:
        self.calls += 1
        self.dice.kill(0.02)
        roll = self.dice.roll()
        if roll < 0.10:
            raise Throttled("Too many requests", retry_after=self.dice.rng.uniform(1, 10))
        if roll < 0.17:
            raise Transient("Graph answered 503 Service Unavailable")
        if roll < 0.23:
            raise Ambiguous("connection dropped before the response arrived")  # not applied
        if roll < 0.28:
            raise InvalidInput("The specified password does not comply with password complexity requirements.",
                               field="passwordProfile.password")
        self.passwords[user_id] = password
        self.applied[user_id] = self.applied.get(user_id, 0) + 1
        if roll < 0.35:
            raise Ambiguous("connection dropped after the write was applied")
        self.dice.kill(0.03)  # applied, then the worker died before hearing back
        return f"req-{self.calls}"

    async def admin_roles(self, user_id: str) -> frozenset[str]:
        if self.dice.roll() < 0.02:
            raise Transient("Graph answered 504 Gateway Timeout")
        return frozenset()

    async def app_roles(self) -> frozenset[str]:
        return frozenset({"User Administrator"})

    async def tenant_name(self) -> str:
        return "Fault Tenant"


class FaultySecrets(FakeSecretStore):
    """Key Vault that fails before or after applying a call, and kills the worker around calls."""

    def __init__(self, clock: FakeClock, dice: Dice) -> None:
        super().__init__(clock)
        self.dice = dice

    def _before(self) -> None:
        self.dice.kill(0.01)
        if self.dice.roll() < 0.03:
            raise Transient("Key Vault answered 503")

    def _after(self) -> None:
        self.dice.kill(0.01)
        if self.dice.roll() < 0.02:
            raise Transient("connection to Key Vault dropped after the call was applied")

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        self._before()
        self.clock.advance(seconds=1)
        found = await super().put(name, value, tags=tags, content_type=content_type)
        self._after()
        return found

    async def set_tags(self, name: str, version: str, tags: Mapping[str, str], *,
                       enabled: bool | None = None) -> SecretVersion:
        self._before()
        found = await super().set_tags(name, version, tags, enabled=enabled)
        self._after()
        return found

    async def versions(self, name: str) -> list[SecretVersion]:
        self._before()
        return await super().versions(name)


class FaultyTables(FakeEntityStore):
    """Table storage whose worker may die just before or after a write."""

    def __init__(self, dice: Dice) -> None:
        super().__init__()
        self.dice = dice

    async def insert(self, table: Table, entity: Entity) -> Entity:
        self.dice.kill(0.01)
        saved = await super().insert(table, entity)
        self.dice.kill(0.01)
        return saved

    async def update(self, table: Table, entity: Entity) -> Entity:
        self.dice.kill(0.01)
        saved = await super().update(table, entity)
        self.dice.kill(0.01)
        return saved


@dataclass(order=True)
class Delivery:
    visible_at: dt.datetime
    seq: int
    body: JsonObject = field(compare=False)
    dequeue_count: int = field(default=0, compare=False)


class HostQueue:
    """One Storage queue as the Functions host drives it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.heap: list[Delivery] = []
        self.poison: list[Delivery] = []
        self.seq = 0

    async def send(self, queue: Queue, message: JsonObject, *, delay_seconds: float = 0) -> None:
        self.put(dict(message), delay_seconds)

    def put(self, body: JsonObject, delay_seconds: float = 0, dequeue_count: int = 0) -> None:
        self.seq += 1
        visible = self.clock.now() + dt.timedelta(seconds=delay_seconds)
        heapq.heappush(self.heap, Delivery(visible, self.seq, body, dequeue_count))

    def receive(self) -> Delivery | None:
        if not self.heap:
            return None
        delivery = heapq.heappop(self.heap)
        if delivery.visible_at > self.clock.now():
            self.clock.current = delivery.visible_at
        delivery.dequeue_count += 1
        return delivery

    def again(self, delivery: Delivery, seconds: float) -> None:
        self.seq += 1
        heapq.heappush(self.heap, Delivery(self.clock.now() + dt.timedelta(seconds=seconds), self.seq,
                                           delivery.body, delivery.dequeue_count))


class Subjects:
    def __init__(self, users: list[str]) -> None:
        self.by_id = {u: RotationSubject(user_id=u, upn=f"{u}@faults.example", display_name=f"User {u}")
                      for u in users}

    async def get(self, connection: str, user_id: str) -> RotationSubject | None:
        return self.by_id.get(user_id)

    async def all(self, connection: str) -> AsyncIterator[RotationSubject]:
        for subject in self.by_id.values():
            yield subject


@dataclass
class Report:
    rotations: int
    users: int
    completed: int = 0
    refused: int = 0
    failed_with_reason: int = 0
    poisoned: int = 0
    poisoned_without_audit: int = 0
    unresolved: int = 0
    lost_passwords: int = 0
    secrets_in_output: int = 0
    kills: int = 0
    graph_writes_applied: int = 0
    deliveries: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost_passwords or self.unresolved or self.poisoned_without_audit or self.secrets_in_output)

    def line(self) -> str:
        return (f"rotation faults: {self.rotations} rotations over {self.users} users, {self.deliveries} deliveries, "
                f"{self.kills} worker kills, {self.graph_writes_applied} Graph writes applied; completed "
                f"{self.completed}, failed with reason {self.failed_with_reason}, poisoned {self.poisoned}; "
                f"lost passwords {self.lost_passwords}, unresolved {self.unresolved}, poisoned without audit "
                f"{self.poisoned_without_audit}, secrets in logs {self.secrets_in_output} -> "
                f"{'PASS' if self.ok else 'FAIL'}")


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def run(rotations: int = 1000, *, seed: int = 7, per_user: int = 10) -> Report:
    """Drive `rotations` rotations through the faulty world and check the invariants."""
    dice = Dice(random.Random(seed))
    clock = FakeClock()
    users = [f"{i:08d}-0000-4000-8000-{seed:012d}" for i in range(max(1, rotations // per_user))]
    initial = {u: f"initial-{u}" for u in users}
    directory = FaultyDirectory(dice, dict(initial))
    secrets = FaultySecrets(clock, dice)
    tables = FaultyTables(dice)
    audit = FakeAuditSink()
    queue = HostQueue(clock)
    service = RotationService(secrets=secrets, rotations=TableRotations(tables), audit=audit, queue=queue, clock=clock,
                              subjects=Subjects(users))
    rotation_ids: list[str] = []
    for n in range(rotations):
        user = users[n % len(users)]
        rotation_id = f"fault-{n:05d}"
        rotation_ids.append(rotation_id)
        message = WorkMessage(connection=CONNECTION.name, kind="rotate", target=user, idempotency_key=rotation_id,
                              correlation_id=f"corr-{n:05d}")
        queue.put(message.model_dump(mode="json", by_alias=True))

    report = Report(rotations=rotations, users=len(users))
    with captured_logs() as logs:
        while (delivery := queue.receive()) is not None:
            report.deliveries += 1
            clock.advance(seconds=1)
            if delivery.dequeue_count > MAX_DEQUEUE:
                queue.poison.append(delivery)  # the host moves it without invoking the function
                continue
            message = WorkMessage.model_validate(delivery.body)
            try:
                await service.handle(CONNECTION, directory, message, dequeue_count=delivery.dequeue_count,
                                     max_dequeue_count=MAX_DEQUEUE)
            except WorkerKilled:
                queue.again(delivery, CRASH_VISIBILITY_SECONDS)
            except BridgeError:
                if delivery.dequeue_count >= MAX_DEQUEUE:
                    queue.poison.append(delivery)
                else:
                    queue.again(delivery, VISIBILITY_SECONDS)
        output = logs.getvalue()

    dice.active = False  # the checks read the world as it is, without new faults
    report.kills = dice.kills
    report.graph_writes_applied = sum(directory.applied.values())
    report.poisoned = len(queue.poison)
    # Every user: Entra's password is one a device can receive.
    for user in users:
        held = directory.passwords[user]
        if held == initial[user]:
            continue
        found = await secrets.versions(secret_name(CONNECTION.name, user))
        deliverable = await service.read_for_device(CONNECTION, user) if found else None
        candidates = set() if deliverable is None else {deliverable.password, *(v for _, v in
                                                                               deliverable.possibly_current)}
        if held not in candidates:
            report.lost_passwords += 1
    # Every rotation: completed, or recorded as failed with a reason.
    terminal: dict[str, str] = {}
    attempted: set[str] = set()
    for record in audit.records:
        rid = str(record.detail.get("rotationId", ""))
        if record.action == "rotation.attempt":
            attempted.add(rid)
        elif record.action in ("rotation.completed", "rotation.refused") or (
                record.action == "rotation.failed" and record.detail.get("reason")):
            terminal.setdefault(rid, record.action)
    poisoned_ids = {str(d.body.get("idempotencyKey")) for d in queue.poison}
    for rid in rotation_ids:
        outcome = terminal.get(rid)
        if outcome == "rotation.completed":
            report.completed += 1
        elif outcome == "rotation.refused":
            report.refused += 1
        elif outcome == "rotation.failed":
            report.failed_with_reason += 1
        elif rid in poisoned_ids and rid in attempted:
            report.failed_with_reason += 1  # the poison message and its attempt records are the reason
        else:
            report.unresolved += 1
    report.poisoned_without_audit = len(poisoned_ids - attempted)
    # No password in any log line or audit record.
    audit_text = json.dumps([record.__dict__ for record in audit.records], default=str)
    every_password = {v.value for versions in secrets.secrets.values() for v in versions if v.value}
    report.secrets_in_output = sum(1 for p in every_password if p in output or p in audit_text)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the fault suite and print its one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.rotations, seed=args.seed))
    print(report.line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
