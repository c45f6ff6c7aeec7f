"""Rotation throughput against Microsoft's limits: the simulator's write limits and the vault's create limits on.

    python -m bench.rotation --users 10000 --instances 2 [--workers 24] [--time-scale 4]

Starts Azurite, the Entra simulator with a generated tenant whose rotation group holds `--users`
users, and the Key Vault emulator; imports the users with the real sync; then rotates every user
through the production adapters (Graph gateway with its shared throttle governor, Key Vault store,
Table storage, keyed audit) in `--instances` worker processes, as Functions instances share a queue,
and checks afterwards that the password the simulator holds for each user is one the vault hands a
device.

Limits: Graph allows 3,000 writes per 150 s per app and tenant (a full bucket, then 20 a second;
https://learn.microsoft.com/graph/throttling-limits) and Key Vault 300 secret creates per 10 s per vault
(https://learn.microsoft.com/azure/key-vault/general/service-limits). A rotation is one Graph write
and one secret create. With `--time-scale X` both services run their windows X times faster (a
150-second window passes in 150/X real seconds), so the run stays short while it still spends the
whole first window and goes on well past it; the line says the scale. The binding bound over a run
of T seconds is the smaller of what each limit lets through in T: Graph 3,000 + 20·X·T, Key Vault
300 + 30·X·T (in real seconds). Prints one line: rotations per second, the ratio to that bound, the
rate after the first window against 20·X a second, 429s answered, failures, lost passwords, and
rotations whose password was written more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.identity.aio import ClientSecretCredential

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, BRIDGE_PRINCIPAL_ID, generated_tenant
from local.entra.process import running as entra_running
from local.servers import azurite
from local.tls import ensure_tls
from local.vault.process import running as vault_running
from shared.adapters.audit import AuditReader, TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.graph import GraphGateway, SystemClock, ThrottleGovernor
from shared.adapters.graph.passwords import GraphPasswordDirectory
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.leases import TableLeases
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.rotations import TableRotations
from shared.adapters.syncstate import TableSyncState
from shared.adapters.tables import TableEntityStore
from shared.adapters.users import TableUsers
from shared.adapters.vault import KeyVaultSecretStore
from shared.config import Connection
from shared.errors import BridgeError
from shared.services.audit import AuditQuery
from shared.services.directory import Directory, RotationSubjects
from shared.services.rotation import RotationService, Status
from shared.services.sync import SyncService

GRAPH_WRITES_PER_SECOND = 20.0
GRAPH_WRITE_BURST = 3000.0
VAULT_CREATES_PER_SECOND = 30.0
VAULT_CREATE_BURST = 300.0
#: How many times one rotation is tried again after Graph or the vault kept answering 429 (the queue
#: function puts the message back instead, shared.services.rotation.MAX_DEFERRALS).
THROTTLED_RETRIES = 50


def bound(seconds: float, scale: float) -> tuple[float, str]:
    """The rotations the binding limit lets through in `seconds` real seconds, and which limit binds."""
    graph = GRAPH_WRITE_BURST + GRAPH_WRITES_PER_SECOND * scale * seconds
    vault = VAULT_CREATE_BURST + VAULT_CREATES_PER_SECOND * scale * seconds
    return (graph, "Graph's 3,000 writes/150 s") if graph <= vault else (vault, "Key Vault's 300 creates/10 s")


async def run(users: int, workers: int, processes: int, folder: Path, scale: float = 1.0) -> str:
    """Set up the stack, rotate everyone, verify, and return the summary line."""
    tls = ensure_tls()
    tenant = generated_tenant(users, groups=4, depth=2, seed=7)
    # Everyone rotates (the generated rotation group stops at 2,000, which one window holds).
    rotation_group = next(g for g in tenant.groups.values() if g.displayName == "Bridge Rotation")
    rotation_group.members = list(tenant.users)
    tenant_file = folder / "tenant.json"
    tenant_file.write_text(json.dumps(tenant.to_json()), encoding="utf-8")
    conn = _connection(tenant.tenantId)
    with azurite(folder / "azurite", folder / "azurite.log") as storage, \
            entra_running(data_dir=folder / "entra", log_path=folder / "entra.log", tenant=str(tenant_file),
                          time_scale=scale) as sim, \
            vault_running(data_dir=folder / "vault", authority=sim.url, tenant=tenant.tenantId, admin=True,
                          log_path=folder / "vault.log", tls=tls, time_scale=scale) as kv:
        kv.grant(BRIDGE_PRINCIPAL_ID, "Key Vault Secrets Officer")
        stack = Stack(conn.tenant_id, sim.url, kv.url, storage, str(tls.ca), time_scale=scale)
        async with stack.open(workers) as world:
            report = await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id="bench-sync",
                                          correlation_id="bench")
            targets = [row.id async for row in world.directory.all(conn.name) if row.in_rotation_group][:users]
        config = folder / "stack.json"
        config.write_text(json.dumps({**stack.__dict__, "targets": targets}), encoding="utf-8")
        writes_before = sim.admin("GET", "/_sim/tenant")["counters"]["writes"]
        started = time.time()
        children = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.rotation", "--child", str(config), "--slice", f"{k}/{processes}",
            "--workers", str(workers), stdout=asyncio.subprocess.PIPE) for k in range(processes)]
        outcomes: dict[str, str] = {}
        finished: list[float] = []
        retries = 0
        for child in children:
            out, _ = await child.communicate()
            result = json.loads(out.decode().strip().splitlines()[-1])
            outcomes.update(result["outcomes"])
            finished += result["finished"]
            retries += result["throttled"]
        elapsed = time.time() - started
        lost = await _lost(sim.admin, stack, conn, targets, workers)
        rotated = sum(1 for s in outcomes.values() if s == Status.ROTATED.value)
        failures = len(targets) - rotated
        rate = rotated / elapsed if elapsed else 0.0
        counters = sim.admin("GET", "/_sim/tenant")["counters"]
        # Every successful Graph write of the run is a password set; more than one per rotation is a password
        # written twice.
        written_twice = max(0, int(counters["writes"] - writes_before) - rotated)
        allowed, binding = bound(elapsed, scale)
        finished.sort()
        # The last quarter of the run, once the first window's burst is long spent: its rate against the
        # refill rates of both limits.
        tail = finished[len(finished) * 3 // 4:]
        steady = ((len(tail) - 1) / (tail[-1] - tail[0])) if len(tail) > 1 and tail[-1] > tail[0] else 0.0
        simulated = elapsed * scale
        return (f"rotation: {rotated} of {len(targets)} users rotated in {elapsed:.1f} s ({simulated:.0f} s of "
                f"limit time: limits time-scaled x{scale:g}) by {processes} instances = {rate:.1f}/s; ratio to the "
                f"binding bound {rotated / allowed:.2f} ({binding} lets {allowed:.0f} through in the run); last "
                f"quarter {steady:.1f}/s (Graph refills {GRAPH_WRITES_PER_SECOND * scale:.1f}/s, Key Vault "
                f"{VAULT_CREATES_PER_SECOND * scale:.1f}/s); "
                f"Graph 429s {int(counters['throttled'])} answered "
                f"(gateway retries {retries}); failures {failures}; lost passwords {lost}; passwords written twice "
                f"{written_twice}; sync imported {report.added} users in {report.duration_seconds:.1f} s")


async def _lost(admin: Any, stack: Stack, conn: Connection, targets: list[str], workers: int) -> int:
    """Users whose password in Entra is not one the vault hands a device."""
    lost = 0
    async with stack.open(workers) as world:
        pending = list(targets)

        async def check() -> None:
            nonlocal lost
            while pending:
                user = pending.pop()
                held = (await asyncio.to_thread(admin, "GET", f"/_sim/users/{user}/password")).get("password")
                if held is None:
                    continue
                delivered = await world.rotation.read_for_device(conn, user)
                if held not in {delivered.password, *(p for _, p in delivered.possibly_current)}:
                    lost += 1

        await asyncio.gather(*(check() for _ in range(8)))
    return lost


def _connection(tenant_id: str) -> Connection:
    return Connection.model_validate({
        "name": "bench", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"],
                              "removalThreshold": {"percent": 100, "absolute": 1000000}},
                     "rotation": {"enabled": True, "group": "Bridge Rotation", "keepSuperseded": 1}}})


@dataclass
class World:
    """The production adapters and services of one process."""

    graph: GraphGateway
    directory: Directory
    sync: SyncService
    rotation: RotationService
    passwords: GraphPasswordDirectory
    audit: TableAuditSink
    audit_query: AuditQuery


@dataclass
class Stack:
    """Where the stand-ins listen; enough for a child process to build its own adapters."""

    tenant_id: str
    entra_url: str
    vault_url: str
    storage: str
    ca: str
    #: The tenant whose app signs in to the vault (the deployment's own); the connection's tenant when empty.
    vault_tenant: str = ""
    #: How much faster than real time the simulator's limit windows pass (the governor's budget follows).
    time_scale: float = 1.0

    @contextlib.asynccontextmanager
    async def open(self, workers: int) -> AsyncIterator[World]:
        """Adapters and services on this stack, closed afterwards."""
        def credential(tenant: str = self.tenant_id) -> ClientSecretCredential:
            return ClientSecretCredential(tenant, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET,
                                          authority=self.entra_url, connection_verify=self.ca)

        clock = SystemClock()
        tables = TableEntityStore.from_connection_string(self.storage)
        queue = StorageWorkQueue.from_connection_string(self.storage)
        vault_credential = credential(self.vault_tenant or self.tenant_id)
        secrets = KeyVaultSecretStore(self.vault_url, vault_credential, connection_verify=self.ca,
                                      max_throttle_wait=60)
        graph = GraphGateway(connection="bench", tenant_id=self.tenant_id, credential=credential(),
                             graph_base=self.entra_url, scope="https://graph.microsoft.com/.default",
                             verify=ssl.create_default_context(cafile=self.ca),
                             governor=ThrottleGovernor(tables, clock,
                                                       write_window=ThrottleGovernor.WRITE_WINDOW / self.time_scale),
                             max_concurrency=workers, max_wait=300)
        keys, anchors = VaultAuditKeys(lambda: secrets, clock), VaultAuditAnchors(lambda: secrets)
        audit = TableAuditSink(tables, clock, keys, anchors)
        directory = Directory(TableUsers(tables))
        try:
            yield World(graph, directory,
                        SyncService(directory=directory, state=TableSyncState(tables),
                                    leases=TableLeases(tables, clock), audit=audit, queue=queue, clock=clock),
                        RotationService(secrets=secrets, rotations=TableRotations(tables), audit=audit, queue=queue,
                                        clock=clock,
                                        subjects=RotationSubjects(directory)),
                        GraphPasswordDirectory(graph, own_principal_id=_constant(BRIDGE_PRINCIPAL_ID), clock=clock),
                        audit, AuditQuery(AuditReader(tables), keys, anchors, clock))
        finally:
            await audit.aclose()
            await graph.close()
            await secrets.close()
            await vault_credential.close()
            await tables.close()
            await queue.close()


async def child(config_file: Path, part: str, workers: int) -> dict[str, object]:
    """Rotate one slice of the users (a worker process)."""
    config = json.loads(await asyncio.to_thread(config_file.read_text, encoding="utf-8"))
    index, count = (int(x) for x in part.split("/"))
    targets = config.pop("targets")[index::count]
    stack = Stack(**config)
    conn = _connection(stack.tenant_id)
    outcomes: dict[str, str] = {}
    finished: list[float] = []
    async with stack.open(workers) as world:
        pending = list(targets)

        async def worker() -> None:
            while pending:
                user = pending.pop()
                # One rotation id per rotation, kept across its retries (as a queue message keeps it).
                rotation_id = f"bench-{uuid.uuid4().hex[:8]}"
                for _attempt in range(THROTTLED_RETRIES):
                    try:
                        outcome = await world.rotation.rotate(conn, world.passwords, user, rotation_id=rotation_id,
                                                              correlation_id="bench")
                        outcomes[user] = outcome.status.value
                        finished.append(time.time())
                        break
                    except BridgeError as err:
                        outcomes[user] = f"error: {err.slug}"
                        await asyncio.sleep(getattr(err, "retry_after", 1.0))

        await asyncio.gather(*(worker() for _ in range(workers)))
        return {"outcomes": outcomes, "throttled": world.graph.throttled, "finished": finished}


def _constant(value: str):  # type: ignore[no-untyped-def]
    async def get() -> str:
        return value
    return get


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=24, help="concurrent rotations per process")
    parser.add_argument("--instances", "--processes", dest="processes", type=int, default=2,
                        help="worker processes (Functions instances)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="Graph's and Key Vault's limit windows pass this many times faster")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--slice", default="0/1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(Path(args.child), args.slice, args.workers))))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        print(asyncio.run(run(args.users, args.workers, args.processes, Path(folder), args.time_scale)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
