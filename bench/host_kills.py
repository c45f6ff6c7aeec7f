"""Host processes killed outright (SIGKILL) in the middle of rotations: another instance finishes the work.

    python -m bench.host_kills [--during rotation|sync|removal] [--instances 2] [--kills 1] [--lease 4]

Starts Azurite, the Entra simulator (demo tenant) and the Key Vault emulator, imports the demo
connection's users with the real sync, then runs `--instances` local hosts (`local.host`, each its own
process and port, sharing the queues) and queues one rotation per rotation-group user. Graph's password
writes are slowed (injected latency) so that rotations are in flight; then the instance holding the
most work is killed with SIGKILL, `--kills` times, each time once rotations are under way again. Its
messages become visible again once their lease (`LOCAL_HOST_MESSAGE_LEASE_SECONDS`, `--lease`) lapses,
and the surviving instances finish them. One summary line: the seconds from the last kill to every
rotation recorded, rotations lost (the password Entra holds is not one the vault hands a device),
rotations completed twice, and the ratio of convergence time to its goal (the lease plus 30 s).
`--during sync` kills the instance running a connection's first (full) sync instead, once the run
holds the connection's lease, and starts another instance as the platform would: the run is finished
by it (the same run id takes its own lease back), every user is imported, and the run completes once.
`--during removal` registers a device with four passkeys through the API (the software authenticator),
removes it, and kills the instance revoking them once one is revoked (Graph's deletions slowed); another
instance finishes: every passkey gone from Entra, each audited and announced once, the operation
`completed` and the device removed.
`make test` runs one kill of two instances during rotations, one during a sync and one during a device
removal (tests/fault/test_instances.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.rotation import Stack
from local.entra.demo import BRIDGE_PRINCIPAL_ID, IDENTITY_PRINCIPAL_ID
from local.host.process import RunningHost, running_instances, write_settings
from local.tls import TlsFiles
from shared.adapters.audit import AuditReader
from shared.adapters.events import TableEventOutbox
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.leases import TableLeases
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.syncstate import TableSyncState
from shared.adapters.tables import TableEntityStore
from shared.config import Connection
from shared.domain.events import EventType
from shared.messages import WorkMessage
from shared.services.rotation import Status
from shared.topology import Queue

#: Users in the demo tenant's sync groups (nested).
DEMO_SYNC_USERS = 160
#: A rotation is done when it rotated the password or was refused by policy (the demo tenant's admins).
FINAL = (Status.ROTATED, Status.REFUSED)
#: Injected latency of Graph's password write, so that a kill lands while rotations are in flight.
SLOW_PASSWORD_WRITES = {"routes": [{"path": r"^/users/[^/]+$", "method": "PATCH", "latencyMs": 1200}]}


def connection(tenant_id: str, name: str) -> Connection:
    """A connection to the simulator's demo tenant signing in as the host's managed identity."""
    return Connection.model_validate({
        "name": name, "tenantId": tenant_id, "cloud": "local", "auth": {"kind": "managedIdentity"},
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                     "rotation": {"enabled": True, "group": "Bridge Rotation", "minIntervalMinutes": 0,
                                  "keepSuperseded": 1}}})


def host_values(conn: Connection, stack: Stack, *, tls: TlsFiles, identity_endpoint: str, identity_header: str,
                lease: float) -> dict[str, str]:
    """App settings of every instance: the same storage, simulator and vault; timers that never fire."""
    return {"AzureWebJobsStorage": stack.storage, "KEY_VAULT_URL": stack.vault_url, "LOCAL_ENTRA_URL": stack.entra_url,
            "CONNECTIONS": json.dumps([conn.model_dump(mode="json", by_alias=True, exclude_none=True)]),
            "LOCAL_CA_FILE": str(tls.ca), "SSL_CERT_FILE": str(tls.bundle), "REQUESTS_CA_BUNDLE": str(tls.bundle),
            "IDENTITY_ENDPOINT": identity_endpoint, "IDENTITY_HEADER": identity_header,
            "SYNC_SCHEDULE": "0 0 0 1 1 *", "ROTATION_SCHEDULE": "0 0 0 1 1 *", "FEDERATION_SCHEDULE": "0 0 0 1 1 *",
            "LOCAL_HOST_MESSAGE_LEASE_SECONDS": str(lease), "LOG_FORMAT": "json",
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01"}


@dataclass
class KillReport:
    """What the exercise found."""

    rotations: int = 0
    kills: int = 0
    in_flight_at_kill: list[int] = field(default_factory=list)
    converged_seconds: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    completed_twice: list[str] = field(default_factory=list)
    lease: float = 4.0

    @property
    def goal_seconds(self) -> float:
        """Convergence goal: the message lease (when the killed work is visible again) plus 30 s."""
        return self.lease + 30.0

    @property
    def ok(self) -> bool:
        """Every rotation done, none lost, none completed twice, within the goal."""
        return (self.converged_seconds is not None and self.converged_seconds <= self.goal_seconds
                and not self.lost and not self.completed_twice
                and sum(self.statuses.get(s.value, 0) for s in FINAL) == self.rotations)

    def line(self) -> str:
        """The summary line."""
        took = f"{self.converged_seconds:.1f} s" if self.converged_seconds is not None else "never"
        ratio = (self.converged_seconds / self.goal_seconds) if self.converged_seconds is not None else float("inf")
        return (f"host kills: {self.rotations} rotations, {self.kills} SIGKILLs (rotations in flight at each: "
                f"{self.in_flight_at_kill}); converged {took} after the last kill (goal {self.goal_seconds:.0f} s, "
                f"ratio {ratio:.2f}); {dict(sorted(self.statuses.items()))}; lost {len(self.lost)}, completed twice "
                f"{len(self.completed_twice)} -> {'PASS' if self.ok else 'FAIL'}")


def kill(host: RunningHost) -> None:
    """SIGKILL the instance's whole process group: no shutdown, no flush, nothing finished."""
    proc = host.process.proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def exercise(stack: Stack, conn: Connection, *, tls: TlsFiles, entra_admin: Callable[..., Any],
                   identity_endpoint: str, identity_header: str, folder: Path, instances: int = 2, kills: int = 1,
                   lease: float = 4.0, patience: float = 120.0) -> KillReport:
    """Sync, then rotate every rotation-group user through `instances` hosts while killing them; check."""
    report = KillReport(lease=lease)
    async with stack.open(8) as world:
        await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=f"sync-{uuid.uuid4().hex[:8]}",
                             correlation_id="host-kills")
        users = [row.id async for row in world.directory.all(conn.name) if row.in_rotation_group]
        report.rotations = len(users)
        rotation_ids = {u: f"kill-{uuid.uuid4().hex[:10]}" for u in users}
        before = {u: entra_admin("GET", f"/_sim/users/{u}/password").get("password") for u in users}
        key, master = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
        settings = write_settings(folder / f"settings-{conn.name}.json", host_values(
            conn, stack, tls=tls, identity_endpoint=identity_endpoint, identity_header=identity_header, lease=lease),
            function_key=key, master_key=master)
        queue = StorageWorkQueue.from_connection_string(stack.storage)
        entra_admin("PUT", "/_sim/faults", SLOW_PASSWORD_WRITES)
        try:
            with running_instances(instances, settings_file=settings, function_key=key, log_dir=folder / conn.name,
                                   master_key=master) as hosts:
                for user, rotation_id in rotation_ids.items():
                    await queue.send(Queue.ROTATION, WorkMessage(
                        connection=conn.name, kind="rotate", target=user, idempotency_key=rotation_id,
                        correlation_id=f"c-{rotation_id}").model_dump(mode="json", by_alias=True))
                alive = list(hosts)
                last_kill = time.monotonic()
                for _ in range(min(kills, instances - 1)):
                    in_flight = await _wait_in_flight(world.rotation, conn, patience)
                    victim = max(alive, key=lambda h: _busy(h))
                    kill(victim)
                    alive.remove(victim)
                    last_kill = time.monotonic()
                    report.kills += 1
                    report.in_flight_at_kill.append(in_flight)
                deadline = last_kill + patience
                while time.monotonic() < deadline:
                    done = 0
                    for user, rotation_id in rotation_ids.items():
                        row, _ = await world.rotation.status_row(conn.name, user)
                        done += row.last_rotation_id == rotation_id and row.status in FINAL
                    if done == len(users):
                        report.converged_seconds = time.monotonic() - last_kill
                        break
                    await asyncio.sleep(0.5)
        finally:
            entra_admin("PUT", "/_sim/faults", {})
            await queue.close()
        statuses: collections.Counter[str] = collections.Counter()
        for user, rotation_id in rotation_ids.items():
            row, _ = await world.rotation.status_row(conn.name, user)
            statuses[row.status.value if row.last_rotation_id == rotation_id and row.status else "not done"] += 1
            held = entra_admin("GET", f"/_sim/users/{user}/password").get("password")
            if held is None or held == before[user]:
                continue  # no password was set (refused by policy)
            delivered = await world.rotation.read_for_device(conn, user)
            if held not in {delivered.password, *(p for _, p in delivered.possibly_current)}:
                report.lost.append(user)
        report.statuses = dict(statuses)
    tables = TableEntityStore.from_connection_string(stack.storage)
    try:
        today = dt.datetime.now(dt.UTC).date()
        completed = collections.Counter([
            str(r.detail.get("rotationId")) async for r in AuditReader(tables).records(conn.name, today, today)
            if r.action == "rotation.completed"])
    finally:
        await tables.close()
    report.completed_twice = sorted(r for r, n in completed.items() if n > 1)
    return report


