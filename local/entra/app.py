"""Assembles the simulator: every module in local/entra/routes/ with a `routes(sim)` function is served.

Admin routes (`routes/admin.py`) are added only with --admin. The tenant is written back to the data
folder shortly after changes and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
import re
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from local.entra import routes as route_package
from local.entra.core import GraphError, Simulator

log = logging.getLogger("local.entra")
SAVE_EVERY = 0.5


class Redispatch(Response):
    """Serve the request again under the path a route spells (Graph's lenient URL reading)."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        super().__init__()
        self.app, self.path = app, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "path": self.path, "raw_path": self.path.encode()}, receive, send)


def build(sim: Simulator) -> Starlette:
    """The ASGI app of the simulator."""
    found: list[BaseRoute] = []
    for info in sorted(pkgutil.iter_modules(route_package.__path__), key=lambda m: m.name):
        if info.name == "admin" and not sim.admin:
            continue
        module = importlib.import_module(f"{route_package.__name__}.{info.name}")
        if hasattr(module, "routes"):
            found.extend(module.routes(sim))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async def saver() -> None:
            while True:
                # A tenant that takes long to write (a million users: seconds, with the state locked)
                # is written at most a tenth of the time.
                await asyncio.sleep(max(SAVE_EVERY, 10 * sim.store.last_save_seconds))
                if sim.store.dirty:
                    with sim.tenant.lock:
                        sim.store.save()

        task = asyncio.create_task(saver())
        try:
            yield
        finally:
            task.cancel()
            with sim.tenant.lock:
                sim.store.save()

    lenient = [(re.compile(route.path_regex.pattern, re.IGNORECASE), route) for route in found
               if isinstance(route, Route)]

    def canonical(path: str) -> str | None:
        """The path as a route spells it, when Graph would take this spelling of it; else None.

        Graph reads its URL segments ignoring case (`authenticationMethodConfigurations/Fido2`) and takes
        type casts in the short form the SDKs send (`transitiveMembers/graph.user`).
        """
        segments = path.split("/")
        spelled = "/".join(f"microsoft.{s}" if s.lower().startswith("graph.") else s for s in segments)
        for pattern, route in lenient:
            match = pattern.match(spelled)
            if match is not None:
                rewritten = route.path_format.format(**match.groupdict())
                return rewritten if rewritten != path else None
        return None

    async def not_found(request: Request, exc: Exception) -> Response:
        path = str(request.scope["path"])
        if not path.startswith(("/v1.0/", "/beta/")):
            return JSONResponse({"error": {"code": "NotFound", "message": f"Nothing is served at {path}."}},
                                status_code=404)
        found_path = canonical(path)
        if found_path is not None:
            return Redispatch(app, found_path)
        return sim.error(request, GraphError(400, "BadRequest", f"Resource not found for the segment "
                                                                f"'{path.rsplit('/', 1)[-1]}'."))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        return sim.error(request, GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed "
                                                                        "for the request target.", headers))

    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return sim.error(request, GraphError(500, "generalException", "An unexpected error occurred."))

    app = Starlette(routes=found, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_allowed, Exception: failed})
    sim.app = app
    return app
