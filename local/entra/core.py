"""What every simulator route shares: state, tokens, authorization, OData errors, paging, limits, faults.

Graph errors follow https://learn.microsoft.com/graph/errors (error.code, error.message,
error.innerError with date, request-id, client-request-id; the same ids in response headers).
Throttling follows https://learn.microsoft.com/graph/throttling-limits (identity and access service:
resource units per app and tenant per 10 s by tenant size, writes 3,000 per 150 s per app and tenant,
18,000 per 5 min per tenant; 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from local.entra.state import App, Store, Tenant
from local.entra.tokens import Signer

GRAPH_RESOURCE = "https://graph.microsoft.com"


class GraphError(Exception):
    """An error answer in Graph's format."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class DroppedConnection(Response):
    """Starts a response and breaks the connection mid-body, as a network failure would."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b'{"value": [', "more_body": True})
        raise ConnectionAbortedError("fault injected: connection dropped")


@dataclass
class Faults:
    """Injected failures for Graph routes: rates between 0 and 1, latency in milliseconds."""

    latency_ms: float = 0.0
    error_rate: float = 0.0  # 503 before doing anything
    throttle_rate: float = 0.0  # 429 storms
    drop_rate: float = 0.0  # connection dropped before doing anything
    ambiguous_rate: float = 0.0  # writes: applied, then the connection dropped
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, values: dict[str, Any]) -> None:
        """Change settings from the admin API (camelCase or snake_case names)."""
        names = {"latencyMs": "latency_ms", "errorRate": "error_rate", "throttleRate": "throttle_rate",
                 "dropRate": "drop_rate", "ambiguousRate": "ambiguous_rate"}
        for key, value in values.items():
            name = names.get(key, key)
            if name == "seed":
                self.rng = random.Random(value)  # noqa: S311 - fault injection, not security
                self.seed = value
            elif name in ("latency_ms", "error_rate", "throttle_rate", "drop_rate", "ambiguous_rate"):
                setattr(self, name, float(value))
            else:
                raise GraphError(400, "BadRequest", f"unknown fault setting {key!r}")

    def describe(self) -> dict[str, Any]:
        """Current settings."""
        return {"latencyMs": self.latency_ms, "errorRate": self.error_rate, "throttleRate": self.throttle_rate,
                "dropRate": self.drop_rate, "ambiguousRate": self.ambiguous_rate, "seed": self.seed}

    def roll(self, rate: float) -> bool:
        """True with probability `rate`."""
        return rate > 0 and self.rng.random() < rate


class Bucket:
    """A token bucket refilled continuously; `time_scale` compresses its window."""

    def __init__(self, capacity: float, window_seconds: float, time_scale: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window_seconds * time_scale
        self.tokens = capacity
        self.updated = time.monotonic()
        self.used = 0.0

    def peek(self) -> float:
        """Tokens available now, without spending any."""
        return min(self.capacity, self.tokens + (time.monotonic() - self.updated) * self.rate)

    def take(self, cost: float) -> float:
        """Spend `cost`; 0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            self.used += cost
            return 0.0
        return (cost - self.tokens) / self.rate


@dataclass
class Caller:
    """The authenticated caller of a Graph request."""

    claims: dict[str, Any]
    app: App | None

    @property
    def roles(self) -> set[str]:
        """Graph application permissions in the token."""
        return set(self.claims.get("roles") or [])

    @property
    def principal_id(self) -> str:
        """The caller's service principal object id."""
        return str(self.claims.get("oid", ""))


