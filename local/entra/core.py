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
import math
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
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from local.entra.state import App, Store, Tenant
from local.entra.tokens import Signer

GRAPH_RESOURCE = "https://graph.microsoft.com"
RU_WINDOW = 10.0
APP_WRITES, APP_WRITE_WINDOW = 3000, 150.0
TENANT_WRITES, TENANT_WRITE_WINDOW = 18000, 300.0


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


RATES = {"latencyMs": "latency_ms", "errorRate": "error_rate", "throttleRate": "throttle_rate",
         "dropRate": "drop_rate", "ambiguousRate": "ambiguous_rate"}


@dataclass
class RouteFault:
    """Fault settings for requests whose path (after /v1.0 or /beta) matches `path`, a regular expression."""

    path: re.Pattern[str]
    method: str | None
    settings: dict[str, float]

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to the request."""
        return (self.method is None or self.method == method.upper()) and self.path.search(path) is not None

    def describe(self) -> dict[str, Any]:
        """The rule as the admin API shows it."""
        names = {v: k for k, v in RATES.items()}
        return {"path": self.path.pattern, "method": self.method, **{names[k]: v for k, v in self.settings.items()}}


def _rates(values: dict[str, Any], where: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in values.items():
        name = RATES.get(key, key)
        if name not in RATES.values():
            raise GraphError(400, "BadRequest", f"unknown fault setting {key!r}{where}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GraphError(400, "BadRequest", f"fault setting {key!r}{where} must be a number") from None
        if number < 0 or (name != "latency_ms" and number > 1):
            raise GraphError(400, "BadRequest", f"fault setting {key!r}{where} must be between 0 and 1"
                             if name != "latency_ms" else f"fault setting {key!r}{where} must not be negative")
        found[name] = number
    return found


@dataclass
class Faults:
    """Injected failures for Graph routes: rates between 0 and 1, latency in milliseconds.

    `routes` holds rules for some paths (and methods) only; the first matching rule's settings replace
    the global ones it names.
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0  # 503 before doing anything
    throttle_rate: float = 0.0  # 429 storms
    drop_rate: float = 0.0  # connection dropped before doing anything
    ambiguous_rate: float = 0.0  # writes: applied, then the connection dropped
    seed: int | None = None
    routes: list[RouteFault] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def update(self, values: dict[str, Any]) -> None:
        """Change settings from the admin API (camelCase or snake_case names); all or nothing."""
        values = dict(values)
        seed = values.pop("seed", self.seed)
        rules: list[RouteFault] | None = None
        if "routes" in values:
            raw = values.pop("routes")
            if not isinstance(raw, list):
                raise GraphError(400, "BadRequest", "fault 'routes' must be a list of rules")
            rules = []
            for n, rule in enumerate(raw):
                if not isinstance(rule, dict) or not isinstance(rule.get("path"), str):
                    raise GraphError(400, "BadRequest", f"fault rule {n} needs a 'path' (a regular expression)")
                rule = dict(rule)
                pattern, method = rule.pop("path"), rule.pop("method", None)
                try:
                    compiled = re.compile(pattern)
                except re.error as exc:
                    raise GraphError(400, "BadRequest", f"fault rule {n}: bad path pattern ({exc})") from None
                rules.append(RouteFault(compiled, str(method).upper() if method else None,
                                        _rates(rule, f" in rule {n}")))
        rates = _rates(values, "")
        if seed is not None and not isinstance(seed, int):
            raise GraphError(400, "BadRequest", "fault setting 'seed' must be an integer")
        for name, number in rates.items():
            setattr(self, name, number)
        if rules is not None:
            self.routes = rules
        if seed != self.seed:
            self.rng = random.Random(seed)  # noqa: S311 - fault injection, not security
            self.seed = seed

    def replace(self, values: dict[str, Any]) -> None:
        """Make `values` the whole fault set (what it leaves out is off); all or nothing."""
        fresh = Faults()
        fresh.update(values)
        for name in (*RATES.values(), "seed", "routes", "rng"):
            setattr(self, name, getattr(fresh, name))

    def describe(self) -> dict[str, Any]:
        """Current settings."""
        return {"latencyMs": self.latency_ms, "errorRate": self.error_rate, "throttleRate": self.throttle_rate,
                "dropRate": self.drop_rate, "ambiguousRate": self.ambiguous_rate, "seed": self.seed,
                "routes": [r.describe() for r in self.routes]}

    def settings_for(self, method: str, path: str) -> dict[str, float]:
        """The settings that apply to one request."""
        settings = {name: float(getattr(self, name)) for name in RATES.values()}
        local = path.split("/", 2)[2] if path.startswith(("/v1.0/", "/beta/")) else path
        for rule in self.routes:
            if rule.matches(method, "/" + local.lstrip("/")):
                settings.update(rule.settings)
                break
        return settings

    def roll(self, rate: float) -> bool:
        """True with probability `rate`."""
        return rate > 0 and self.rng.random() < rate


