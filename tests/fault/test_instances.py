"""Several host instances on one Azurite, simulator and vault: real processes, killed for real.

- An instance killed with SIGKILL in the middle of rotations loses nothing: its messages come back once
  their lease lapses and the other instance finishes them; every password Entra holds is one the vault
  hands a device, and no rotation completes twice (a smaller round of `python -m bench.host_kills`).
- An instance killed with SIGKILL in the middle of a connection's first sync: the run is finished by
  another instance (the same run id takes its lease back), every user is imported, and the run
  completes once.
- An instance killed with SIGKILL in the middle of a device removal (one of its four passkeys revoked in
  Entra): another instance finishes the operation; every passkey is gone from Entra, each is audited and
  announced as revoked once, the operation completes with 4 of 4 and the device is removed.
- Two instances given the same connection's sync work at once (each taking one message at a time, so
  both hold one) run one sync at a time: the lease refuses the second and its message comes back later;
  every run completes, and the work is done once: the users are added once, whatever the number of runs
  and deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
from pathlib import Path
from typing import Any

from bench.host_kills import DEMO_SYNC_USERS, connection, exercise, host_values, removal_exercise, sync_exercise
from bench.rotation import Stack
from local.host.process import running_instances, write_settings
from shared.adapters.audit import AuditReader
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.tables import TableEntityStore
from shared.messages import WorkMessage
from shared.topology import Queue
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture


def _stack(entra: EntraFixture, vault: VaultFixture, storage: str, tls_files: Any) -> Stack:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    vault.grant(entra.principal_id, "Key Vault Secrets Officer")
    return Stack(entra.tenant_id, entra.url, vault.url, storage, str(tls_files.ca))


async def test_an_instance_killed_mid_rotation_loses_no_password(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        tmp_path: Path) -> None:
    stack = _stack(entra, vault, azurite_connection_string, tls_files)
    conn = connection(entra.tenant_id, f"k{random.randrange(10**6)}")
    report = await exercise(stack, conn, tls=tls_files, entra_admin=entra.admin,
                            identity_endpoint=entra.identity_endpoint, identity_header=entra.identity_header,
                            folder=tmp_path, instances=2, kills=1, lease=3.0)
    assert report.kills == 1, report.line()
    assert report.in_flight_at_kill[0] >= 2, report.line()
    assert report.ok, report.line()
    assert report.rotations == 30


async def test_an_instance_killed_mid_sync_leaves_the_run_to_another(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        tmp_path: Path) -> None:
    stack = _stack(entra, vault, azurite_connection_string, tls_files)
    conn = connection(entra.tenant_id, f"y{random.randrange(10**6)}")
    report = await sync_exercise(stack, conn, tls=tls_files, entra_admin=entra.admin,
                                 identity_endpoint=entra.identity_endpoint, identity_header=entra.identity_header,
                                 folder=tmp_path, users=DEMO_SYNC_USERS, lease=3.0)
    assert report.ok, report.line()


async def test_an_instance_killed_mid_device_removal_leaves_the_revocations_to_another(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        tmp_path: Path) -> None:
    stack = _stack(entra, vault, azurite_connection_string, tls_files)
    conn = connection(entra.tenant_id, f"d{random.randrange(10**6)}")
    report = await removal_exercise(stack, conn, tls=tls_files, entra_admin=entra.admin,
                                    identity_endpoint=entra.identity_endpoint, identity_header=entra.identity_header,
                                    folder=tmp_path, passkeys=4, lease=3.0)
    assert report.ok, report.line()


async def test_two_instances_run_one_sync_per_connection_and_do_the_work_once(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        tmp_path: Path) -> None:
    stack = _stack(entra, vault, azurite_connection_string, tls_files)
    conn = connection(entra.tenant_id, f"s{random.randrange(10**6)}")
    key, master = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    values = host_values(conn, stack, tls=tls_files, identity_endpoint=entra.identity_endpoint,
                         identity_header=entra.identity_header, lease=10.0)
    values["AzureFunctionsJobHost__extensions__queues__batchSize"] = "1"
    settings = write_settings(tmp_path / "settings.json", values, function_key=key, master_key=master)
    queue = StorageWorkQueue.from_connection_string(azurite_connection_string)
    # Three runs requested at once, and one of them delivered twice (at-least-once delivery).
    runs = [f"sync-{secrets.token_hex(6)}" for _ in range(3)]
    messages = [WorkMessage(connection=conn.name, kind="sync", target=conn.name, idempotency_key=run,
                            correlation_id=f"c-{run}", args={"actor": "test"}) for run in [*runs, runs[0]]]
    try:
        with running_instances(2, settings_file=settings, function_key=key, log_dir=tmp_path,
                               master_key=master) as hosts:
            for message in messages:
                await queue.send(Queue.SYNC, message.model_dump(mode="json", by_alias=True))
            finished = await _wait_for_runs(azurite_connection_string, conn.name, set(runs), patience=120)
    finally:
        await queue.close()
    logs = [h.process.log_path.read_text(errors="replace") for h in hosts]
    # Both instances took sync work, and runs were refused while another held the connection's lease.
    assert all(f"{conn.name}" in text for text in logs)
    refused = sum(text.count(f"a sync of '{conn.name}'") for text in logs)
    assert refused >= 1, "no run was refused by the lease: the runs did not meet"
    added = [int(r.detail.get("added", 0)) for r in finished if r.action == "sync.completed"]
    assert sum(added) == max(added) > 0, f"users added more than once: {added}"
    # Every requested run completed, each once (the duplicate delivery did not run it twice at the same time).
    assert {r.detail["runId"] for r in finished if r.action == "sync.completed"} == set(runs)


async def _wait_for_runs(storage: str, connection_name: str, runs: set[str], *, patience: float) -> list[Any]:
    tables = TableEntityStore.from_connection_string(storage)
    today = dt.datetime.now(dt.UTC).date()
    try:
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            records = [r async for r in AuditReader(tables).records(connection_name, today, today)]
            done = {r.detail.get("runId") for r in records if r.action == "sync.completed"}
            if runs <= done or asyncio.get_running_loop().time() > deadline:
                return records
            await asyncio.sleep(0.5)
    finally:
        await tables.close()
