"""Operator commands: status, users, rotate, sync, export, audit, audit-verify, doctor, timers, poison,
uninstall-groups.

Run from the checkout while `make run` is up, they find its settings by themselves (local.settings.json
and .local/stack-env.json) and say which they use; elsewhere they read the app settings from the
environment, or from `--settings FILE` and `--env-file FILE`. Every command takes `--json` for scripts.
They use the same services as the function app, so what they show is what the app would do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.bootstrap import Bridge
from shared.config import load_settings
from shared.errors import BridgeError, Configuration, InvalidInput, NotFound
from shared.services.audit import PAGE_DEFAULT, AuditFilter
from shared.services.connections import ConnectionTester
from shared.topology import Queue

#: The checkout this module runs from: `make run` keeps its settings here.
ROOT = Path(__file__).resolve().parents[1]
SETTINGS_FILE = "local.settings.json"
STACK_ENV_FILE = Path(".local") / "stack-env.json"
#: Timer functions an operator may run on demand (POST /admin/functions/{name} on the host).
TIMERS = ("sync_timer", "rotation_timer", "federation_monitor")


@dataclass
class Outcome:
    """What a command found: an exit code, the JSON for `--json`, and the lines for a person."""

    code: int
    data: Any
    text: list[str] = field(default_factory=list)


@dataclass
class Sources:
    """Where the settings came from, and the host's master key when a local settings file holds one."""

    described: str
    master_key: str | None = None


# ----------------------------------------------------------------------------- settings


def load_sources(settings_path: str | None, env_file: str | None) -> Sources:
    """Fill unset app settings from the named files, or from a running `make run` found by itself."""
    if settings_path is None and env_file is None and not _storage_configured():
        for base in dict.fromkeys((Path.cwd(), ROOT)):
            if (base / SETTINGS_FILE).exists():
                settings_path = str(base / SETTINGS_FILE)
                running = base / STACK_ENV_FILE
                env_file = str(running) if running.exists() else None
                break
    used: list[str] = []
    if env_file:
        if not Path(env_file).exists():
            raise Configuration(f"{env_file} does not exist (make run writes it while the stack runs)",
                                setting="--env-file")
        for key, value in json.loads(Path(env_file).read_text(encoding="utf-8")).items():
            os.environ.setdefault(str(key), str(value))
        used.append(_shown(env_file))
    master_key = None
    if settings_path:
        document = json.loads(Path(settings_path).read_text(encoding="utf-8"))
        for key, value in (document.get("Values") or {}).items():
            os.environ.setdefault(key, str(value))
        master_key = str(document.get("MasterKey") or "") or None
        used.insert(0, _shown(settings_path))
    if not used:
        return Sources("settings: the environment")
    note = "" if env_file else " (no running make run found: .local/stack-env.json is missing)"
    return Sources(f"settings: {' and '.join(used)}{note}", master_key)


#: App settings that say where storage is; set, they mean the environment is already configured.
STORAGE_SETTINGS = ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName")


def _storage_configured() -> bool:
    return any(os.environ.get(name) for name in STORAGE_SETTINGS)


