"""Several tenants in one simulator: each its own state, sign-in, limits, faults and counters.

Each tenant is a whole simulator (`Simulator` and its routes, built by `app.build`); this module puts
them behind one address and picks the tenant of each request the way Entra and Graph do:

- sign-in and discovery (`/{tenant}/oauth2/v2.0/token`, `/{tenant}/v2.0/.well-known/...`,
  `/{tenant}/discovery/v2.0/keys`): the tenant id or verified domain in the path;
- Graph (`/v1.0/...`, `/beta/...`): the `tid` claim of the bearer token, as Graph serves the tenant
  the token was issued for (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference);
  the chosen tenant then verifies the token in full, so a forged `tid` gains nothing;
- the admin API of another tenant: `/_sim/tenants/{tenant}/...` is that tenant's `/_sim/...`, and
  `GET /_sim/tenants` lists the tenants (with the admin API on);
- everything else (managed identity, `/common/...`, `/_sim/...`, the FIDO metadata): the first tenant.

Throttling buckets, faults and counters belong to one tenant, so one tenant's 429s or failures never
touch another's requests, as Graph's limits are per app and tenant
(https://learn.microsoft.com/graph/throttling-limits).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import jwt
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from local.entra.core import Simulator

ADMIN_PREFIX = "/_sim/tenants/"


class TenantRouter:
    """An ASGI app serving several tenants' simulators (the first one is the default)."""

    def __init__(self, tenants: Sequence[tuple[Simulator, Starlette]]) -> None:
        if not tenants:
            raise ValueError("at least one tenant is needed")
        self.tenants = list(tenants)

    def _by_name(self, name: str) -> tuple[Simulator, Starlette] | None:
        return next(((sim, app) for sim, app in self.tenants if sim.matches_tenant(name)), None)

    def choose(self, path: str, authorization: str) -> tuple[Starlette, str]:
        """The app that serves this request, and the path it sees."""
        default = self.tenants[0][1]
        if path.startswith(ADMIN_PREFIX):
            name, _, rest = path[len(ADMIN_PREFIX):].partition("/")
            found = self._by_name(name)
            return (found[1], f"/_sim/{rest}") if found else (default, path)
        if path.startswith(("/v1.0/", "/beta/")) or path in ("/v1.0", "/beta"):
            tid = _token_tenant(authorization)
            found = self._by_name(tid) if tid else None
            return (found[1] if found else default), path
        first = path.lstrip("/").split("/", 1)[0]
        found = self._by_name(first) if first else None
        return (found[1] if found else default), path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.tenants[0][1](scope, receive, send)
            return
        if scope["path"].rstrip("/") == ADMIN_PREFIX.rstrip("/") and self.tenants[0][0].admin:
            listing = JSONResponse({"value": [{"tenantId": sim.tenant.tenantId, "displayName": sim.tenant.displayName,
                                               "users": len(sim.tenant.users)} for sim, _ in self.tenants]})
            await listing(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        app, path = self.choose(str(scope["path"]), headers.get("authorization", ""))
        if path != scope["path"]:
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Run every tenant's lifespan (its state saver) for the server's lifetime."""
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with contextlib.AsyncExitStack() as stack:
            try:
                for _, app in self.tenants:
                    await stack.enter_async_context(_lifespan_of(app))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})


@contextlib.asynccontextmanager
async def _lifespan_of(app: Starlette) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


def _token_tenant(authorization: str) -> str | None:
    """The `tid` claim of a bearer token, read without verification (the tenant verifies it after)."""
    if not authorization.lower().startswith("bearer "):
        return None
    try:
        claims = jwt.decode(authorization[7:].strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    tid = claims.get("tid")
    return str(tid) if tid else None