class Simulator:
    """The running simulator's shared state and policies."""

    def __init__(self, store: Store, signer: Signer, *, base_url: str, identity_header: str | None = None,
                 admin: bool = False, limits: bool = True, time_scale: float = 1.0,
                 faults: Faults | None = None) -> None:
        self.store = store
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.identity_header = identity_header
        self.admin = admin
        self.limits = limits
        self.time_scale = time_scale
        self.faults = faults or Faults()
        self.used_assertions: dict[str, float] = {}
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()
        self.counters: dict[str, float] = {"requests": 0, "throttled": 0, "writes": 0, "resourceUnits": 0}
        #: The ASGI app serving this simulator (set by app.build), for routes that call other routes.
        self.app: Any = None

    @property
    def tenant(self) -> Tenant:
        """The simulated tenant."""
        return self.store.tenant

    def issuer(self) -> str:
        """The token issuer of the tenant."""
        return f"{self.base_url}/{self.tenant.tenantId}/v2.0"

    def matches_tenant(self, value: str) -> bool:
        """Whether a path's tenant segment names this tenant (id or a verified domain)."""
        return value == self.tenant.tenantId or any(d["id"] == value for d in self.tenant.domains)

    # ------------------------------------------------------------------ Graph request handling

    def request_ids(self, request: Request) -> dict[str, str]:
        """request-id, client-request-id and date headers for a response."""
        rid = str(uuid.uuid4())
        return {"request-id": rid, "client-request-id": request.headers.get("client-request-id", rid),
                "date": dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")}

    def error(self, request: Request, err: GraphError) -> JSONResponse:
        """A Graph error response."""
        ids = self.request_ids(request)
        body = {"error": {"code": err.code, "message": err.message, "innerError": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": ids["request-id"],
            "client-request-id": ids["client-request-id"]}}}
        return JSONResponse(body, status_code=err.status, headers={**ids, **err.headers})

    def authenticate(self, request: Request) -> Caller:
        """The caller of a Graph request, from its bearer token."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = self.signer.verify(header[7:].strip(), issuer=self.issuer())
        except jwt.ExpiredSignatureError:
            raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.") \
                from None
        except jwt.PyJWTError:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.") \
                from None
        if claims.get("aud") not in (GRAPH_RESOURCE, f"{GRAPH_RESOURCE}/"):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        return Caller(claims, self.tenant.apps.get(str(claims.get("appid"))))

    def authorize(self, caller: Caller, any_of: tuple[str, ...]) -> None:
        """Require one of the permissions Microsoft documents for the endpoint."""
        if any_of and not caller.roles & set(any_of):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _bucket(self, key: str, capacity: float, window: float) -> Bucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = Bucket(capacity, window, self.time_scale)
            return bucket

    def bucket_levels(self) -> dict[str, dict[str, float]]:
        """Each throttling bucket's capacity, tokens left and units spent (admin API)."""
        with self._lock:
            return {key: {"capacity": b.capacity, "remaining": round(b.peek(), 3), "used": b.used}
                    for key, b in self._buckets.items()}

    def charge(self, caller: Caller, *, cost: float, write: bool) -> dict[str, str]:
        """Spend resource units (and a write); raise 429 over the limits. Returns headers to add."""
        self.counters["requests"] += 1
        self.counters["resourceUnits"] += cost
        if write:
            self.counters["writes"] += 1
        if not self.limits:
            return {"x-ms-resource-unit": str(int(cost))}
        size = len(self.tenant.users)
        ru_limit = 3500 if size < 50 else 5000 if size <= 500 else 8000
        app = str(caller.claims.get("appid"))
        waits = [self._bucket(f"ru:{app}", ru_limit, 10).take(cost)]
        if write:
            waits.append(self._bucket(f"w:{app}", 3000, 150).take(1))
            waits.append(self._bucket("w:tenant", 18000, 300).take(1))
        wait = max(waits)
        if wait > 0:
            self.counters["throttled"] += 1
            retry = max(1, int(wait / self.time_scale + 0.999)) if self.time_scale >= 1 else max(1, int(wait + 0.999))
            raise GraphError(429, "TooManyRequests", "Please retry again later.", {
                "Retry-After": str(retry), "x-ms-throttle-scope": f"Tenant_Application/Write/{self.tenant.tenantId}"
                if write else f"Tenant_Application/ReadWrite/{self.tenant.tenantId}",
                "x-ms-throttle-information": "WriteLimitExceeded" if write else "ResourceUnitLimitExceeded"})
        return {"x-ms-resource-unit": str(int(cost))}

    async def before(self, write: bool) -> Response | None:
        """Apply injected latency and failures that happen before any work; a response ends the request."""
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.roll(faults.drop_rate):
            return DroppedConnection()
        if faults.roll(faults.throttle_rate):
            raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": "1"})
        if faults.roll(faults.error_rate):
            raise GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable.")
        return None

    def ambiguous(self, write: bool) -> bool:
        """Whether to drop the connection after applying this write."""
        return write and self.faults.roll(self.faults.ambiguous_rate)


