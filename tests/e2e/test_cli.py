"""The operator's command line against Azurite, the Entra simulator and the Key Vault emulator.

Every command runs with `--json`, as a script would, and its output is parsed; the text forms are
checked where they carry something a person needs (the settings used, a refusal).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from local.entra.demo import DEMO_TENANT_ID
from local.host.process import RunningHost
from local.tls import TlsFiles
from shared import cli
from shared.topology import Queue
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

NAME = "cli"
CONNECTION = {"name": NAME, "tenantId": DEMO_TENANT_ID, "cloud": "local", "auth": {"kind": "managedIdentity"},
              "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                           "rotation": {"enabled": True, "group": "Bridge Rotation", "minIntervalMinutes": 0}}}


@pytest.fixture(scope="module")
def values(entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str,
           tls_files: TlsFiles) -> dict[str, str]:
    vault.grant(entra.identity_principal_id, "Key Vault Secrets Officer")
    return {"AzureWebJobsStorage": azurite_connection_string, "CONNECTIONS": json.dumps([CONNECTION]),
            "KEY_VAULT_URL": vault.url, "LOCAL_ENTRA_URL": entra.url, "LOCAL_CA_FILE": str(tls_files.ca),
            "SSL_CERT_FILE": str(tls_files.bundle), "IDENTITY_ENDPOINT": entra.identity_endpoint,
            "IDENTITY_HEADER": entra.identity_header}


@pytest.fixture
def env(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(scope="module", autouse=True)
def empty_queues(azurite_connection_string: str) -> Iterator[None]:
    """Messages these tests queue must not reach another module's host."""
    yield
    for queue in Queue:
        for name in (queue.value, queue.poison):
            with (QueueClient.from_connection_string(azurite_connection_string, name) as client,
                  contextlib.suppress(ResourceNotFoundError)):  # a queue no test created
                client.clear_messages()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else json.loads(out.err)


