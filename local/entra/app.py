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
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from local.entra import routes as route_package
from local.entra.core import Simulator

log = logging.getLogger("local.entra")
SAVE_EVERY = 0.5


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
                await asyncio.sleep(SAVE_EVERY)
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

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"code": "BadRequest", "message": f"Resource not found for the segment "
                                       f"'{request.url.path.rsplit('/', 1)[-1]}'."}}, status_code=400
                            if request.url.path.startswith(("/v1.0/", "/beta/")) else 404)

    app = Starlette(routes=found, lifespan=lifespan, exception_handlers={404: not_found})
    sim.app = app
    return app
