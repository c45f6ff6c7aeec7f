"""GET /api/health: liveness and version, for anyone."""

from __future__ import annotations

import json

import azure.functions as func

from functions.answers import Health
from functions.http import RouteDoc, describe
from shared import __version__

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    """Report that the app is up and which version runs; nothing else (no configuration is read)."""
    return func.HttpResponse(json.dumps({"status": "ok", "version": __version__}),
                             status_code=200, mimetype="application/json")


describe(RouteDoc(name="health", path="health", method="GET", roles=(), anonymous=True, answers={200: Health},
                  doc=health.__doc__ or ""))
