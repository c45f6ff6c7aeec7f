"""The Graph gateway: every call the bridge makes to Microsoft Graph goes through here.

Requests are described by msgraph-sdk: each area module (users.py, groups.py, fido2.py, ...) asks the
gateway's GraphServiceClient for a request builder and hands the gateway the RequestInformation it
produces (method, URL from the builder's template, headers, the model serialized as the body). The
gateway sends it through the Graph SDK's HTTP client (msgraph-core's GraphClientFactory: Graph's
middleware, telemetry headers and redirects) with a bearer token from azure-identity. The request
adapter's own send is not in the path: it opens a tracing span per middleware and parses every answer
into models, which cost more CPU per call than the call's own HTTP work. The gateway adds what the features need
and the SDK does not give: retries we control (429, 503, 504, dropped
connections, honouring `Retry-After`), a throttle governor shared by every instance through the
`throttle` table (one write budget per tenant at Graph's bound, and one instance's 429 pauses that
tenant's writes everywhere), a concurrency cap per
tenant, a hand-built `$batch` with per-item retries (the SDK's batch helper drops ids and bodies: docs/architecture.md,
"Facts the code relies on"), paging that refuses incomplete reads, one translation of Graph's errors into the taxonomy
keeping Graph's request-id, and dry-run enforced here so no feature can forget it.

Throttling: https://learn.microsoft.com/graph/throttling (Retry-After, per-item throttling in $batch).
Batching: https://learn.microsoft.com/graph/json-batching (20 requests, dependsOn, 424).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx
import jwt
from azure.core.credentials_async import AsyncTokenCredential
from httpx_aiohttp import AiohttpTransport
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from shared.adapters.identity import get_token
from shared.domain import permissions
from shared.errors import (
    Ambiguous,
    BridgeError,
    Configuration,
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Stop,
    Throttled,
    Transient,
)
from shared.services.ports import (
    ApiVersion,
    BatchItem,
    BatchResult,
    Clock,
    Entity,
    EntityStore,
    GraphResponse,
    JsonObject,
)
from shared.topology import Table

#: What a request may be given as: built by a request builder, or an absolute link Graph gave
#: (`@odata.nextLink`, a stored `@odata.deltaLink`).
Request = RequestInformation | str

log = logging.getLogger(__name__)
#: Operational events for Application Insights (shared/adapters/telemetry.py): the alerts read them.
events = logging.getLogger("bridge.events")

BATCH_LIMIT = 20
RETRYABLE_STATUS = frozenset({429, 503, 504})
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# A retry of these after an unknown outcome cannot apply the change twice.
IDEMPOTENT_WRITES = frozenset({"PATCH", "PUT", "DELETE"})
_DRY_RUN_STATUS = 202


class SystemClock:
    """Wall-clock time."""

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.UTC)


class ThrottleGovernor:
    """Keeps the Graph writes of every instance under the tenant's bound, through the `throttle` table.

    Two rows per tenant (partition = tenant id):

    - "writeBudget": Graph's write limit per app and tenant, 3,000 writes per 150 s
      (https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits), kept as
      one token bucket (`tokens`, `at`: epoch seconds) that every instance draws from. An instance
      claims `CHUNK` writes at a time with a conditional update (one table write per `CHUNK` Graph
      writes) and spends them locally; when the bucket is empty it waits for the refill, so the
      instances together send no more writes than Graph accepts instead of finding the bound by 429s.
    - "writes": `pauseUntil`, the ISO time before which no instance sends that tenant a write, set from
      a 429's Retry-After (Graph also counts what this bucket does not see: other apps' writes in the
      tenant, other deployments). Each instance re-reads it at most once a second, in the background
      once it has read it the first time.

    The governor is advisory: when storage fails, writes go on (Graph's 429s still stop them).
    """

    REFRESH_SECONDS = 1.0
    #: Graph's write limit per app and tenant: this many writes per `WRITE_WINDOW` seconds.
    WRITE_BURST, WRITE_WINDOW = 3000.0, 150.0
    #: Writes an instance claims from the shared budget at once.
    CHUNK = 10
    #: Conditional updates tried before waiting a moment when other instances keep claiming first.
    CLAIM_ATTEMPTS = 8

    def __init__(self, entities: EntityStore | None, clock: Clock | None = None, *,
                 write_burst: float | None = WRITE_BURST, write_window: float = WRITE_WINDOW,
                 now: Callable[[], float] = time.time) -> None:
        self._entities = entities
        self._now = now
        self._clock = clock or SystemClock()
        self._known: dict[str, tuple[float, dt.datetime | None]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        #: None turns the shared budget off (the pause still applies).
        self._burst = write_burst
        self._rate = (write_burst or 0.0) / write_window
        self._held: dict[str, float] = {}
        self._claiming: dict[str, asyncio.Lock] = {}

    async def pause_until(self, tenant: str) -> dt.datetime | None:
        """The time before which writes to `tenant` must wait, if any.

        The first call for a tenant reads the shared row; later calls answer from what is known and, once
        it is a second old, refresh it beside the write instead of in front of it.
        """
        if self._entities is None:
            return self._known.get(tenant, (0.0, None))[1]
        if tenant not in self._known:
            await self._refresh(tenant)
        elif time.monotonic() - self._known[tenant][0] > self.REFRESH_SECONDS and tenant not in self._refreshing:
            task = asyncio.get_running_loop().create_task(self._refresh(tenant))
            self._refreshing[tenant] = task
            task.add_done_callback(lambda _: self._refreshing.pop(tenant, None))
        return self._known[tenant][1]

    async def _refresh(self, tenant: str) -> None:
        assert self._entities is not None
        try:
            row = await self._entities.get(Table.THROTTLE, tenant, "writes")
        except BridgeError:
            row = None  # the governor is advisory: a storage hiccup must not stop Graph work
        stored = _parse_time(row.data.get("pauseUntil")) if row else None
        until = self._known.get(tenant, (0.0, None))[1]
        until = max((t for t in (until, stored) if t is not None), default=None)
        self._known[tenant] = (time.monotonic(), until)

    async def wait(self, tenant: str, sleep: Callable[[float], Awaitable[None]], *, writes: int = 1) -> None:
        """Sleep until `tenant`'s write pause, if any, has passed, and `writes` fit in its shared budget."""
        until = await self.pause_until(tenant)
        if until is not None:
            delay = (until - self._clock.now()).total_seconds()
            if delay > 0:
                log.info("writes to tenant %s paused for %.1f s after a 429", tenant, delay)
                await sleep(delay)
        await self._take(tenant, max(1, writes), sleep)

    async def _take(self, tenant: str, count: int, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Spend `count` writes of what this instance holds, claiming more from the shared budget first."""
        if self._entities is None or self._burst is None:
            return
        lock = self._claiming.setdefault(tenant, asyncio.Lock())
        async with lock:
            while self._held.get(tenant, 0.0) < count:
                need = min(self._burst, max(float(self.CHUNK), count - self._held.get(tenant, 0.0)))
                delay = await self._claim(tenant, need)
                if delay is None:
                    return  # storage is failing: write unpaced rather than not at all
                if delay > 0:
                    await sleep(delay)
            self._held[tenant] -= count

    async def _claim(self, tenant: str, need: float) -> float | None:
        """Claim `need` writes from the shared bucket: 0 when claimed, else the seconds until they are there
        (None when storage fails)."""
        assert self._entities is not None
        assert self._burst is not None
        for _ in range(self.CLAIM_ATTEMPTS):
            try:
                row = await self._entities.get(Table.THROTTLE, tenant, "writeBudget")
            except BridgeError:
                return None
            now = self._now()
            tokens, at = self._burst, now
            if row is not None:
                tokens, at = float(row.data.get("tokens", self._burst)), float(row.data.get("at", now))
            tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
            if tokens + 1e-6 < need:
                # A millisecond more than the refill takes, so that rounding never leaves it just short.
                return (need - tokens) / self._rate + 0.001 if self._rate > 0 else None
            entity = Entity(tenant, "writeBudget", {"tokens": max(0.0, tokens - need), "at": now},
                            row.etag if row is not None else None)
            try:
                if row is None:
                    await self._entities.insert(Table.THROTTLE, entity)
                else:
                    await self._entities.update(Table.THROTTLE, entity)
            except Conflict:
                continue  # another instance claimed first: read again
            except BridgeError:
                return None
            self._held[tenant] = self._held.get(tenant, 0.0) + need
            return 0.0
        return random.uniform(0.01, 0.05)  # noqa: S311 - contention backoff, not a secret

    async def pause(self, tenant: str, seconds: float) -> None:
        """Record that `tenant` asked for `seconds` of quiet, for every instance."""
        until = self._clock.now() + dt.timedelta(seconds=seconds)
        _, known = self._known.get(tenant, (0.0, None))
        self._known[tenant] = (time.monotonic(), max(until, known) if known else until)
        if self._entities is None:
            return
        try:
            await self._entities.upsert(Table.THROTTLE, Entity(tenant, "writes", {
                "pauseUntil": until.isoformat(), "retryAfterSeconds": seconds}))
        except BridgeError:
            log.warning("could not share the throttle pause of tenant %s", tenant)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


class _GraphHttpClient(httpx.AsyncClient):
    """An httpx client on aiohttp whose close also closes the aiohttp session under Graph's middleware
    (msgraph-core's transport wrapper does not pass the close on)."""

    def __init__(self, transport: AiohttpTransport, timeout: httpx.Timeout) -> None:
        super().__init__(transport=transport, timeout=timeout)
        self._aiohttp = transport

    async def aclose(self) -> None:
        await super().aclose()
        await self._aiohttp.aclose()


def graph_http_client(verify: Any = True, *, timeout: float = 60.0) -> httpx.AsyncClient:
    """An httpx client with Graph's middleware, minus its retry handler (the gateway retries itself).

    Its transport is aiohttp (httpx-aiohttp): httpx's own (httpcore, anyio, h11) spent about 0.7 ms
    more CPU per Graph call, as much as the rest of a call's work together.
    """
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    client = _GraphHttpClient(AiohttpTransport(verify=verify, limits=limits), httpx.Timeout(timeout, connect=10.0))
    options = {RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False)}
    return cast(httpx.AsyncClient, GraphClientFactory.create_with_default_middleware(client=client, options=options))


def request_builders(graph_root: str, client: httpx.AsyncClient | None = None) -> GraphServiceClient:
    """A GraphServiceClient whose request builders describe requests to `graph_root` (v1.0).

    Only its builders are used (to_*_request_information); the gateway sends what they build. The base URL
    is set explicitly, without a trailing slash: the client would otherwise take the global cloud's.
    """
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider(), client=client or httpx.AsyncClient())
    adapter.base_url = f"{graph_root.rstrip('/')}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def select(builder: Any, fields: Sequence[str] | None = None, **query: Any) -> RequestConfiguration[Any]:
    """The RequestConfiguration of a builder's GET: `$select` of `fields`, and other query parameters by the
    builder's own names (filter, top, expand...)."""
    params_class = next(getattr(type(builder), name) for name in dir(type(builder))
                        if name.endswith("GetQueryParameters"))
    return RequestConfiguration(query_parameters=params_class(select=list(fields) if fields else None, **query))


class GraphApi(Protocol):
    """One connection's door to Microsoft Graph, as the area modules use it (GraphGateway implements it).

    Requests come from the request builders of `requests`; an absolute link Graph gave may stand for a GET.
    Writes are refused (and logged as planned) in dry-run. Throttling is honoured inside; errors arrive as the
    taxonomy, keeping Graph's request-id.
    """

    #: Graph's root URL, without a trailing slash: the cloud's Graph host, or the local simulator's.
    base: str
    #: msgraph-sdk's request builders for this connection.
    requests: GraphServiceClient

    async def get(self, request: Request, *, headers: Mapping[str, str] | None = None,
                  api: ApiVersion = "v1.0") -> JsonObject:
        """GET one resource; NotFound for 404."""
        ...

    def pages(self, request: Request, *, headers: Mapping[str, str] | None = None,
              api: ApiVersion = "v1.0") -> AsyncIterator[JsonObject]:
        """Yield every page (the whole JSON page, with `value` and `@odata.*Link`) following nextLink.

        A page without `value`, or a failed page, raises Stop: the read is incomplete.
        """
        ...

    async def send(self, request: RequestInformation, *, api: ApiVersion = "v1.0") -> GraphResponse:
        """A write. A lost response raises Ambiguous; in dry-run nothing is sent."""
        ...

    async def batch(self, items: Sequence[BatchItem], *, api: ApiVersion = "v1.0") -> list[BatchResult]:
        """Send items in batches of 20, retrying throttled and transient items on their own."""
        ...

    def url(self, request: RequestInformation, *, api: ApiVersion = "v1.0", relative: bool = False) -> str:
        """The request's URL on this connection's Graph host (for `@odata.bind` and `@odata.id`), or relative
        to the version root (a `$batch` item's `url`)."""
        ...


def url_of(request: Request, root: str) -> str:
    """The URL a request builder's RequestInformation stands for, under `root` (the version root, or "")."""
    if isinstance(request, str):
        return request
    request.path_parameters = {**request.path_parameters, "baseurl": root}
    return str(request.url).replace(" ", "%20")


def body_of(request: RequestInformation) -> JsonObject | None:
    """The JSON body a request builder serialized, or None."""
    if not request.content:
        return None
    parsed = json.loads(request.content)
    return parsed if isinstance(parsed, dict) else None


def method_of(request: RequestInformation) -> str:
    """The request's HTTP method."""
    method = request.http_method
    return str(method.value if method is not None else "GET")


class GraphGateway:
    """Implements GraphApi for one connection."""

    def __init__(self, *, connection: str, tenant_id: str, credential: AsyncTokenCredential, graph_base: str,
                 scope: str, verify: Any = True, governor: ThrottleGovernor | None = None, dry_run: bool = False,
                 max_concurrency: int = 16, max_attempts: int = 5, max_wait: float = 120.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.connection = connection
        self.tenant_id = tenant_id
        self.dry_run = dry_run
        self._base = graph_base.rstrip("/")
        self.base = self._base
        self._http = graph_http_client(verify)
        #: msgraph-sdk's request builders, on a request adapter over this gateway's HTTP client.
        self.requests = request_builders(self._base, self._http)
        self._credential = credential
        self._scope = scope
        self._governor = governor or ThrottleGovernor(None)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_attempts = max(1, max_attempts)
        self._max_wait = max_wait
        self._sleep = sleep
        #: Requests sent, and 429s seen, since start (for status pages and benchmarks).
        self.sent = 0
        self.throttled = 0

    async def token_claims(self) -> dict[str, Any]:
        """Claims of the access token this gateway sends: who the bridge is and what it was granted.

        Not verified here: it is our own token, fresh from the identity platform, read for its
        `oid` and `roles` (the application permissions granted to the app).
        """
        token = await get_token(self._credential, self._scope, connection=self.connection)
        claims: dict[str, Any] = jwt.decode(token.token, options={"verify_signature": False})
        return claims

    async def warm_up(self) -> float:
        """Sign in and open the connection with one small read, so the first real request pays for neither.

        Returns the seconds it took. A 403 still counts as warm (the token and the connection are ready);
        other failures are raised for the caller to report.
        """
        started = time.perf_counter()
        with contextlib.suppress(PermissionDenied):
            organization = self.requests.organization
            await self.get(organization.to_get_request_information(select(organization, ["id"])))
        return time.perf_counter() - started

    def _throttled(self, request: str, retry_after: float) -> None:
        """One `graph.throttled` event (a 429 from Graph), which the throttling alert counts."""
        events.warning("Graph throttled %s on connection %s; retrying after %.1f s", request, self.connection,
                       retry_after, extra={"custom_dimensions": {
                           "event": "graph", "action": "graph.throttled", "outcome": "throttled",
                           "connection": self.connection, "retryAfterSeconds": round(retry_after, 3)}})

    async def close(self) -> None:
        """Close connections and the credential."""
        await self._http.aclose()
        await self._credential.close()

    # ------------------------------------------------------------------ the port

    async def get(self, request: Request, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> JsonObject:
        """GET one resource (a path string, relative to the version root, is for tools and tests)."""
        response = await self._call("GET", self._url(request, api, params), headers=self._headers(request, headers))
        return response.body or {}

    async def pages(self, request: Request, *, params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> AsyncIterator[JsonObject]:
        """Every page, following @odata.nextLink; an incomplete read raises Stop."""
        url: str | None = self._url(request, api, params)
        path = _path_of(url or "")
        sent = self._headers(request, headers)
        while url:
            try:
                response = await self._call("GET", url, headers=sent)
            except Gone:
                raise
            except BridgeError as err:
                raise Stop(f"reading {path} stopped after a failed page: {err.detail}",
                           request_id=err.request_id) from err
            page = response.body or {}
            if not isinstance(page.get("value"), list):
                raise Stop(f"a page of {path} has no 'value': the read is incomplete", request_id=response.request_id)
            yield page
            next_link = page.get("@odata.nextLink")
            url = str(next_link) if next_link else None

    async def send(self, request: RequestInformation | str, path: str | None = None, *,
                   body: JsonObject | None = None, params: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None, api: ApiVersion = "v1.0") -> GraphResponse:
        """One write, as a request builder described it; refused and logged as planned in dry-run.

        Tools and tests may give a method and a path relative to the version root instead, with a JSON body.
        """
        if isinstance(request, str):
            method, url, sent = request, self._url(path or "", api, params), headers
        else:
            method, url, body, sent = method_of(request), self._url(request, api), body_of(request), \
                self._headers(request, headers)
        if self.dry_run:
            log.info("dry-run: would %s %s", method, _path_of(url))
            return GraphResponse(status=_DRY_RUN_STATUS, body={"dryRun": True, "method": method,
                                                               "path": _path_of(url)})
        return await self._call(method, url, body=body, headers=sent)

    async def batch(self, items: Sequence[BatchItem], *, api: ApiVersion = "v1.0") -> list[BatchResult]:
        """Send items 20 at a time; throttled or transient items are retried on their own."""
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise InvalidInput("batch item ids must be unique", field="id")
        results: dict[str, BatchResult] = {}
        for item in items:
            if self.dry_run and item.method in WRITE_METHODS:
                log.info("dry-run: would %s %s (batch item %s)", item.method, item.url, item.id)
                results[item.id] = BatchResult(item.id, _DRY_RUN_STATUS, {"dryRun": True})
        pending = [item for item in items if item.id not in results]
        for start in range(0, len(pending), BATCH_LIMIT):
            chunk = pending[start:start + BATCH_LIMIT]
            results.update(await self._batch_chunk(chunk, api))
        return [results[i] for i in ids]

    def url(self, request: RequestInformation, *, api: ApiVersion = "v1.0", relative: bool = False) -> str:
        """The request's URL on this connection's Graph host (its cloud's, never the global one), or relative
        to the version root."""
        return url_of(request, "" if relative else f"{self._base}/{api}")

    # ------------------------------------------------------------------ internals

    def _url(self, request: Request, api: ApiVersion, params: Mapping[str, str] | None = None) -> str:
        if not isinstance(request, str):
            return url_of(request, f"{self._base}/{api}")
        if request.startswith(("https://", "http://")):
            url = request  # a link Graph gave (nextLink, deltaLink), already complete
        else:
            url = f"{self._base}/{api}{request if request.startswith('/') else '/' + request}"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, safe="$,'()/:@ ")
        return url.replace(" ", "%20")

    @staticmethod
    def _headers(request: Request, extra: Mapping[str, str] | None) -> dict[str, str] | None:
        sent: dict[str, str] = {}
        if not isinstance(request, str):
            # The builder's headers (Accept), without the body's Content-Type: _send_once sets it.
            sent = {k: ", ".join(sorted(v)) for k, v in request.headers.get_all().items() if k != "content-type"}
        if extra:
            sent.update(extra)
        return sent or None

    async def _call(self, method: str, url: str, *, body: JsonObject | None = None,
                    headers: Mapping[str, str] | None = None) -> GraphResponse:
        write = method in WRITE_METHODS
        attempt = 0
        while True:
            attempt += 1
            if write:
                await self._governor.wait(self.tenant_id, self._sleep)
            try:
                response = await self._send_once(method, url, body, headers)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                failure = type(exc.__cause__ or exc).__name__
                if _never_sent(exc):
                    # Never reached the server: safe to retry any method.
                    if attempt >= self._max_attempts:
                        raise Transient(f"cannot connect to Graph: {failure}") from None
                    await self._sleep(self._backoff(attempt))
                    continue
                if write and method not in IDEMPOTENT_WRITES:
                    raise Ambiguous(f"{method} {_path_of(url)}: the connection failed after the request was "
                                    f"sent ({failure}); it may have been applied") from None
                if attempt >= self._max_attempts:
                    if write:
                        raise Ambiguous(f"{method} {_path_of(url)}: no answer after {attempt} attempts "
                                        f"({failure}); it may have been applied") from None
                    raise Transient(f"Graph did not answer ({failure})") from None
                await self._sleep(self._backoff(attempt))
                continue
            status = response.status_code
            request_id = response.headers.get("request-id")
            if status in RETRYABLE_STATUS:
                retry_after = _retry_after(response, self._backoff(attempt))
                if status == 429:
                    self.throttled += 1
                    self._throttled(f"{method} {_path_of(url)}", retry_after)
                    if write:
                        await self._governor.pause(self.tenant_id, retry_after)
                ambiguous_write = write and status == 504 and method not in IDEMPOTENT_WRITES
                if ambiguous_write:
                    raise Ambiguous(f"{method} {_path_of(url)}: Graph answered 504; the write may have been applied",
                                    request_id=request_id)
                if attempt >= self._max_attempts or retry_after > self._max_wait:
                    raise _translate(response, method, url)
                await self._sleep(retry_after + random.uniform(0, 0.1 * retry_after))  # noqa: S311 - jitter
                continue
            if status >= 400:
                raise _translate(response, method, url)
            return GraphResponse(status=status, body=_json(response), headers=dict(response.headers),
                                 request_id=request_id)

    async def _send_once(self, method: str, url: str, body: JsonObject | None,
                         headers: Mapping[str, str] | None) -> httpx.Response:
        if not url.startswith(self._base + "/"):
            # A link from an answer that leaves Graph's host: the token is for Graph alone.
            raise Stop(f"refusing to send Graph's token to {urlsplit(url).netloc!r}: it is for {self._base} only")
        token = await get_token(self._credential, self._scope, connection=self.connection)
        sent = {**(headers or {}), "Authorization": f"Bearer {token.token}"}
        content = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        request = self._http.build_request(method, url, headers=sent, content=content)
        async with self._slots:
            self.sent += 1
            return await self._http.send(request)

    def _backoff(self, attempt: int) -> float:
        base: float = min(30.0, 0.5 * 2 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret

    async def _batch_chunk(self, chunk: Sequence[BatchItem], api: ApiVersion) -> dict[str, BatchResult]:
        done: dict[str, BatchResult] = {}
        todo = list(chunk)
        attempt = 0
        while todo:
            attempt += 1
            payload = {"requests": [_batch_request(item) for item in todo]}
            if any(item.method in WRITE_METHODS for item in todo):
                await self._governor.wait(self.tenant_id, self._sleep,
                                          writes=sum(1 for item in todo if item.method in WRITE_METHODS))
            response = await self._call("POST", f"{self._base}/{api}/$batch", body=payload)
            by_id = {str(r.get("id")): r for r in (response.body or {}).get("responses", [])}
            retry: list[BatchItem] = []
            wait = 0.0
            for item in todo:
                answer = by_id.get(item.id)
                if answer is None:
                    retry.append(item)
                    continue
                status = int(answer.get("status", 500))
                item_headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
                retryable = status in RETRYABLE_STATUS and not (
                    status == 504 and item.method == "POST")
                if retryable and attempt < self._max_attempts:
                    retry.append(item)
                    wait = max(wait, _seconds(item_headers.get("retry-after"), self._backoff(attempt)))
                    if status == 429:
                        self.throttled += 1
                        self._throttled(f"$batch {item.method} {item.url}", _seconds(
                            item_headers.get("retry-after"), 0.0))
                    continue
                body = answer.get("body")
                done[item.id] = BatchResult(item.id, status, body if isinstance(body, dict) else None,
                                            item_headers, item_headers.get("request-id"))
            # Items that depend on a retried one go again with it (Graph answered them 424).
            retried = {i.id for i in retry}
            for item in todo:
                if item.depends_on in retried and item.id in done and done[item.id].status == 424:
                    del done[item.id]
                    retry.append(item)
            todo = [item for item in chunk if item in retry]
            if todo:
                if any(i.method in WRITE_METHODS for i in todo) and wait:
                    await self._governor.pause(self.tenant_id, wait)
                await self._sleep(wait or self._backoff(attempt))
        return done


def _batch_request(item: BatchItem) -> JsonObject:
    request: JsonObject = {"id": item.id, "method": item.method,
                           "url": item.url if item.url.startswith("/") else "/" + item.url}
    headers = dict(item.headers)
    if item.body is not None:
        request["body"] = item.body
        headers.setdefault("Content-Type", "application/json")
    if headers:
        request["headers"] = headers
    if item.depends_on:
        request["dependsOn"] = [item.depends_on]
    return request


def _never_sent(exc: Exception) -> bool:
    """Whether a failed request never reached the server: its connection could not be opened.

    httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout, one that could not
    connect and one that broke after the request went out alike, so the aiohttp error it chains
    decides; an httpx error without one (another transport) says it by its own type.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError)


def _path_of(url: str) -> str:
    return httpx.URL(url).path


def _json(response: httpx.Response) -> JsonObject | None:
    if response.status_code == 204 or not response.content:
        return None
    try:
        parsed = response.json()
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


def _retry_after(response: httpx.Response, default: float) -> float:
    return _seconds(response.headers.get("retry-after"), default)


def _translate(response: httpx.Response, method: str, url: str) -> BridgeError:
    """Graph's error answer as the taxonomy, with its request-id and message (never a request body)."""
    status = response.status_code
    request_id = response.headers.get("request-id")
    error = ((_json(response) or {}).get("error") or {}) if response.content else {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or response.reason_phrase or "error")
    what = f"Graph {method} {_path_of(url)}: {status} {code}: {message}".replace(":  :", ":")
    if status == 429:
        return Throttled(what, retry_after=_retry_after(response, 5.0), scope=response.headers.get(
            "x-ms-throttle-scope", ""), request_id=request_id)
    if status == 400:
        return InvalidInput(what, request_id=request_id)
    if status == 401:
        return Configuration(f"{what} - the connection's credential was refused; check its auth settings",
                             setting="CONNECTIONS")
    if status == 403:
        return _permission_denied(what, method, url, request_id)
    if status == 404:
        return NotFound(what, request_id=request_id)
    if status == 410:
        return Gone(what, request_id=request_id)
    if status in (409, 412):
        return Conflict(what, request_id=request_id)
    if status >= 500:
        return Transient(what, request_id=request_id)
    return InvalidInput(what, request_id=request_id)


def _permission_denied(what: str, method: str, url: str, request_id: str | None) -> PermissionDenied:
    """A 403 naming the permission (and directory role) the table says this call needs."""
    need = permissions.needed_for(method, _path_of(url))
    if need is None:
        return PermissionDenied(f"{what} - check the app's Graph permissions and directory roles "
                                "(POST /api/connections/{c}/test lists what is missing)", request_id=request_id)
    fix = f"grant the Microsoft Graph application permission {need.permission} (with admin consent)"
    if need.role:
        fix += f" and assign the directory role {need.role} to the bridge's service principal"
    return PermissionDenied(f"{what} - {fix}; see {need.doc or permissions.PERMISSIONS_REFERENCE}",
                            permission=need.permission, role=need.role, request_id=request_id)
