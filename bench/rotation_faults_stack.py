"""Rotation under faults on the real stack: the stand-ins inject failures and workers are killed.

    python -m bench.rotation_faults_stack --rotations 1000 [--users 250]

The Entra simulator answers with random 503s, 429 storms, dropped connections and ambiguous writes
(applied, then the connection dropped); the Key Vault emulator with 503s, drops and ambiguous writes;
one delivery in ten is killed at a random moment between two steps. Messages are redelivered as the
Functions host does, up to maxDequeueCount, then poisoned. Afterwards, for every user, the password the
simulator holds must be one the vault hands a device; every rotation must be recorded; the audit
chains must verify; no password may appear in a log line or audit record. One summary line.
`make test` runs a smaller round of the same exercise (tests/fault/test_rotation_stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import io
import json
import logging
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.rotation import Stack, _connection
from local.entra.demo import BRIDGE_PRINCIPAL_ID, generated_tenant
from local.entra.process import running as entra_running
from local.servers import azurite
from local.tls import ensure_tls
from local.vault.process import running as vault_running
from shared.adapters.audit import AuditReader
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.tables import TableEntityStore
from shared.config import Connection
from shared.errors import BridgeError
from shared.messages import WorkMessage

MAX_DEQUEUE = 5
ENTRA_FAULTS = {"errorRate": 0.08, "throttleRate": 0.04, "dropRate": 0.04, "ambiguousRate": 0.12}
VAULT_FAULTS = {"error_rate": 0.04, "drop_rate": 0.02, "ambiguous_rate": 0.04}


@dataclass
class StackReport:
    """What the exercise found."""

    outcomes: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    audit_broken: str | None = None
    secrets_in_output: int = 0
    kills: int = 0

    @property
    def ok(self) -> bool:
        """Nothing lost, everything recorded, chains intact, no secret out."""
        return not (self.lost or self.unrecorded or self.audit_broken or self.secrets_in_output)

    def line(self) -> str:
        """The summary line."""
        counts = collections.Counter(self.outcomes.values())
        return (f"rotation faults on the stack: {len(self.outcomes)} rotations, {self.kills} worker kills; "
                f"{dict(sorted(counts.items()))}; lost passwords {len(self.lost)}, unrecorded "
                f"{len(self.unrecorded)}, audit {'broken: ' + self.audit_broken if self.audit_broken else 'intact'}"
                f", secrets in output {self.secrets_in_output} -> {'PASS' if self.ok else 'FAIL'}")


async def exercise(stack: Stack, conn: Connection, *, entra_admin: Callable[..., Any],
                   vault_faults: Callable[..., Any], rounds: int, kill_rate: float = 0.1, seed: int = 5,
                   output: Callable[[], str] = lambda: "") -> StackReport:
    """Sync, then rotate every rotation-group user `rounds` times under faults; check the invariants."""
    rng = random.Random(seed)
    report = StackReport()
    async with stack.open(8) as world:
        await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=f"sync-{seed}", correlation_id="faults")
        users = [row.id async for row in world.directory.all(conn.name) if row.in_rotation_group]
        before = {u: entra_admin("GET", f"/_sim/users/{u}/password").get("password") for u in users}
        entra_admin("PUT", "/_sim/faults", {"seed": seed, **ENTRA_FAULTS})
        vault_faults(seed=seed + 1, **VAULT_FAULTS)
        try:
            async def one_user(user: str) -> None:
                for round_ in range(rounds):
                    rotation_id = f"fault-{round_}-{user[:8]}"
                    message = WorkMessage(connection=conn.name, kind="rotate", target=user,
                                          idempotency_key=rotation_id, correlation_id=f"c-{rotation_id}")
                    for dequeue in range(1, MAX_DEQUEUE + 2):
                        if dequeue > MAX_DEQUEUE:
                            report.outcomes[rotation_id] = "poisoned"
                            break
                        task = asyncio.ensure_future(world.rotation.handle(
                            conn, world.passwords, message, dequeue_count=dequeue, max_dequeue_count=MAX_DEQUEUE))
                        if rng.random() < kill_rate:
                            await asyncio.sleep(rng.uniform(0, 0.3))
                            if task.cancel():  # the worker dies between two steps
                                report.kills += 1
                        try:
                            result = await task
                        except asyncio.CancelledError:
                            continue
                        except BridgeError:
                            if dequeue >= MAX_DEQUEUE:
                                report.outcomes[rotation_id] = "poisoned"
                                break
                            continue
                        report.outcomes[rotation_id] = result.status.value if result else "deferred"
                        break

            await asyncio.gather(*(one_user(u) for u in users))
        finally:
            entra_admin("PUT", "/_sim/faults", {k: 0 for k in ENTRA_FAULTS})
            vault_faults(**{k: 0 for k in VAULT_FAULTS})
        await world.audit.flush()
        today = dt.datetime.now(dt.UTC).date()
        verified = await world.audit_query.verify(conn.name, today, today)
        passwords: set[str] = set()
        for user in users:
            held = entra_admin("GET", f"/_sim/users/{user}/password").get("password")
            if held is None or held == before[user]:
                continue
            passwords.add(held)
            delivered = await world.rotation.read_for_device(conn, user)
            if held not in {delivered.password, *(p for _, p in delivered.possibly_current)}:
                report.lost.append(user)
    tables = TableEntityStore.from_connection_string(stack.storage)
    try:
        records = [r async for r in AuditReader(tables).records(conn.name, today, today)]
    finally:
        await tables.close()
    broken = verified.broken
    report.audit_broken = None if broken is None else f"{broken.chain}#{broken.seq}: {broken.reason}"
    recorded = {str(r.detail.get("rotationId")) for r in records if r.action.startswith("rotation.")}
    report.unrecorded = sorted(set(report.outcomes) - recorded)
    text = output() + json.dumps([r.model_dump(mode="json") for r in records])
    report.secrets_in_output = sum(1 for p in passwords if p in text)
    return report


async def run(rotations: int, users: int, folder: Path) -> StackReport:
    """Start the stand-ins on a generated tenant and run the exercise."""
    tls = ensure_tls()
    tenant = generated_tenant(users, groups=2, depth=2, seed=3)
    tenant_file = folder / "tenant.json"
    tenant_file.write_text(json.dumps(tenant.to_json()), encoding="utf-8")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    with contextlib.ExitStack() as running:
        storage = running.enter_context(azurite(folder / "azurite", folder / "azurite.log"))
        sim = running.enter_context(entra_running(data_dir=folder / "entra", log_path=folder / "entra.log",
                                                  tenant=str(tenant_file)))
        kv = running.enter_context(vault_running(data_dir=folder / "vault", authority=sim.url, tenant=tenant.tenantId,
                                                 admin=True, log_path=folder / "vault.log", tls=tls))
        kv.grant(BRIDGE_PRINCIPAL_ID, "Key Vault Secrets Officer")
        stack = Stack(tenant.tenantId, sim.url, kv.url, storage, str(tls.ca))
        return await exercise(stack, _connection(tenant.tenantId), entra_admin=sim.admin,
                              vault_faults=kv.set_faults, rounds=max(1, rotations // users),
                              output=stream.getvalue)


def main(argv: list[str] | None = None) -> int:
    """Run and print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=1000)
    parser.add_argument("--users", type=int, default=250)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        report = asyncio.run(run(args.rotations, args.users, Path(folder)))
    print(report.line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
