"""GET connections/{c}/status: last sync, rotation counts, federation watch, throttle state, problems."""

from __future__ import annotations

import azure.functions as func

from functions import answers
from functions.http import ADMIN, Plain, Reply, route
from shared.bootstrap import bridge
from shared.errors import BridgeError
from shared.services.federation import watch_rows

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@route(bp, "connections/{c}/status", "GET", roles=[ADMIN], answers={200: answers.ConnectionStatus})
async def connection_status(call: Plain) -> Reply:
    """What an operator checks first."""
    app = bridge()
    conn = app.connection(call.params["c"])
    problems: list[str] = []
    last_sync = await app.sync.last_run(conn.name)
    if last_sync and last_sync.get("alert"):
        problems.append(f"sync: {last_sync['alert']}")
    rotation = None
    if conn.features.rotation.enabled:
        rotation = await app.rotation.counts(conn)
        if rotation.get("failed"):
            problems.append(f"rotation: {rotation['failed']} users failed; see GET connections/{conn.name}/users")
    users = {"total": 0}
    async for row in app.directory.all(conn.name):
        users["total"] += 1
        users[row.state.value] = users.get(row.state.value, 0) + 1
    federation = None
    if conn.features.federation.enabled:
        # The federation monitor's last findings: certificate expiry alerts and metadata problems.
        federation = await watch_rows(app.entities, conn.name)
        problems.extend(f"federation of {row.get('domain')}: {row['problem']}" for row in federation
                        if row.get("problem"))
    pause = None
    try:
        until = await app.governor.pause_until(conn.tenant_id)
        pause = until.isoformat() if until else None
    except BridgeError as err:
        problems.append(f"throttle state unreadable: {err.detail}")
    return Reply(200, {"connection": conn.name, "tenantId": conn.tenant_id, "dryRun": conn.dry_run,
                       "features": {name: getattr(conn.features, name).enabled
                                    for name in ("sync", "rotation", "passkeys", "federation", "export")},
                       "users": users, "lastSync": last_sync, "rotation": rotation, "federation": federation,
                       "throttle": {"writesPausedUntil": pause}, "problems": problems})