def _shown(path: str) -> str:
    """A path relative to the working directory when it is below it (never a machine's absolute path)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return resolved.name


# ----------------------------------------------------------------------------- output helpers


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _progress(phase: str, done: int, total: int) -> None:
    if total:
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{phase:6} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
    else:
        sys.stderr.write(f"\r{phase:6} {done} users read")
    sys.stderr.flush()


def _counts(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "none"


def _confirm(question: str, yes: bool) -> bool:
    """True with --yes; on a terminal, ask; otherwise refuse (a script must say --yes)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InvalidInput(f"{question} needs confirmation: add --yes (no terminal to ask on)", field="--yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


# ----------------------------------------------------------------------------- commands


async def status(bridge: Bridge, name: str) -> Outcome:
    """The connection's status document, as GET connections/{c}/status answers it."""
    report = await bridge.status.status(bridge.connection(name))
    enabled = [f for f, on in report["features"].items() if on]
    lines = [f"connection {report['connection']} (tenant {report['tenantId']}"
             f"{', dry run' if report['dryRun'] else ''}); features: {', '.join(enabled) or 'none'}",
             f"users: {_counts(report['users'])}"]
    for label, key in (("last sync", "lastSync"), ("last dry run", "lastDryRun")):
        run = report.get(key)
        if run is None:
            lines.append(f"{label}: none")
            continue
        planned = run.get("planned") or {}
        lines.append(f"{label}: {run.get('outcome')} {run.get('mode') or ''} run {run.get('runId')} at "
                     f"{run.get('startedAt')}; added {run.get('added', 0)}, updated {run.get('updated', 0)}, "
                     f"removed {run.get('removed', 0)}, unchanged {run.get('unchanged', 0)}; planned "
                     f"{_counts(planned)}; {run.get('resourceUnits', 0)} RU, {run.get('durationSeconds', 0)} s")
    if report.get("rotation") is not None:
        lines.append(f"rotation: {_counts(report['rotation'])}")
    paused = report["throttle"]["writesPausedUntil"]
    lines.append(f"throttle: {'Graph writes paused until ' + paused if paused else 'not paused'}")
    problems = report["problems"]
    lines.append(f"problems: {len(problems) or 'none'}")
    lines.extend(f"- [{p['area']}] {p['detail']}\n  fix: {p['fix']}" for p in problems)
    return Outcome(0, report, lines)


async def users(bridge: Bridge, name: str, *, state: str | None, prefix: str | None, user: str | None,
                top: int) -> Outcome:
    """Imported users (never a password), or one user with its rotation status."""
    conn = bridge.connection(name)
    if user:
        row = await bridge.directory.find(conn.name, user)
        if row is None:
            raise NotFound(f"user {user!r} is not imported in connection {conn.name!r}")
        view: dict[str, Any] = {**row.to_row(), "id": row.id}
        if conn.features.rotation.enabled:
            rotation, _ = await bridge.rotation.status_row(conn.name, row.id)
            view["rotation"] = rotation.model_dump(mode="json", exclude_none=True,
                                                   exclude={"lease_owner", "lease_until"})
        return Outcome(0, view, [f"{k}: {v}" for k, v in view.items()])
    matched = []
    async for found in bridge.directory.all(conn.name):
        if state and found.state.value != state:
            continue
        if prefix and not found.upn.lower().startswith(prefix.lower()):
            continue
        matched.append(found)
    shown = matched[:top]
    rows: list[list[Any]] = [["id", "userPrincipalName", "state", "enrollment", "rotationGroup"]]
    rows.extend([r.id, r.upn, r.state.value, r.enrollment.value, "yes" if r.in_rotation_group else "no"]
                for r in shown)
    lines = (_table(rows) if shown else []) + [f"{len(shown)} of {len(matched)} users shown"
                                               + (" (--top for more)" if len(matched) > len(shown) else "")]
    return Outcome(0, {"value": [{**r.to_row(), "id": r.id} for r in shown], "count": len(matched)}, lines)


async def rotate(bridge: Bridge, name: str, user: str) -> Outcome:
    """Queue a rotation of one user now, as POST connections/{c}/users/{id}/rotate does."""
    conn = bridge.connection(name)
    row = await bridge.directory.find(conn.name, user)
    if row is None:
        raise NotFound(f"user {user!r} is not imported in connection {conn.name!r}")
    rotation_id = await bridge.rotation.request(conn, row.id, actor=_actor(), correlation_id=str(uuid.uuid4()))
    return Outcome(0, {"rotationId": rotation_id, "userId": row.id, "status": "queued"},
                   [f"rotation {rotation_id} of {row.upn} queued; follow it with "
                    f"`python -m shared.cli users --connection {conn.name} --user {row.id}`"])


async def doctor(bridge: Bridge, name: str) -> Outcome:
    """The connection test as a table."""
    conn = bridge.connection(name)
    gateway = await bridge.graph(conn)
    report = await ConnectionTester(gateway, gateway.token_claims).test(conn)
    lines = [f"connection {conn.name} (tenant {conn.tenant_id}, cloud {conn.cloud.value})"]
    token = report.token
    lines.append(f"token: {'obtained' if token.get('obtained') else 'FAILED'}; app {token.get('appId')}; "
                 f"service principal {token.get('servicePrincipal')}")
    lines.append(f"one read: {'ok' if report.read.get('ok') else 'FAILED'} {report.read.get('organization') or ''}")
    lines.append(f"directory roles: {', '.join(token.get('directoryRoles', [])) or 'none'}")
    rows: list[list[Any]] = [["feature", "status", "granted", "missing"]]
    for feature in report.features:
        missing = [*feature["missing"], *feature["roles_missing"]]
        rows.append([feature["feature"], "ok" if feature["ok"] else "MISSING",
                     ", ".join([*feature["granted"], *feature["roles_held"]]) or "-", ", ".join(missing) or "-"])
    if len(rows) > 1:
        lines.extend(_table(rows))
    for feature in report.features:
        lines.extend(f"fix ({feature['feature']}): {fix}" for fix in feature["remediation"])
    if report.tenant_settings:
        lines.append("tenant settings: " + json.dumps(report.tenant_settings))
    lines.extend(f"problem: {problem}" for problem in report.problems)
    lines.append("result: " + ("OK" if report.ok else "PROBLEMS FOUND"))
    return Outcome(0 if report.ok else 1, report.as_json(), lines)


async def sync(bridge: Bridge, name: str, dry_run: bool, *, show_progress: bool) -> Outcome:
    """Run one sync now, in this process (a progress bar on a terminal)."""
    conn = bridge.connection(name)
    service = bridge.sync
    reader = await bridge.directory_reader(conn)
    report = await service.run(conn, reader, run_id=f"cli-{uuid.uuid4().hex[:8]}", correlation_id=str(uuid.uuid4()),
                               dry_run=dry_run, progress=_progress if show_progress else None)
    if show_progress:
        sys.stderr.write("\n")
    line = (f"sync {report.outcome}: added {report.added}, updated {report.updated}, removed {report.removed}, "
            f"unchanged {report.unchanged}, errors {report.errors}, ~{report.resource_units} RU, "
            f"{report.duration_seconds:.1f} s")
    data = {k: v for k, v in report.row().items() if k not in ("planned", "plannedIds")}
    data["planned"] = report.planned
    lines = [line] + ([f"alert: {report.alert}"] if report.alert else [])
    return Outcome(0 if report.outcome in ("completed", "dry-run") else 1, data, lines)


async def export(bridge: Bridge, name: str, *, dry_run: bool) -> Outcome:
    """The plan of every pending SCIM change (--dry-run), or apply them now, in this process (docs/export.md)."""
    conn = bridge.connection(name)
    entra = await bridge.export_directory(conn)
    if dry_run:
        plans = await bridge.export.pending(conn, entra)
        lines = [f"{len(plans)} pending changes (dry run: nothing written)"]
        for plan in plans:
            lines.append(f"{plan.kind} {plan.scim_id}:" + ("" if plan.steps or plan.problems else " nothing to do"))
            lines.extend(f"  {step.describe()}" for step in plan.steps)
            lines.extend(f"  problem: {problem}" for problem in plan.problems)
        data = {"dryRun": True, "plans": [{"resourceType": p.kind, "id": p.scim_id, "steps": [
            s.describe() for s in p.steps], "problems": list(p.problems), "stopped": p.stopped} for p in plans]}
        return Outcome(0, data, lines)
    # One run over every pending change: the removal threshold counts their removals together.
    run = await bridge.export.run(conn, entra, correlation_id=f"cli-export-{uuid.uuid4().hex[:8]}")
    body = run.as_dict()
    applied = body["applied"]
    lines = [f"{len(applied)} changes applied"] + [
        f"{a['resourceType']} {a['id']}: {a['written']} writes" + (f"; problems: {'; '.join(a['problems'])}"
                                                                     if a["problems"] else "") for a in applied]
    lines += [f"{w['resourceType']} {w['id']}: still pending; {'; '.join(w['problems'])}" for w in body["waiting"]]
    lines += [f"stopped: {run.stopped}"] if run.stopped else []
    failed = run.stopped or body["waiting"] or any(a["problems"] for a in applied)
    return Outcome(1 if failed else 0, body, lines)


def _group_line(group: dict[str, Any]) -> str:
    line = f"  {group['id']}  {group['name']!r} ({group['state']}, {group['ownership']}"
    if group.get("recordedAt"):
        line += f", recorded {group['recordedAt']}"
    if group.get("runId"):
        line += f" by {group['runId']}"
    line += ")"
    if group.get("configuredName"):
        line += f"; configured name now {group['configuredName']!r}"
    if group.get("reason"):
        line += f": {group['reason']}"
    return line


def _uninstall_lines(report: dict[str, Any]) -> list[str]:
    verb = "would delete" if report["dryRun"] else "deleted"
    lines = [f"{verb} {len(report['deleted'])} enrollment-state group(s) the bridge created"
             + (":" if report["deleted"] else "")]
    lines.extend(_group_line(group) for group in report["deleted"])
    leave = "would leave" if report["dryRun"] else "left"
    lines.append(f"{leave} {len(report['left'])} group(s) in Entra that the bridge did not create"
                 + (":" if report["left"] else ""))
    lines.extend(_group_line(group) for group in report["left"])
    return lines


async def uninstall_groups(bridge: Bridge, name: str, *, dry_run: bool, yes: bool) -> Outcome:
    """Delete the enrollment-state groups the bridge created in Entra (never groups it adopted)."""
    conn = bridge.connection(name)
    groups = bridge.enrollment_groups
    writer = await bridge.directory_reader(conn)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("uninstall-groups deletes groups in Entra and asks for confirmation on a terminal; "
                               "there is none: pass --yes to delete without asking (or --dry-run to list what it "
                               "would delete)", field="--yes")
        plan = (await groups.uninstall(conn, writer, correlation_id=str(uuid.uuid4()), actor=_actor(),
                                       dry_run=True)).as_dict()
        print("\n".join(_uninstall_lines(plan)))
        if not _confirm(f"Delete {len(plan['deleted'])} group(s) in Entra and forget the adopted ones?", False):
            return Outcome(1, {**plan, "cancelled": True}, ["nothing deleted"])
    report = (await groups.uninstall(conn, writer, correlation_id=str(uuid.uuid4()), actor=_actor(),
                                     dry_run=dry_run)).as_dict()
    lines = _uninstall_lines(report)
    if conn.features.passkeys.enabled and not dry_run:
        report["note"] = "features.passkeys.enabled is still true: the next sync creates the groups again"
        lines.append(f"note: {report['note']}")
    return Outcome(0, report, lines)


async def audit(bridge: Bridge, name: str, *, first: str | None, last: str | None, action: str | None,
                target: str | None, outcome: str | None, top: int, token: str | None) -> Outcome:
    """Audit records of a connection, filtered and paged as GET /api/audit does."""
    conn = bridge.connection(name)
    today = bridge.clock.now().astimezone(dt.UTC).date()
    flt = AuditFilter(conn.name, _day(first, today, "--from"), _day(last, today, "--to"), action=action,
                      target=target, outcome=outcome)
    page = await bridge.audit_query.page(flt, top=top, token=token)
    records = [r.model_dump(mode="json", by_alias=True) for r in page.records]
    rows: list[list[Any]] = [["at", "actor", "action", "target", "outcome"]]
    rows.extend([r["at"], r["actor"], r["action"], r["target"], r["outcome"]] for r in records)
    lines = (_table(rows) if records else []) + [f"{len(records)} records"]
    if page.next_token:
        lines.append(f"more: --continuation-token {page.next_token}")
    return Outcome(0, {"value": records, "continuationToken": page.next_token}, lines)


def _day(value: str | None, default: dt.date, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value) if value else default
    except ValueError:
        raise InvalidInput(f"{option} must be a date like 2026-11-23", field=option) from None


async def audit_verify(bridge: Bridge, name: str, days: int) -> Outcome:
    """Verify the audit chains and their anchors of the last `days` days; each finding on its own line."""
    today = bridge.clock.now().astimezone(dt.UTC).date()
    report = await bridge.audit_query.verify(name, today - dt.timedelta(days=days - 1), today)
    lines = [f"FOUND {finding.describe()}" for finding in report.findings]
    window = int(report.window.total_seconds())
    since = f" (since {report.window_from:%Y-%m-%d %H:%M:%S} UTC)" if report.window_from and window else ""
    lines.append(f"not yet anchored: {window} s{since}; records written in that window could be cut unnoticed")
    if report.findings:
        lines.append(f"audit NOT intact: {len(report.findings)} finding(s); {report.checked} records in "
                     f"{report.chains} chains checked")
        return Outcome(1, report.as_json(), lines)
    lines.append(f"audit intact: {report.checked} records in {report.chains} chains checked")
    return Outcome(0, report.as_json(), lines)


async def timers_run(name: str, *, host: str | None, master_key: str | None) -> Outcome:
    """Run a timer function now through the Functions host's admin API (the local host or Azure)."""
    url = host or os.environ.get("LOCAL_FUNCTIONS_URL")
    if not url:
        raise Configuration("no function host to ask: start `make run`, or give --host with the app's URL",
                            setting="--host")
    key = master_key or os.environ.get("FUNCTIONS_MASTER_KEY")
    if not key:
        raise Configuration("the host's master key is needed: MasterKey in local.settings.json, or "
                            "FUNCTIONS_MASTER_KEY, or --master-key", setting="FUNCTIONS_MASTER_KEY")
    # https://learn.microsoft.com/azure/azure-functions/functions-manually-run-non-http
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            answer = await client.post(f"{url.rstrip('/')}/admin/functions/{name}", json={"input": ""},
                                       headers={"x-functions-key": key})
        except httpx.HTTPError as err:
            raise Configuration(f"the function host at {url} did not answer ({type(err).__name__}): is it running?",
                                setting="--host") from None
    if answer.status_code == 404:
        raise NotFound(f"the host has no function named {name!r} (timers: {', '.join(TIMERS)})")
    if answer.status_code in (401, 403):
        raise Configuration("the host refused the master key", setting="FUNCTIONS_MASTER_KEY")
    if answer.status_code >= 400:
        raise InvalidInput(f"the host answered {answer.status_code}: {answer.text[:200]}", field="name")
    return Outcome(0, {"function": name, "status": "started"},
                   [f"{name} started on {url}; its outcome shows in the host's log and in `status`"])


async def poison(bridge: Bridge, action: str, queue: Queue, *, ids: list[str], every: bool, yes: bool) -> Outcome:
    """List, replay (send back unchanged) or drop the messages of a poison queue."""
    if action == "list":
        listing = await bridge.poison.listing(queue)
        data = {"queue": queue.poison, "approximateCount": listing.approximate_count,
                "value": [{"id": m.id, "insertedOn": m.inserted_on.isoformat() if m.inserted_on else None,
                           "dequeueCount": m.dequeue_count, "message": m.body if m.body is not None else m.text}
                          for m in listing.messages]}
        rows: list[list[Any]] = [["id", "inserted", "kind", "connection", "target", "idempotencyKey"]]
        for m in listing.messages:
            body = m.body or {}
            rows.append([m.id, f"{m.inserted_on:%Y-%m-%d %H:%M:%S}" if m.inserted_on else "-", body.get("kind", "?"),
                         body.get("connection", "?"), body.get("target", "?"), body.get("idempotencyKey", "?")])
        lines = (_table(rows) if listing.messages else []) + [
            f"{queue.poison}: about {listing.approximate_count} messages"
            + (f" ({len(listing.messages)} shown)" if listing.approximate_count > len(listing.messages) else "")]
        return Outcome(0, data, lines)
    if not ids and not every:
        raise InvalidInput(f"say which messages to {action}: --id ID (repeatable) or --all", field="--id")
    chosen = None if every else set(ids)
    if action == "drop" and not _confirm(f"drop {'every message' if every else f'{len(ids)} message(s)'} "
                                         f"of {queue.poison} for good?", yes):
        return Outcome(1, {"queue": queue.poison, action: [], "cancelled": True}, ["cancelled: nothing dropped"])
    run: Callable[..., Awaitable[Any]] = bridge.poison.replay if action == "replay" else bridge.poison.drop
    taken = await run(queue, chosen, actor=_actor(), correlation_id=str(uuid.uuid4()))
    done = [m.id for m in taken]
    missing = sorted(chosen - set(done)) if chosen else []
    verb = "sent back to " + queue.value if action == "replay" else "dropped"
    lines = [f"{len(done)} message(s) {verb}"] + [f"not found in {queue.poison}: {i}" for i in missing]
    return Outcome(1 if missing else 0, {"queue": queue.poison, action: done, "notFound": missing}, lines)


def _actor() -> str:
    return f"cli:{os.environ.get('USER', 'operator')}"


# ----------------------------------------------------------------------------- the command line


def parser() -> argparse.ArgumentParser:
    """Every command and its options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    top = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    top.add_argument("--settings", help="a local.settings.json whose Values fill in unset app settings")
    top.add_argument("--env-file", help="a JSON object of environment variables (make run writes one)")
    commands = top.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, *, connection: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[common])
        if connection:
            sub.add_argument("--connection", required=True, help="the connection's name (CONNECTIONS)")
        return sub

    command("status", "a connection's status: counts, last runs, rotation, problems with their fixes")
    p_users = command("users", "imported users, or one user with --user (never a password)")
    p_users.add_argument("--state", choices=["active", "deactivated", "removed", "missing_in_entra"])
    p_users.add_argument("--q", dest="prefix", help="a userPrincipalName prefix")
    p_users.add_argument("--user", help="one user's object id or userPrincipalName")
    p_users.add_argument("--top", type=int, default=50)
    p_rotate = command("rotate", "queue a password rotation of one user now")
    p_rotate.add_argument("--user", required=True, help="the user's object id or userPrincipalName")
    p_sync = command("sync", "run a sync of one connection now, in this process")
    p_sync.add_argument("--dry-run", action="store_true", help="plan and show, write nothing")
    p_audit = command("audit", "read audit records (filters and paging as GET /api/audit)")
    p_audit.add_argument("--from", dest="first", help="first UTC day (default today)")
    p_audit.add_argument("--to", dest="last", help="last UTC day (default today)")
    p_audit.add_argument("--action", help="an action prefix, e.g. rotation.")
    p_audit.add_argument("--target")
    p_audit.add_argument("--outcome")
    p_audit.add_argument("--top", type=int, default=PAGE_DEFAULT)
    p_audit.add_argument("--continuation-token")
    p_verify = command("audit-verify", "verify the audit log's chains")
    p_verify.add_argument("--days", type=int, default=7)
    command("doctor", "test a connection and report missing permissions and roles")
    p_timers = command("timers", "run a timer function now through the function host", connection=False)
    p_timers.add_argument("action", choices=["run"])
    p_timers.add_argument("name", choices=TIMERS)
    p_timers.add_argument("--host", help="the function app's URL (default: the running make run's host)")
    p_timers.add_argument("--master-key", help="the host's master key (default: MasterKey of local.settings.json)")
    p_poison = command("poison", "list, replay or drop messages the host gave up on", connection=False)
    p_poison.add_argument("action", choices=["list", "replay", "drop"])
    p_poison.add_argument("--queue", required=True, choices=[q.value for q in Queue])
    p_poison.add_argument("--id", dest="ids", action="append", default=[], help="a message id (repeatable)")
    p_poison.add_argument("--all", dest="every", action="store_true", help="every message of the poison queue")
    p_poison.add_argument("--yes", action="store_true", help="drop without asking")
    p_export = command("export", "apply the pending SCIM changes to Entra now, or show their plan with --dry-run")
    p_export.add_argument("--dry-run", action="store_true", help="print the plan of pending changes; write nothing")
    p_uninstall = command("uninstall-groups", "delete the enrollment-state groups the bridge created in Entra")
    p_uninstall.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    p_uninstall.add_argument("--yes", action="store_true", help="delete without asking")
    return top


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    args = parser().parse_args(argv)
    try:
        sources = load_sources(args.settings, args.env_file)
    except BridgeError as err:
        return _fail(err, args.json)
    if not args.json:
        print(sources.described, file=sys.stderr)

    async def run() -> Outcome:
        if args.command == "timers":
            return await timers_run(args.name, host=args.host, master_key=args.master_key or sources.master_key)
        bridge = Bridge(load_settings())
        try:
            commands: dict[str, Callable[[], Awaitable[Outcome]]] = {
                "status": lambda: status(bridge, args.connection),
                "users": lambda: users(bridge, args.connection, state=args.state, prefix=args.prefix,
                                       user=args.user, top=args.top),
                "rotate": lambda: rotate(bridge, args.connection, args.user),
                "sync": lambda: sync(bridge, args.connection, args.dry_run,
                                     show_progress=sys.stderr.isatty() and not args.json),
                "audit": lambda: audit(bridge, args.connection, first=args.first, last=args.last,
                                       action=args.action, target=args.target, outcome=args.outcome, top=args.top,
                                       token=args.continuation_token),
                "audit-verify": lambda: audit_verify(bridge, args.connection, args.days),
                "doctor": lambda: doctor(bridge, args.connection),
                "poison": lambda: poison(bridge, args.action, Queue(args.queue), ids=args.ids, every=args.every,
                                         yes=args.yes),
                "export": lambda: export(bridge, args.connection, dry_run=args.dry_run),
                "uninstall-groups": lambda: uninstall_groups(bridge, args.connection, dry_run=args.dry_run,
                                                             yes=args.yes),
            }
            return await commands[args.command]()
        finally:
            await bridge.close()

    try:
        outcome = asyncio.run(run())
    except BridgeError as err:
        return _fail(err, args.json)
    try:
        if args.json:
            print(json.dumps(outcome.data, indent=2, default=str))
        else:
            print("\n".join(outcome.text))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): what it did not read is not an error of the command.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return outcome.code


def _fail(err: BridgeError, as_json: bool) -> int:
    """A refused command: the problem on stderr (JSON with --json), exit 2."""
    if as_json:
        problem = {"type": err.type_uri, "title": err.title, "detail": err.detail, **err.extensions()}
        print(json.dumps(problem, indent=2), file=sys.stderr)
    else:
        print(f"error: {err.title}: {err.detail}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
