"""`python -m local.host --port 7071 [--settings local.settings.json] [--app function_app] [--instances N]`.

Loads local.settings.json's `Values` into the environment the way Core Tools does (variables already
set win), takes function keys from its `FunctionKeys` section (`{"default": "<key>"}`) and the master
key from `MasterKey`, imports the app, and serves it on 127.0.0.1 until Ctrl-C or SIGTERM.

With `--instances N` (N > 1) it runs N instances instead, each its own process on its own port (the
given port and the next ones, or free ones), sharing the storage account's queues and tables as Flex
Consumption instances do; the first instance runs the timers (docs/local-host.md, "Several instances").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import secrets
import ssl
import sys
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from local.host.runtime import HostConfig, LocalHost, _problem
from shared import logs

#: App Service Authentication's globalValidation (excluded paths, unauthenticated action), under --root.
AUTH_SETTINGS = Path("infra") / "app-service-auth.json"


def load_settings(path: Path) -> dict[str, Any]:
    """Read local.settings.json and put its Values into the environment (existing variables win)."""
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for key, value in (data.get("Values") or {}).items():
        os.environ.setdefault(str(key), str(value))
    return data


class AnyPath(PathConvertor):
    """Every path, also one with an encoded line break (`path` stops there), so the host answers it."""

    regex = "(?s:.*)"


register_url_convertor("all", AnyPath())


def build(app_module: str, settings: dict[str, Any], root: Path) -> tuple[Starlette, LocalHost]:
    """The ASGI app serving the function app."""
    sys.path.insert(0, str(root))
    module = importlib.import_module(app_module)
    keys = {str(k): str(v) for k, v in (settings.get("FunctionKeys") or {}).items() if v}
    if not keys:
        keys = {"default": secrets.token_urlsafe(24)}
    auth_ssl = None
    if os.environ.get("LOCAL_CA_FILE"):
        auth_ssl = ssl.create_default_context(cafile=os.environ["LOCAL_CA_FILE"])
    enabled = os.environ.get("WEBSITE_AUTH_ENABLED", "false").lower() == "true"
    # App Service Authentication's globalValidation, the same file the Bicep deploys.
    auth_file = root / AUTH_SETTINGS
    validation = json.loads(auth_file.read_text(encoding="utf-8")) if auth_file.exists() else {}
    action = str(validation.get("unauthenticatedClientAction", "Return401"))
    config = HostConfig.from_host_json(
        root / "host.json", function_keys=keys, master_key=settings.get("MasterKey") or None,
        auth_issuer=os.environ.get("LOCAL_AUTH_ISSUER") if enabled else None,
        auth_audience=os.environ.get("LOCAL_AUTH_AUDIENCE"), auth_ssl=auth_ssl, auth_enabled=enabled,
        auth_excluded_paths=tuple(str(p) for p in validation.get("excludedPaths", [])),
        auth_action=action if validation.get("requireAuthentication", True) else "AllowAnonymous")
    host = LocalHost(module.app, config)
    return serve(host), host


def serve(host: LocalHost) -> Starlette:
    """The ASGI app around a host: every path to `host.handle`, timers and queues for its lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await host.start()
        yield
        await host.stop()

    async def other_method(request: Request, exc: Exception) -> Response:
        # A method outside the list (QUERY, TRACE...) reaches the host too: 405 problem+json like the others.
        return await host.handle(request)

    async def refused(request: Request, exc: Exception) -> Response:
        # Anything else the router itself refuses is a problem too, like every other 4xx of the host.
        status = exc.status_code if isinstance(exc, HTTPException) else 400
        return _problem(status, HTTPStatus(status).phrase,
                        f"{request.method} {request.url.path!r} is not served by this host", dict(
                            exc.headers or {}) if isinstance(exc, HTTPException) else None)

    routes = [Route("/{path:all}", host.handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={405: other_method, HTTPException: refused})


def main(argv: list[str] | None = None) -> int:
    """Run the host."""
    parser = argparse.ArgumentParser(prog="python -m local.host", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", default="local.settings.json")
    parser.add_argument("--app", default="function_app", help="module holding the FunctionApp `app`")
    parser.add_argument("--root", default=".", help="folder with host.json and the app module")
    parser.add_argument("--instances", type=int, default=1, help="run this many instances, each its own process")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if args.instances > 1:
        from local.host.process import supervise

        return supervise(args.instances, port=args.port, settings=args.settings, app=args.app, root=root)
    settings = load_settings(Path(args.settings) if Path(args.settings).is_absolute() else root / args.settings)
    # The host adds only its console; the app configures logging (LOG_FORMAT, LOG_LEVEL, masking) on import.
    logs.console()
    app, host = build(args.app, settings, root)
    print(f"local host: {len(host.http)} HTTP, {len(host.timers)} timer and {len(host.queues)} queue functions on "
          f"http://127.0.0.1:{args.port}/{host.config.route_prefix}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=30))
    asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
