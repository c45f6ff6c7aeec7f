"""Operator commands: `python -m shared.cli doctor|sync|uninstall-groups|audit-verify --connection NAME`.

They read the same app settings as the function app (environment, or `--settings` pointing at a
local.settings.json) and use the same services, so what they show is what the app would do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.adapters.directory import GraphDirectoryReader
from shared.bootstrap import Bridge
from shared.config import load_settings
from shared.errors import BridgeError
from shared.services.connections import ConnectionTester
from shared.services.directory import Directory
from shared.services.sync import SyncService


def _load_local_settings(path: str | None, env_file: str | None = None) -> None:
    if env_file and Path(env_file).exists():
        for key, value in json.loads(Path(env_file).read_text(encoding="utf-8")).items():
            os.environ.setdefault(str(key), str(value))
    if not path:
        return
    values = json.loads(Path(path).read_text(encoding="utf-8")).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _progress(phase: str, done: int, total: int) -> None:
    if total:
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{phase:6} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
    else:
        sys.stderr.write(f"\r{phase:6} {done} users read")
    sys.stderr.flush()


async def doctor(bridge: Bridge, name: str, as_json: bool) -> int:
    """Print the connection test as a table (or JSON)."""
    conn = bridge.connection(name)
    gateway = await bridge.graph(conn)
    report = await ConnectionTester(gateway, gateway.token_claims).test(conn)
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
        return 0 if report.ok else 1
    print(f"connection {conn.name} (tenant {conn.tenant_id}, cloud {conn.cloud.value})")
    token = report.token
    print(f"token: {'obtained' if token.get('obtained') else 'FAILED'}; app {token.get('appId')}; "
          f"service principal {token.get('servicePrincipal')}")
    print(f"one read: {'ok' if report.read.get('ok') else 'FAILED'} {report.read.get('organization') or ''}")
    print(f"directory roles: {', '.join(token.get('directoryRoles', [])) or 'none'}")
    rows = [["feature", "status", "granted", "missing"]]
    for feature in report.features:
        missing = [*feature["missing"], *feature["roles_missing"]]
        rows.append([feature["feature"], "ok" if feature["ok"] else "MISSING",
                     ", ".join([*feature["granted"], *feature["roles_held"]]) or "-", ", ".join(missing) or "-"])
    if len(rows) > 1:
        print(_table(rows))
    for feature in report.features:
        for fix in feature["remediation"]:
            print(f"fix ({feature['feature']}): {fix}")
    if report.tenant_settings:
        print("tenant settings: " + json.dumps(report.tenant_settings))
    for problem in report.problems:
        print(f"problem: {problem}")
    print("result: " + ("OK" if report.ok else "PROBLEMS FOUND"))
    return 0 if report.ok else 1


async def sync(bridge: Bridge, name: str, dry_run: bool) -> int:
    """Run one sync now, in this process, with a progress bar."""
    conn = bridge.connection(name)
    service = SyncService(directory=Directory(bridge.entities), entities=bridge.entities, audit=bridge.audit,
                          queue=bridge.queue, clock=bridge.clock,
                          secrets=bridge.secrets if bridge.settings.key_vault_url else None)
    reader = GraphDirectoryReader(await bridge.graph(conn))
    report = await service.run(conn, reader, run_id=f"cli-{uuid.uuid4().hex[:8]}", correlation_id=str(uuid.uuid4()),
                               dry_run=dry_run, progress=_progress)
    sys.stderr.write("\n")
    print(f"sync {report.outcome}: added {report.added}, updated {report.updated}, removed {report.removed}, "
          f"unchanged {report.unchanged}, errors {report.errors}, ~{report.resource_units} RU, "
          f"{report.duration_seconds:.1f} s")
    if report.alert:
        print(f"alert: {report.alert}")
    return 0 if report.outcome in ("completed", "dry-run") else 1


async def uninstall_groups(bridge: Bridge, name: str) -> int:
    """Delete the enrollment-state groups the bridge created in Entra (never groups it found)."""
    conn = bridge.connection(name)
    service = SyncService(directory=Directory(bridge.entities), entities=bridge.entities, audit=bridge.audit,
                          queue=bridge.queue, clock=bridge.clock)
    writer = GraphDirectoryReader(await bridge.graph(conn))
    deleted = await service.enrollment_groups.uninstall(conn, writer, correlation_id=str(uuid.uuid4()),
                                                        actor=f"cli:{os.environ.get('USER', 'operator')}")
    print(f"deleted {len(deleted)} enrollment-state group(s) the bridge created: {', '.join(deleted) or 'none'}")
    if conn.features.passkeys.enabled:
        print("note: features.passkeys.enabled is still true: the next sync creates the groups again")
    return 0


async def audit_verify(bridge: Bridge, name: str, days: int) -> int:
    """Verify the audit chains and their anchors of the last `days` days; each finding on its own line."""
    today = bridge.clock.now().astimezone(dt.UTC).date()
    report = await bridge.audit_query.verify(name, today - dt.timedelta(days=days - 1), today)
    for finding in report.findings:
        print(f"FOUND {finding.describe()}")
    window = int(report.window.total_seconds())
    since = f" (since {report.window_from:%Y-%m-%d %H:%M:%S} UTC)" if report.window_from and window else ""
    print(f"not yet anchored: {window} s{since}; records written in that window could be cut unnoticed")
    if report.findings:
        print(f"audit NOT intact: {len(report.findings)} finding(s); {report.checked} records in {report.chains} "
              "chains checked")
        return 1
    print(f"audit intact: {report.checked} records in {report.chains} chains checked")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="a local.settings.json whose Values fill in unset app settings")
    parser.add_argument("--env-file", help="a JSON object of environment variables (make run writes one)")
    commands = parser.add_subparsers(dest="command", required=True)
    p_doctor = commands.add_parser("doctor", help="test a connection and report missing permissions and roles")
    p_doctor.add_argument("--connection", required=True)
    p_doctor.add_argument("--json", action="store_true")
    p_sync = commands.add_parser("sync", help="run a sync of one connection now")
    p_sync.add_argument("--connection", required=True)
    p_sync.add_argument("--dry-run", action="store_true")
    p_uninstall = commands.add_parser("uninstall-groups",
                                      help="delete the enrollment-state groups the bridge created in Entra")
    p_uninstall.add_argument("--connection", required=True)
    p_verify = commands.add_parser("audit-verify", help="verify the audit log's hash chains")
    p_verify.add_argument("--connection", required=True)
    p_verify.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    _load_local_settings(args.settings, args.env_file)

    async def run() -> int:
        bridge = Bridge(load_settings())
        try:
            command: Any = {"doctor": lambda: doctor(bridge, args.connection, args.json),
                            "sync": lambda: sync(bridge, args.connection, args.dry_run),
                            "uninstall-groups": lambda: uninstall_groups(bridge, args.connection),
                            "audit-verify": lambda: audit_verify(bridge, args.connection, args.days)}[args.command]
            return int(await command())
        finally:
            await bridge.close()

    try:
        return asyncio.run(run())
    except BridgeError as err:
        print(f"error: {err.title}: {err.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