class Bucket:
    """A token bucket refilled continuously; `time_scale` compresses its window."""

    def __init__(self, capacity: float, window_seconds: float, time_scale: float) -> None:
        self.capacity = capacity
        self.time_scale = time_scale
        self.rate = capacity / window_seconds * time_scale
        self.tokens = capacity
        self.updated = time.monotonic()
        self.used = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, cost: float) -> float:
        """0 when `cost` can be spent now, else the real seconds until it can."""
        self._refill()
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate

    def peek(self) -> float:
        """Tokens available now, without spending any."""
        return min(self.capacity, self.tokens + (time.monotonic() - self.updated) * self.rate)

    def take(self, cost: float) -> float:
        """Spend `cost`; 0 when allowed, else the real seconds to wait (nothing spent)."""
        wait = self.wait(cost)
        if wait == 0:
            self.tokens -= cost
            self.used += cost
        return wait

    def usage(self) -> float:
        """The share of the budget spent in the current window (0 to 1)."""
        return 1 - self.tokens / self.capacity


def ru_limit(users: int) -> int:
    """Resource units per app and tenant per 10 s by tenant size (S <50, M 50-500, L >500 users)."""
    return 3500 if users < 50 else 5000 if users <= 500 else 8000


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


#: Graph's hosts in the global and national clouds (https://learn.microsoft.com/graph/deployments).
GRAPH_HOSTS = frozenset({"graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
                         "microsoftgraph.chinacloudapi.cn"})


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
        #: The same counters per calling app (client id), for the admin API.
        self.app_counters: dict[str, dict[str, float]] = {}
        #: The ASGI app serving this simulator (set by app.build), for routes that call other routes.
        self.app: Any = None

    @property
    def tenant(self) -> Tenant:
        """The simulated tenant."""
        return self.store.tenant

    @staticmethod
    def origin(request: Request) -> str:
        """The scheme and host the request was sent to. Links the client follows, and the references
        it binds, stay on that host, so the simulator stands in for any cloud's Graph host it is
        reached under (graph.microsoft.us, microsoftgraph.chinacloudapi.cn; https://learn.microsoft.com/graph/deployments)."""
        return f"{request.url.scheme}://{request.url.netloc}"

    def graph_origins(self, request: Request) -> tuple[str, ...]:
        """Where references in a request body (`@odata.bind`, `@odata.id`) may point: the cloud's Graph
        host the request was sent to; reached on 127.0.0.1, the simulator stands in for the global
        service and takes its host too."""
        if request.url.hostname in GRAPH_HOSTS:
            return (self.origin(request),)
        return (self.origin(request), "https://graph.microsoft.com")

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
        """Spend resource units (and a write); raise 429 over the limits. Returns headers to add.

        Header formats from https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits:
        `x-ms-throttle-scope` is `<Scope>/<Limit>/<ApplicationId>/<TenantId>`, and
        `x-ms-throttle-limit-percentage` (0.8 to 1.8) appears once more than 0.8 of a budget is used.
        """
        app = str(caller.claims.get("appid"))
        with self._lock:
            self.counters["requests"] += 1
            per_app = self.app_counters.setdefault(app, {"requests": 0, "throttled": 0, "writes": 0,
                                                          "resourceUnits": 0})
            per_app["requests"] += 1
        headers = {"x-ms-resource-unit": str(int(cost))}
        if not self.limits:
            self._count(per_app, cost, write)
            return headers
        tenant_id = self.tenant.tenantId
        checks = [(self._bucket(f"ru:{app}", ru_limit(len(self.tenant.users)), RU_WINDOW), cost,
                   f"Tenant_Application/ReadWrite/{app}/{tenant_id}", "ResourceUnitLimitExceeded")]
        if write:
            checks.append((self._bucket(f"w:{app}", APP_WRITES, APP_WRITE_WINDOW), 1,
                           f"Tenant_Application/Write/{app}/{tenant_id}", "WriteLimitExceeded"))
            checks.append((self._bucket("w:tenant", TENANT_WRITES, TENANT_WRITE_WINDOW), 1,
                           f"Tenant/Write/{app}/{tenant_id}", "WriteLimitExceeded"))
        with self._lock:
            waits = [(bucket.wait(amount), scope, info) for bucket, amount, scope, info in checks]
            wait, scope, info = max(waits, key=lambda w: w[0])
            if wait <= 0:
                for bucket, amount, _, _ in checks:
                    bucket.take(amount)
                used = max(bucket.usage() for bucket, _, _, _ in checks)
                if used > 0.8:
                    headers["x-ms-throttle-limit-percentage"] = f"{min(used, 1.8):.1f}"
        if wait > 0:
            with self._lock:
                self.counters["throttled"] += 1
                per_app["throttled"] += 1
            # The wait is in simulated seconds; the client waits real ones.
            retry = max(1, math.ceil(wait))
            raise GraphError(429, "TooManyRequests", "Please retry again later.", {
                "Retry-After": str(retry), "x-ms-throttle-scope": scope, "x-ms-throttle-information": info})
        self._count(per_app, cost, write)
        return headers

    def _count(self, per_app: dict[str, float], cost: float, write: bool) -> None:
        with self._lock:
            self.counters["resourceUnits"] += cost
            per_app["resourceUnits"] += cost
            if write:
                self.counters["writes"] += 1
                per_app["writes"] += 1

    async def before(self, write: bool, request: Request | None = None) -> Response | None:
        """Apply injected latency and failures that happen before any work; a response ends the request."""
        faults = self.faults
        settings = faults.settings_for(request.method, request.url.path) if request is not None else \
            faults.settings_for("GET", "/")
        if settings["latency_ms"]:
            await asyncio.sleep(settings["latency_ms"] / 1000)
        if faults.roll(settings["drop_rate"]):
            return DroppedConnection()
        if faults.roll(settings["throttle_rate"]):
            raise GraphError(429, "TooManyRequests", "Please retry again later.", {"Retry-After": "1"})
        if faults.roll(settings["error_rate"]):
            raise GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable.")
        return None

    def ambiguous(self, write: bool, request: Request | None = None) -> bool:
        """Whether to drop the connection after applying this write."""
        if not write:
            return False
        settings = self.faults.settings_for(request.method, request.url.path) if request is not None else \
            self.faults.settings_for("GET", "/")
        return self.faults.roll(settings["ambiguous_rate"])