#: Injected latency of every Graph read, so that a full sync of the demo tenant lasts several seconds.
SLOW_READS = {"routes": [{"path": ".", "method": "GET", "latencyMs": 400}]}


@dataclass
class SyncKillReport:
    """What the sync exercise found."""

    users: int = 0
    imported: int = 0
    completed_runs: int = 0
    converged_seconds: float | None = None
    lease: float = 4.0
    #: Whether the run had not finished when its instance was killed.
    killed_mid_run: bool = False

    @property
    def ok(self) -> bool:
        """The run finished once, by another instance, with every user imported."""
        return (self.killed_mid_run and self.converged_seconds is not None
                and self.converged_seconds <= self.lease + 60 and self.imported == self.users
                and self.completed_runs == 1)

    def line(self) -> str:
        """The summary line."""
        took = f"{self.converged_seconds:.1f} s" if self.converged_seconds is not None else "never"
        ratio = (self.converged_seconds / (self.lease + 60)) if self.converged_seconds is not None else float("inf")
        when = "mid-run" if self.killed_mid_run else "AFTER it ended"
        return (f"host kills: a sync killed {when} (SIGKILL) finished by another instance {took} after the kill "
                f"(goal {self.lease + 60:.0f} s, ratio {ratio:.2f}); users imported {self.imported} of {self.users}; "
                f"run completed {self.completed_runs} time(s) -> {'PASS' if self.ok else 'FAIL'}")