def test_sync_then_status_users_audit_and_verify(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, dry = run(capsys, "sync", "--connection", NAME, "--dry-run")
    assert code == 0, dry
    assert dry["outcome"] == "dry-run"
    code, done = run(capsys, "sync", "--connection", NAME)
    assert code == 0, done
    assert done["outcome"] == "completed"

    code, status = run(capsys, "status", "--connection", NAME)
    assert code == 0
    assert status["users"]["total"] == 160
    # The last dry run beside the last real run; counts, not ids; one casing.
    assert status["lastSync"]["runId"] == done["runId"]
    assert status["lastDryRun"]["runId"] == dry["runId"]
    assert status["lastDryRun"]["planned"]["add"] == dry["planned"]["add"] > 0
    assert "plannedIds" not in status["lastDryRun"]
    assert status["lastSync"]["details"] == f"/api/connections/{NAME}/runs/{done['runId']}"
    assert all("_" not in key for key in _keys(status)), status
    assert set(status["rotation"]) >= {"due", "refused", "rotated", "inProgress", "possiblyCurrent", "failed"}

    code, listed = run(capsys, "users", "--connection", NAME, "--top", "5")
    assert code == 0
    assert listed["count"] == 160
    assert len(listed["value"]) == 5
    upn = listed["value"][0]["userPrincipalName"]
    code, one = run(capsys, "users", "--connection", NAME, "--user", upn)
    assert code == 0
    assert one["userPrincipalName"] == upn
    assert "password" not in json.dumps(one).lower()

    code, records = run(capsys, "audit", "--connection", NAME, "--action", "sync.", "--top", "50")
    assert code == 0
    assert {r["action"] for r in records["value"]} >= {"sync.completed"}
    code, verified = run(capsys, "audit-verify", "--connection", NAME, "--days", "1")
    assert code == 0, verified


def test_status_separates_refused_users_from_due_ones(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                      entra: EntraFixture) -> None:
    run(capsys, "sync", "--connection", NAME)
    code, before = run(capsys, "status", "--connection", NAME)
    due = before["rotation"]["due"]
    code, users = run(capsys, "users", "--connection", NAME, "--top", "500")
    admin = next(u for u in users["value"] if u["userPrincipalName"].startswith("ben.lee1@"))
    code, queued = run(capsys, "rotate", "--connection", NAME, "--user", admin["userPrincipalName"])
    assert code == 0
    assert queued["status"] == "queued"
    assert queued["userId"] == admin["id"]
    # The rotation itself runs in the rotation-work function; run its use case here as the worker would.
    import asyncio

    from shared.bootstrap import Bridge
    from shared.config import load_settings
    from shared.messages import WorkMessage

    async def rotate_now() -> None:
        bridge = Bridge(load_settings())
        try:
            conn = bridge.connection(NAME)
            message = WorkMessage(connection=NAME, kind="rotate", target=admin["id"],
                                  idempotency_key=queued["rotationId"], correlation_id="cli-test")
            await bridge.rotation.handle(conn, await bridge.password_directory(conn), message, dequeue_count=1,
                                         max_dequeue_count=5)
        finally:
            await bridge.close()

    asyncio.run(rotate_now())
    code, after = run(capsys, "status", "--connection", NAME)
    assert after["rotation"]["refused"] == before["rotation"]["refused"] + 1
    assert after["rotation"]["due"] == due - 1, (before["rotation"], after["rotation"])
    refused = [p for p in after["problems"] if p["area"] == "rotation" and "refused" in p["detail"]]
    assert refused
    assert "Privileged Authentication Administrator" in refused[0]["detail"]
    assert refused[0]["fix"]


def test_poison_list_replay_and_drop(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                     azurite_connection_string: str) -> None:
    poison = QueueClient.from_connection_string(azurite_connection_string, Queue.DEVICE.poison)
    work = QueueClient.from_connection_string(azurite_connection_string, Queue.DEVICE.value)
    for client in (poison, work):
        try:
            client.create_queue()
        except Exception:
            client.clear_messages()
    bodies = [{"connection": NAME, "kind": "removeDevice", "target": f"dev-{i}", "idempotencyKey": f"k{i}",
               "correlationId": "c"} for i in range(3)]
    for body in bodies:
        poison.send_message(base64.b64encode(json.dumps(body).encode()).decode())

    code, listed = run(capsys, "poison", "list", "--queue", Queue.DEVICE.value)
    assert code == 0
    assert listed["approximateCount"] == 3
    assert [m["message"]["target"] for m in listed["value"]] == ["dev-0", "dev-1", "dev-2"]
    first, second = listed["value"][0]["id"], listed["value"][1]["id"]

    code, refused = run(capsys, "poison", "replay", "--queue", Queue.DEVICE.value)
    assert code == 2
    assert "--id" in refused["detail"]

    code, replayed = run(capsys, "poison", "replay", "--queue", Queue.DEVICE.value, "--id", first)
    assert code == 0
    assert replayed["replay"] == [first]
    back = work.receive_message()
    assert back is not None
    assert json.loads(base64.b64decode(back.content)) == bodies[0]

    # Dropping asks; without a terminal, only --yes drops.
    code, unconfirmed = run(capsys, "poison", "drop", "--queue", Queue.DEVICE.value, "--id", second)
    assert code == 2
    assert "--yes" in unconfirmed["detail"]
    code, dropped = run(capsys, "poison", "drop", "--queue", Queue.DEVICE.value, "--id", second, "--id", "nope",
                        "--yes")
    assert code == 1
    assert dropped["drop"] == [second]
    assert dropped["notFound"] == ["nope"]
    code, rest = run(capsys, "poison", "list", "--queue", Queue.DEVICE.value)
    assert [m["message"]["target"] for m in rest["value"]] == ["dev-2"]

    code, records = run(capsys, "audit", "--connection", NAME, "--action", "poison.", "--top", "50")
    assert {r["action"] for r in records["value"]} == {"poison.replayed", "poison.dropped"}
    poison.close()
    work.close()


def test_doctor_and_uninstall_groups(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run(capsys, "doctor", "--connection", NAME)
    assert report["token"]["obtained"] is True, report
    code, unconfirmed = run(capsys, "uninstall-groups", "--connection", NAME)
    assert code == 2
    assert "--yes" in unconfirmed["detail"]
    code, done = run(capsys, "uninstall-groups", "--connection", NAME, "--yes")
    assert code == 0
    assert done["deleted"] == []


def test_unknown_connection_is_a_problem_naming_the_setting(env: dict[str, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, problem = run(capsys, "status", "--connection", "nobody")
    assert code == 2
    assert "CONNECTIONS" in problem["detail"]


def test_settings_of_a_running_make_run_are_found_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           values: dict[str, str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in cli.STORAGE_SETTINGS}
    monkeypatch.setattr(os, "environ", environment)
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "Values": {"CONNECTIONS": values["CONNECTIONS"], "LOG_LEVEL": "INFO"}, "MasterKey": "k"}))
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack-env.json").write_text(json.dumps(
        {k: v for k, v in values.items() if k != "CONNECTIONS"}))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["status", "--connection", NAME])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "settings: local.settings.json and .local/stack-env.json" in out.err
    assert f"connection {NAME}" in out.out
    assert "problems:" in out.out
    assert str(tmp_path) not in out.err


def test_timers_need_a_host(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LOCAL_FUNCTIONS_URL", raising=False)
    code, problem = run(capsys, "timers", "run", "sync_timer")
    assert code == 2
    assert problem["setting"] == "--host"


def test_timers_run_starts_a_timer_through_the_hosts_admin_api(function_host: Any, env: dict[str, str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    host: RunningHost = function_host(values={**env, "SYNC_SCHEDULE": "0 0 0 1 1 *",
                                              "ROTATION_SCHEDULE": "0 0 0 1 1 *"})
    code, before = run(capsys, "status", "--connection", NAME)
    previous = (before.get("lastSync") or {}).get("runId")
    # `--opt=value`: a generated key may begin with "-", which argparse would read as an option.
    code, started = run(capsys, "timers", "run", "sync_timer", "--host", host.url,
                        f"--master-key={host.master_key}")
    assert code == 0, started
    assert started == {"function": "sync_timer", "status": "started"}
    # The timer queues a run; the host's sync_work carries it out.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, status = run(capsys, "status", "--connection", NAME)
        last = status.get("lastSync") or {}
        if last.get("runId") not in (None, previous) and last.get("outcome") == "completed":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no sync completed after sync_timer ran: {status}")
    code, refused = run(capsys, "timers", "run", "sync_timer", "--host", host.url, "--master-key=wrong")
    assert code == 2
    assert refused["setting"] == "FUNCTIONS_MASTER_KEY"


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)