GraphHandler = Callable[[Request, Caller], Awaitable[Response | dict[str, Any] | None]]


def graph_route(sim: Simulator, handler: GraphHandler, *, permissions: tuple[str, ...], write: bool = False,
                cost: float = 1.0) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a Graph handler with faults, authentication, authorization, limits and Graph's error format."""
    async def endpoint(request: Request) -> Response:
        try:
            dropped = await sim.before(write)
            if dropped is not None:
                return dropped
            caller = sim.authenticate(request)
            sim.authorize(caller, permissions)
            select_discount = 1 if "$select" in request.query_params and cost > 1 else 0
            extra = sim.charge(caller, cost=cost - select_discount + (1 if write else 0), write=write)
            with sim.tenant.lock:
                result = await handler(request, caller)
            if write:
                sim.store.changed()
            if sim.ambiguous(write):
                return DroppedConnection()
        except GraphError as err:
            return sim.error(request, err)
        headers = {**sim.request_ids(request), **extra}
        if isinstance(result, Response):
            result.headers.update(headers)
            return result
        if result is None:
            return Response(status_code=204, headers=headers)
        return JSONResponse(result, headers=headers)
    return endpoint


def page(request: Request, items: list[Any], *, default_top: int = 100, max_top: int = 999, context: str = "",
         render: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One page of a collection with `$top` and an opaque `$skiptoken` in the nextLink.

    `render`, when given, turns only the items of this page into their Graph form, so a page of a
    large collection costs the page, not the collection.
    """
    try:
        top = int(request.query_params.get("$top", default_top))
    except ValueError:
        raise GraphError(400, "Request_BadRequest", "Invalid value for $top.") from None
    if top < 1 or top > max_top:
        raise GraphError(400, "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and "
                                                    f"{max_top} inclusive.")
    token = request.query_params.get("$skiptoken")
    offset = 0
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")[1])
        except (ValueError, IndexError):
            raise GraphError(400, "Request_BadRequest", "Invalid $skiptoken.") from None
    chunk = items[offset:offset + top]
    body: dict[str, Any] = {"@odata.context": context or f"{request.base_url}$metadata",
                            "value": [render(i) for i in chunk] if render else chunk}
    if offset + top < len(items):
        params = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(f"o:{offset + top}".encode()).decode().rstrip("=")
        query = "&".join(f"{k}={v}" for k, v in params.items())
        body["@odata.nextLink"] = f"{str(request.url).split('?')[0]}?{query}"
    if request.query_params.get("$count") == "true":
        body["@odata.count"] = len(items)
    return body


def select_fields(request: Request) -> list[str] | None:
    """The `$select` list."""
    raw = request.query_params.get("$select")
    return [s.strip() for s in raw.split(",") if s.strip()] if raw else None


_EQ = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")
_IN = re.compile(r"^\s*(\w+)\s+in\s+\((.*)\)\s*$")


def parse_filter(expression: str, allowed: set[str]) -> tuple[str, list[str]]:
    """`field eq 'v'` or `field in ('a','b')` -> (field, values); anything else is a 400."""
    match = _EQ.match(expression)
    if match:
        name, values = match.group(1), [match.group(2).replace("''", "'")]
    else:
        match = _IN.match(expression)
        if not match:
            raise GraphError(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified.")
        name = match.group(1)
        values = [v.strip().strip("'").replace("''", "'") for v in match.group(2).split(",") if v.strip()]
        if len(values) > 15:
            raise GraphError(400, "Request_BadRequest", "Too many values in the 'in' filter (at most 15).")
    if name not in allowed:
        raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported filter property '{name}'.")
    return name, values


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or Graph's 400."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return body