async def sync_exercise(stack: Stack, conn: Connection, *, tls: TlsFiles, entra_admin: Callable[..., Any],
                        identity_endpoint: str, identity_header: str, folder: Path, users: int,
                        lease: float = 4.0, patience: float = 120.0) -> SyncKillReport:
    """Kill the instance running a full sync once it holds the lease; another instance finishes the run."""
    from local.host.process import instance_environment, running

    report = SyncKillReport(users=users, lease=lease)
    run_id = f"sync-{uuid.uuid4().hex[:12]}"
    key, master = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    settings = write_settings(folder / f"settings-{conn.name}.json", host_values(
        conn, stack, tls=tls, identity_endpoint=identity_endpoint, identity_header=identity_header, lease=lease),
        function_key=key, master_key=master)
    queue = StorageWorkQueue.from_connection_string(stack.storage)
    tables = TableEntityStore.from_connection_string(stack.storage)
    leases, state = TableLeases(tables, _WallClock()), TableSyncState(tables)
    entra_admin("PUT", "/_sim/faults", SLOW_READS)
    try:
        with contextlib.ExitStack() as hosts:
            first = hosts.enter_context(running(settings_file=settings, function_key=key, master_key=master,
                                                log_path=folder / conn.name / "host-0.log",
                                                env=instance_environment(0)))
            await queue.send(Queue.SYNC, WorkMessage(connection=conn.name, kind="sync", target=conn.name,
                                                     idempotency_key=run_id, correlation_id=f"c-{run_id}",
                                                     args={"actor": "host-kills"}).model_dump(
                mode="json", by_alias=True))
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline:
                held = await leases.holder("sync", conn.name)
                if held is not None and held.owner == run_id:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # well into the read
            kill(first)
            last = await state.last_run(conn.name)
            report.killed_mid_run = last is None or last.get("runId") != run_id
            killed = time.monotonic()
            hosts.enter_context(running(settings_file=settings, function_key=key, master_key=master,
                                        log_path=folder / conn.name / "host-1.log", env=instance_environment(1)))
            while time.monotonic() < killed + patience:
                last = await state.last_run(conn.name)
                if last is not None and last.get("runId") == run_id and last.get("outcome") == "completed":
                    report.converged_seconds = time.monotonic() - killed
                    break
                await asyncio.sleep(0.5)
    finally:
        entra_admin("PUT", "/_sim/faults", {})
        await queue.close()
    try:
        async with stack.open(4) as world:
            report.imported = len([row async for row in world.directory.all(conn.name) if row.active])
        today = dt.datetime.now(dt.UTC).date()
        report.completed_runs = len([r async for r in AuditReader(tables).records(conn.name, today, today)
                                     if r.action == "sync.completed" and r.detail.get("runId") == run_id])
    finally:
        await tables.close()
    return report


