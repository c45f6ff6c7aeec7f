"""A connection's status as an operator reads it at a glance: counts, the last runs, problems with fixes.

One casing (camelCase, as Graph), counts rather than ids (a run's planned ids are at
`GET connections/{c}/runs/{runId}`), the last dry run beside the last real run, permanently refused
users apart from due ones, and every problem with the fix an operator can apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.config import Connection
from shared.errors import BridgeError, NotFound
from shared.services.directory import Directory
from shared.services.ports import JsonObject
from shared.services.rotation import RotationService
from shared.services.sync import SyncService

FEATURES = ("sync", "rotation", "passkeys", "federation", "export")

WatchReader = Callable[[str], Awaitable[list[JsonObject]]]
PauseReader = Callable[[str], Awaitable[Any]]
EnrollmentReader = Callable[[Connection], Awaitable[JsonObject | None]]
JobProblemReader = Callable[[str], Awaitable[list[JsonObject]]]
ExportSummary = Callable[[str], Awaitable[JsonObject]]


def camel(name: str) -> str:
    """`missing_in_entra` -> `missingInEntra`; names already in camelCase stay as they are."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class Problem:
    """Something an operator should act on: where, what, and the fix."""

    area: str
    detail: str
    fix: str

    def as_json(self) -> JsonObject:
        """The status document's form."""
        return {"area": self.area, "detail": self.detail, "fix": self.fix}


