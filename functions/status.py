"""GET connections/{c}/status and GET connections/{c}/runs/{runId}: what an operator checks first."""

from __future__ import annotations

import azure.functions as func

from functions import answers
from functions.http import ADMIN, Plain, Reply, route
from shared.bootstrap import bridge

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@route(bp, "connections/{c}/status", "GET", roles=[ADMIN], answers={200: answers.ConnectionStatus})
async def connection_status(call: Plain) -> Reply:
    """Counts, the last run and dry run, rotation, federation watch, throttle state, problems with fixes."""
    return Reply(200, await bridge().status.status(call.connection))


@route(bp, "connections/{c}/runs/{runId}", "GET", roles=[ADMIN], answers={200: answers.SyncRunDetails})
async def sync_run(call: Plain) -> Reply:
    """The last sync or dry run with the ids it planned (status shows only counts)."""
    return Reply(200, await bridge().status.run(call.connection, call.params["runId"]))