class _WallClock:
    """The time now, for the leases adapter."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


#: Injected latency of Graph's passkey deletions, so that a kill lands while a device's passkeys are revoked.
SLOW_REVOCATIONS = {"routes": [{"path": r"/authentication/fido2Methods/", "method": "DELETE", "latencyMs": 1500}]}


@dataclass
class RemovalKillReport:
    """What the device-removal exercise found."""

    passkeys: int = 0
    #: Passkeys the operation counted as revoked when its instance was killed.
    done_at_kill: int = -1
    status: str = ""
    done: int = 0
    device_state: str = ""
    left_in_entra: int = -1
    #: passkey.revoked audit records and events per passkey, and device.removed audit records.
    audited: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    removed_audited: int = 0
    converged_seconds: float | None = None
    lease: float = 4.0

    @property
    def ok(self) -> bool:
        """Killed mid-removal, finished by another instance: every passkey revoked once, the device removed."""
        return (1 <= self.done_at_kill < self.passkeys and self.converged_seconds is not None
                and self.converged_seconds <= self.lease + 30 and self.status == "completed"
                and self.done == self.passkeys and self.device_state == "removed" and self.left_in_entra == 0
                and len(self.audited) == len(self.events) == self.passkeys
                and set(self.audited.values()) == set(self.events.values()) == {1} and self.removed_audited == 1)

    def line(self) -> str:
        """The summary line."""
        took = f"{self.converged_seconds:.1f} s" if self.converged_seconds is not None else "never"
        ratio = (self.converged_seconds / (self.lease + 30)) if self.converged_seconds is not None else float("inf")
        return (f"host kills: a device removal killed (SIGKILL) with {self.done_at_kill} of {self.passkeys} passkeys "
                f"revoked, finished by another instance {took} after the kill (goal {self.lease + 30:.0f} s, ratio "
                f"{ratio:.2f}); operation {self.status or 'missing'} ({self.done}/{self.passkeys}), device "
                f"{self.device_state}, left in Entra {self.left_in_entra}; passkey.revoked audited "
                f"{sorted(self.audited.values())}, events {sorted(self.events.values())}, device.removed audited "
                f"{self.removed_audited} -> {'PASS' if self.ok else 'FAIL'}")


async def removal_exercise(stack: Stack, conn: Connection, *, tls: TlsFiles, entra_admin: Callable[..., Any],
                           identity_endpoint: str, identity_header: str, folder: Path, passkeys: int = 4,
                           lease: float = 4.0, patience: float = 60.0) -> RemovalKillReport:
    """Register a device with `passkeys` passkeys through the API, remove it, kill the instance revoking them
    once one is revoked, start another: it finishes the removal."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    from local.authenticator import SoftwareAuthenticator
    from local.host.process import instance_environment, running

    report = RemovalKillReport(passkeys=passkeys, lease=lease)
    conn = conn.model_copy(update={"features": conn.features.model_copy(update={
        "passkeys": conn.features.passkeys.model_copy(update={"enabled": True})})})
    async with stack.open(4) as world:
        await world.sync.run(conn, GraphDirectoryReader(world.graph), run_id=f"sync-{uuid.uuid4().hex[:8]}",
                             correlation_id="host-kills")
        user = next(iter([row async for row in world.directory.all(conn.name) if row.active]))
    device = f"dev-{uuid.uuid4().hex[:10]}"
    key, master = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    settings = write_settings(folder / f"settings-{conn.name}.json", host_values(
        conn, stack, tls=tls, identity_endpoint=identity_endpoint, identity_header=identity_header, lease=lease),
        function_key=key, master_key=master)
    base = f"/api/connections/{conn.name}"
    methods: set[str] = set()
    try:
        with contextlib.ExitStack() as hosts:
            first = hosts.enter_context(running(settings_file=settings, function_key=key, master_key=master,
                                                log_path=folder / conn.name / "host-0.log",
                                                env=instance_environment(0)))
            async with httpx.AsyncClient(base_url=first.url, headers={"x-functions-key": key}, timeout=60) as http:
                jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
                put = await http.put(f"{base}/devices/{device}", json={
                    "user": user.id, "displayName": "kill test", "publicKey": jwk})
                put.raise_for_status()
                for k in range(passkeys):
                    options = (await http.post(f"{base}/devices/{device}/passkeys/options")).raise_for_status().json()
                    credential = SoftwareAuthenticator(fmt="packed-self").register(options)
                    made = await http.post(f"{base}/devices/{device}/passkeys", json={
                        "ceremonyId": options["ceremonyId"], "displayName": f"key {k}", "credential": credential})
                    made.raise_for_status()
                    methods.add(str(made.json()["id"]))
                entra_admin("PUT", "/_sim/faults", SLOW_REVOCATIONS)
                removal = (await http.delete(f"{base}/devices/{device}")).raise_for_status().json()
                operation = f"{base}/operations/{removal['operationId']}"
                deadline = time.monotonic() + patience
                while time.monotonic() < deadline:
                    progress = (await http.get(operation)).json()
                    report.done_at_kill = int(progress.get("done", 0))
                    if report.done_at_kill >= 1 or progress.get("status") == "completed":
                        break
                    await asyncio.sleep(0.1)
            kill(first)
            killed = time.monotonic()
            second = hosts.enter_context(running(settings_file=settings, function_key=key, master_key=master,
                                                 log_path=folder / conn.name / "host-1.log",
                                                 env=instance_environment(1)))
            async with httpx.AsyncClient(base_url=second.url, headers={"x-functions-key": key}, timeout=60) as http:
                while time.monotonic() < killed + patience:
                    progress = (await http.get(operation)).json()
                    if progress.get("status") == "completed":
                        report.converged_seconds = time.monotonic() - killed
                        break
                    await asyncio.sleep(0.3)
                report.status, report.done = str(progress.get("status")), int(progress.get("done", 0))
                report.device_state = str((await http.get(f"{base}/devices/{device}")).json().get("state"))
    finally:
        entra_admin("PUT", "/_sim/faults", {})
    left = entra_admin("GET", f"/_sim/users/{user.id}/fido2")["methods"]
    report.left_in_entra = len([m for m in left if m.get("id") in methods])
    tables = TableEntityStore.from_connection_string(stack.storage)
    try:
        today = dt.datetime.now(dt.UTC).date()
        records = [r async for r in AuditReader(tables).records(conn.name, today, today)
                   if r.detail.get("device") == device]
        report.audited = dict(collections.Counter(str(r.detail.get("method")) for r in records
                                                  if r.action == "passkey.revoked"))
        report.removed_audited = sum(r.action == "device.removed" for r in records)
        # Every event recorded: those still waiting for the publisher and those in the feed, once per id.
        outbox = TableEventOutbox(tables, _WallClock())
        recorded = {p.event.id: p.event for p in await outbox.pending(conn.name, 10_000)}
        recorded.update({i.event.id: i.event for i in await outbox.feed(conn.name, 0, 10_000)})
        report.events = dict(collections.Counter(str(e.data["passkeyId"]) for e in recorded.values()
                                                 if e.type is EventType.PASSKEY_REVOKED
                                                 and e.data.get("deviceId") == device))
    finally:
        await tables.close()
    return report