class StatusService:
    """Builds `GET connections/{c}/status` and `GET connections/{c}/runs/{runId}`."""

    def __init__(self, *, sync: SyncService, rotation: Callable[[], RotationService], directory: Directory,
                 federation_watch: WatchReader, writes_paused_until: PauseReader,
                 passkey_enrollment: EnrollmentReader, job_problems: JobProblemReader,
                 export: ExportSummary | None = None) -> None:
        self._export = export
        self._sync = sync
        self._rotation = rotation
        self._directory = directory
        self._watch = federation_watch
        self._paused_until = writes_paused_until
        self._enrollment = passkey_enrollment
        self._job_problems = job_problems

    async def status(self, conn: Connection) -> JsonObject:
        """The whole status document of `conn`."""
        problems: list[Problem] = []
        sync = await self._sync.status(conn.name)
        last_sync = sync.last_run
        last_dry_run = await self._sync.last_run(conn.name, dry_run=True)
        if last_sync is not None:
            problems.extend(self._sync_problems(conn, last_sync))
        # Failures of timer and queue jobs (a credential that gets no token, a missing permission) name their fix.
        for item in await self._job_problems(conn.name):
            found = item.get("problem")
            problems.append(Problem(str(item.get("job") or "job"),
                                    str(found.get("detail") if isinstance(found, dict) else found),
                                    _fix(found if isinstance(found, dict) else {}, conn,
                                         f"see the log lines with correlation id {item.get('correlationId')}")))
        rotation = None
        if conn.features.rotation.enabled:
            summary = await self._rotation().summary(conn)
            rotation = {camel(k): v for k, v in summary.counts.items()}
            if rotation.get("failed"):
                problems.append(Problem(
                    "rotation", f"{rotation['failed']} users' last rotation failed",
                    f"read each user's reason at GET connections/{conn.name}/users/{{id}}; failed users are tried "
                    "again at the next rotation_timer run, or now with POST .../users/{id}/rotate"))
            # Each refusal reason says what to change (a role to grant, a setting); they are not due.
            problems.extend(Problem("rotation", f"{count} users refused (not counted as due): {reason}",
                                    "change what the reason names, or remove these users from the rotation group "
                                    "(docs/rotation.md)")
                            for reason, count in sorted(summary.refused_reasons.items()))
        users: dict[str, int] = {"total": 0}
        async for row in self._directory.all(conn.name):
            users["total"] += 1
            key = camel(row.state.value)
            users[key] = users.get(key, 0) + 1
        federation = None
        if conn.features.federation.enabled:
            federation = [{camel(k): v for k, v in row.items()} for row in await self._watch(conn.name)]
            problems.extend(Problem("federation", f"{row.get('domain')}: {row['problem']}",
                                    f"check the domain with GET connections/{conn.name}/domains/{row.get('domain')}"
                                    "/federation/compatibility (docs/federation.md)")
                            for row in federation if row.get("problem"))
        passkeys = await self._enrollment(conn)
        if passkeys is not None:
            passkeys["devices"] = {camel(k): v for k, v in passkeys.get("devices", {}).items()}
        pause = None
        try:
            until = await self._paused_until(conn.tenant_id)
            pause = until.isoformat() if until else None
        except BridgeError as err:
            problems.append(Problem("throttle", f"the shared throttle state could not be read: {err.detail}",
                                    "grant the app's identity 'Storage Table Data Contributor' on the storage account"))
        export = None
        if conn.features.export.enabled and self._export is not None:
            export = await self._export(conn.name)
            problems.extend(Problem("export", f"{p['resourceType']} {p['id']}: {p['problem']}",
                                    "change what the problem names; the next SCIM change of the resource applies it "
                                    "(docs/export.md)") for p in export["problems"])
        return {"connection": conn.name, "tenantId": conn.tenant_id, "dryRun": conn.dry_run, "export": export,
                "features": {name: getattr(conn.features, name).enabled for name in FEATURES},
                "users": users, "lastSync": _run_view(conn.name, last_sync), "syncRunning": sync.running,
                "lastDryRun": _run_view(conn.name, last_dry_run), "rotation": rotation, "federation": federation,
                "passkeys": passkeys, "throttle": {"writesPausedUntil": pause},
                "problems": [p.as_json() for p in problems]}

    async def run(self, conn: Connection, run_id: str) -> JsonObject:
        """One kept run (the last real run or the last dry run) with the ids it planned."""
        for dry_run in (False, True):
            found = await self._sync.last_run(conn.name, dry_run=dry_run)
            if found is not None and found.get("runId") == run_id:
                view = _run_view(conn.name, found) or {}
                view["plannedIds"] = found.get("plannedIds") or {}
                return view
        raise NotFound(f"run {run_id!r} of connection {conn.name!r} is not kept: only the last sync and the last "
                       "dry run are (see lastSync and lastDryRun in GET connections/{c}/status)")

    @staticmethod
    def _sync_problems(conn: Connection, last: JsonObject) -> list[Problem]:
        outcome, alert, run_id = last.get("outcome"), last.get("alert"), last.get("runId")
        problem = last.get("problem") if isinstance(last.get("problem"), dict) else None
        if outcome == "failed" or (outcome == "aborted" and problem):
            detail = str(alert or (problem or {}).get("detail") or "the run failed")
            return [Problem("sync", detail, _fix(problem or {}, conn, "the next run tries again; run `python -m "
                                                 f"shared.cli doctor --connection {conn.name}` if it keeps failing"))]
        if outcome == "blocked":
            return [Problem("sync", str(alert or "the run was blocked"),
                            f"review the planned removals at GET connections/{conn.name}/runs/{run_id}; if they are "
                            "intended, raise features.sync.removalThreshold, then run a sync")]
        if outcome == "aborted":
            return [Problem("sync", str(alert or "the run was aborted"),
                            "the next run tries again; if it keeps failing, run `python -m shared.cli doctor "
                            f"--connection {conn.name}` for the missing permission or role")]
        if alert:
            return [Problem("sync", str(alert), "see docs/sync.md")]
        return []


def _fix(problem: JsonObject, conn: Connection, otherwise: str) -> str:
    """What the operator changes, from the members a bridge error carries (setting, permission, role)."""
    if problem.get("setting"):
        return f"correct the setting {problem['setting']} (connection {conn.name!r}), then run again"
    if problem.get("missingPermission"):
        return (f"grant the app the Graph permission {problem['missingPermission']} with admin consent "
                "(docs/connections.md)")
    if problem.get("missingRole"):
        return f"assign the app the role {problem['missingRole']} (docs/connections.md)"
    return otherwise


def _run_view(connection: str, row: JsonObject | None) -> JsonObject | None:
    """A stored run as status shows it: counts only, and where its planned ids are."""
    if row is None:
        return None
    view = {camel(k): v for k, v in row.items() if k not in ("plannedIds", "PartitionKey", "RowKey")}
    if view.get("runId"):
        view["details"] = f"/api/connections/{connection}/runs/{view['runId']}"
    return view