GraphHandler = Callable[[Request, Caller], Awaitable[Response | dict[str, Any] | None]]


def graph_route(sim: Simulator, handler: GraphHandler, *, permissions: tuple[str, ...], write: bool = False,
                cost: float = 1.0) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a Graph handler with faults, authentication, authorization, limits and Graph's error format."""
    async def endpoint(request: Request) -> Response:
        try:
            dropped = await sim.before(write, request)
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
            if sim.ambiguous(write, request):
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


def group_or_404(tenant: Any, key: str) -> Any:
    """The tenant's group `key`, or Graph's 404 for a missing directory object."""
    group = tenant.groups.get(key)
    if group is None:
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    return group


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
    if request.query_params.get("$count") == "true" and counting(request):
        body["@odata.count"] = len(items)
    return body


def counting(request: Request) -> bool:
    """Whether the request asks for advanced query capabilities (`ConsistencyLevel: eventual`).

    Without the header `$count=true` is ignored (the response has no `@odata.count`) and the `$count`
    segment is a 400: https://learn.microsoft.com/graph/aad-advanced-queries.
    """
    return request.headers.get("consistencylevel", "").strip().lower() == "eventual"


def count_segment(request: Request, items: int) -> Response:
    """The answer to `GET /{collection}/$count`: the number as text/plain, or Graph's 400 without the header."""
    if not counting(request):
        raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")
    return PlainTextResponse(str(items))


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