def _busy(host: RunningHost) -> int:
    """How many rotations the instance has started, from its log (the one with the most is killed)."""
    try:
        return host.process.log_path.read_text(errors="replace").count("rotation.attempt")
    except OSError:
        return 0


async def _wait_in_flight(rotation: Any, conn: Connection, patience: float) -> int:
    """Wait until rotations are in progress (a lease held mid-rotation); returns how many."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        counts = await rotation.counts(conn)
        if counts.get(Status.IN_PROGRESS.value, 0) >= 2:
            return int(counts[Status.IN_PROGRESS.value])
        await asyncio.sleep(0.2)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the exercise on a fresh stack and print its line."""
    from local.entra.process import running as entra_running
    from local.servers import azurite
    from local.tls import ensure_tls
    from local.vault.process import running as vault_running

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--during", choices=["rotation", "sync", "removal"], default="rotation")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--kills", type=int, default=1, help="instances killed (at most instances - 1)")
    parser.add_argument("--lease", type=float, default=4.0, help="LOCAL_HOST_MESSAGE_LEASE_SECONDS of the hosts")
    args = parser.parse_args(argv)
    tls = ensure_tls()
    header = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with azurite(folder / "azurite", folder / "azurite.log") as storage, \
                entra_running(data_dir=folder / "entra", log_path=folder / "entra.log",
                              identity_header=header) as sim, \
                vault_running(data_dir=folder / "vault", authority=sim.url, tenant=sim.tenant_id, admin=True,
                              log_path=folder / "vault.log", tls=tls) as kv:
            for principal in (BRIDGE_PRINCIPAL_ID, IDENTITY_PRINCIPAL_ID):
                kv.grant(principal, "Key Vault Secrets Officer")
            stack = Stack(sim.tenant_id, sim.url, kv.url, storage, str(tls.ca))
            conn = connection(sim.tenant_id, "kills")
            options: dict[str, Any] = {"tls": tls, "entra_admin": sim.admin, "identity_header": header,
                                       "identity_endpoint": f"{sim.url}/msi/token", "folder": folder,
                                       "lease": args.lease}
            report: KillReport | SyncKillReport | RemovalKillReport
            if args.during == "removal":
                report = asyncio.run(removal_exercise(stack, conn, **options))
            elif args.during == "sync":
                report = asyncio.run(sync_exercise(stack, conn, users=DEMO_SYNC_USERS, **options))
            else:
                report = asyncio.run(exercise(stack, conn, instances=args.instances, kills=args.kills, **options))
    print(report.line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
