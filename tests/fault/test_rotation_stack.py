"""Rotation under faults on the real stack: the simulator and the vault emulator inject 429s, 5xx,
dropped connections and ambiguous writes, and workers are killed mid-rotation. Afterwards no password
is lost, every rotation is accounted for, and no password reached a log line or the audit log.

The adapters are the production ones (Graph gateway, Key Vault store, Table storage, audit chain);
the queue is driven here the way the Functions host drives it (redelivery, dequeue count, poison).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from typing import Any

import pytest

from bench.rotation import Stack, _connection
from shared.adapters.audit import AuditReader
from shared.adapters.directory import GraphDirectoryReader
from shared.adapters.tables import TableEntityStore
from shared.errors import BridgeError
from shared.messages import WorkMessage
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

MAX_DEQUEUE = 5
ROUNDS = 4
KILL_RATE = 0.1


@pytest.fixture
def faults(entra: EntraFixture, vault: VaultFixture) -> Any:
    """Faults are switched on by the test after its set-up; this puts everything back afterwards."""
    yield
    entra.admin("PUT", "/_sim/faults", {"errorRate": 0, "throttleRate": 0, "dropRate": 0, "ambiguousRate": 0})
    vault.running.set_faults(error_rate=0, drop_rate=0, ambiguous_rate=0)


async def test_rotations_under_injected_faults_and_kills_lose_nothing(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        faults: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack = Stack(entra.tenant_id, entra.url, vault.url, azurite_connection_string, str(tls_files.ca))
    conn = _connection(entra.tenant_id).model_copy(update={"name": f"f{random.randrange(10**6)}"})
    rng = random.Random(5)
    outcome: dict[str, str] = {}
    async with stack.open(8) as world:
        await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id="fault-sync", correlation_id="fault")
        entra.admin("PUT", "/_sim/faults", {"seed": 11, "errorRate": 0.08, "throttleRate": 0.04, "dropRate": 0.04,
                                            "ambiguousRate": 0.12})
        vault.running.set_faults(seed=12, error_rate=0.04, drop_rate=0.02, ambiguous_rate=0.04)
        users = [row.id async for row in world.directory.all(conn.name) if row.in_rotation_group]
        before = {u: entra.admin("GET", f"/_sim/users/{u}/password").get("password") for u in users}

        async def one_user(user: str) -> None:
            for round_ in range(ROUNDS):
                rotation_id = f"fault-{round_}-{user[:8]}"
                message = WorkMessage(connection=conn.name, kind="rotate", target=user, idempotency_key=rotation_id,
                                      correlation_id=f"c-{rotation_id}")
                for dequeue in range(1, MAX_DEQUEUE + 2):
                    if dequeue > MAX_DEQUEUE:
                        outcome[rotation_id] = "poisoned"
                        break
                    task = asyncio.ensure_future(world.rotation.handle(
                        conn, world.passwords, message, dequeue_count=dequeue, max_dequeue_count=MAX_DEQUEUE))
                    if rng.random() < KILL_RATE:
                        await asyncio.sleep(rng.uniform(0, 0.3))
                        task.cancel()  # the worker dies between two steps
                    try:
                        result = await task
                    except asyncio.CancelledError:
                        continue
                    except BridgeError:
                        if dequeue >= MAX_DEQUEUE:
                            outcome[rotation_id] = "poisoned"
                            break
                        continue
                    outcome[rotation_id] = result.status.value if result else "deferred"
                    break

        await asyncio.gather(*(one_user(u) for u in users))
        entra.admin("PUT", "/_sim/faults", {"errorRate": 0, "throttleRate": 0, "dropRate": 0, "ambiguousRate": 0})
        vault.running.set_faults(error_rate=0, drop_rate=0, ambiguous_rate=0)

        lost = []
        passwords: set[str] = set()
        for user in users:
            held = entra.admin("GET", f"/_sim/users/{user}/password").get("password")
            if held is None or held == before[user]:
                continue
            passwords.add(held)
            delivered = await world.rotation.read_for_device(conn, user)
            if held not in {delivered.password, *(p for _, p in delivered.possibly_current)}:
                lost.append(user)
    assert lost == []
    assert len(outcome) == len(users) * ROUNDS
    assert "rotated" in outcome.values()

    tables = TableEntityStore.from_connection_string(azurite_connection_string)
    try:
        today = dt.datetime.now(dt.UTC).date()
        records = [r async for r in AuditReader(tables).records(conn.name, today, today)]
        _, broken = await AuditReader(tables).verify(conn.name, today, today)
    finally:
        await tables.close()
    assert broken is None
    recorded = {str(r.detail.get("rotationId")) for r in records if r.action.startswith("rotation.")}
    assert set(outcome) <= recorded
    for rotation_id, status in outcome.items():
        if status in ("failed", "poisoned"):
            assert any(str(r.detail.get("rotationId")) == rotation_id for r in records)
    text = caplog.text + json.dumps([r.model_dump(mode="json") for r in records])
    assert not [p for p in passwords if p in text]
