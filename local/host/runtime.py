"""A local Functions host for the Python v2 programming model.

It reads the app's own binding metadata (`get_functions()` once, each function's function.json), so no
list of functions is kept by hand, and serves:

- HTTP triggers under the route prefix of host.json, with Functions route templates, 404 versus 405,
  and auth levels checked against function keys (`x-functions-key` header or `code` query);
- App Service Authentication emulation (`WEBSITE_AUTH_ENABLED=true`), before any routing as in Azure:
  on a path not excluded (infra/app-service-auth.json, the file the Bicep deploys), a request without
  a token is refused (`Return401`), and a bearer token issued by the configured issuer (the Entra
  simulator) is validated against its JWKS and passed on as `X-MS-CLIENT-PRINCIPAL`, as Azure does;
  client-sent principal headers are always dropped;
- timer triggers with six-field NCRONTAB schedules, `%Setting%` resolution, run-on-startup and the
  past-due flag;
- queue triggers on Azure Storage (Azurite) with host.json semantics: batch size, visibility timeout
  after a failure, dequeue count, and `<queue>-poison` after maxDequeueCount; base64 messages;
- queue output bindings (`func.Out`) on any function: what the function `set()` is sent, base64, only
  when the function succeeds (a list sends one message per item).

On shutdown it stops taking work and waits for what is in flight.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import inspect
import json
import logging
import os
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import jwt
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.functions.warmup import WarmUpContext
from azure.storage.queue.aio import QueueClient
from croniter import croniter
from starlette.requests import Request
from starlette.responses import Response

from local.host.routing import RouteTemplate
from local.host.schedule import NEVER, ScheduleMonitor, ScheduleStatus, monitored, next_after, past_due

log = logging.getLogger("local.host")
_SETTING = re.compile(r"%([A-Za-z0-9_]+)%")
ADMIN_RUN = re.compile(r"^/admin/functions/[^/]+/?\Z", re.IGNORECASE)
PROBLEM = "application/problem+json"
#: The default of the app's MAX_BODY_BYTES (docs/settings.md).
DEFAULT_MAX_BODY = 65536
#: The Azure Functions host's default FUNCTIONS_REQUEST_BODY_SIZE_LIMIT (100 MB).
AZURE_MAX_BODY = 104857600


def resolve(value: str) -> str:
    """Replace `%Setting%` with the app setting's value, as the host does."""
    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"app setting {name} (used as %{name}%) is not set")
        return os.environ[name]
    return _SETTING.sub(setting, value)


def body_limit() -> int:
    """The request body cap: the app's MAX_BODY_BYTES, never above Azure's FUNCTIONS_REQUEST_BODY_SIZE_LIMIT.

    In Azure the Functions host refuses bodies above FUNCTIONS_REQUEST_BODY_SIZE_LIMIT (100 MB by
    default) before the worker sees them:
    https://learn.microsoft.com/azure/azure-functions/functions-app-settings#functions_request_body_size_limit
    """
    limits = []
    for name, default in (("MAX_BODY_BYTES", DEFAULT_MAX_BODY), ("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", AZURE_MAX_BODY)):
        raw = os.environ.get(name) or str(default)
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"app setting {name} must be a whole number of bytes, not {raw!r}") from None
        if value < 1:
            raise ValueError(f"app setting {name} must be at least 1 byte")
        limits.append(value)
    return min(limits)


def disabled(name: str) -> bool:
    """Whether the app setting `AzureWebJobs.<name>.Disabled` is true (or "1"), as the host reads it.

    https://learn.microsoft.com/azure/azure-functions/disable-function; `AzureWebJobs__<name>__Disabled`
    is read too, for environments whose variable names cannot hold a dot.
    """
    for key in (f"AzureWebJobs.{name}.Disabled", f"AzureWebJobs__{name}__Disabled"):
        if os.environ.get(key, "").strip().lower() in ("true", "1"):
            return True
    return False


#: The host's own settings for several instances (docs/local-host.md, "Several instances").
MESSAGE_LEASE_SETTING = "LOCAL_HOST_MESSAGE_LEASE_SECONDS"
TIMERS_SETTING = "LOCAL_HOST_TIMERS"


def message_lease() -> float:
    """MESSAGE_LEASE_SETTING in seconds (default 600, as Azure's queue listener), at least 2."""
    raw = os.environ.get(MESSAGE_LEASE_SETTING) or "600"
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"app setting {MESSAGE_LEASE_SETTING} must be a number of seconds, not {raw!r}") from None
    if value < 2:
        raise ValueError(f"app setting {MESSAGE_LEASE_SETTING} must be at least 2 seconds")
    return value


def _timespan(value: str | None, default: float) -> float:
    if not value:
        return default
    hours, minutes, seconds = (float(p) for p in value.split(":"))
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class QueueOutput:
    """A queue output binding: the argument name and where its messages go."""

    arg_name: str
    queue: str
    connection: str


class OutValue(func.Out[Any]):
    """The value a function sets on an output binding."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        """Set the output value."""
        self.value = val

    def get(self) -> Any:
        """The output value."""
        return self.value


@dataclass
class HttpFunction:
    """An HTTP-triggered function."""

    name: str
    template: RouteTemplate
    methods: frozenset[str]
    auth_level: str
    call: Callable[..., Awaitable[Any]]
    arg_name: str
    outputs: list[QueueOutput] = field(default_factory=list)


@dataclass
class TimerFunction:
    """A timer-triggered function."""

    name: str
    schedule: str
    run_on_startup: bool
    call: Callable[..., Awaitable[Any]]
    arg_name: str
    outputs: list[QueueOutput] = field(default_factory=list)
    use_monitor: bool | None = None
    #: The schedule with settings resolved, when its status is kept in storage (else None).
    schedule_resolved: str | None = None
    status: ScheduleStatus | None = None


@dataclass
class WarmupFunction:
    """A warmup-triggered function: run once when the instance starts."""

    name: str
    call: Callable[..., Awaitable[Any]]
    arg_name: str


@dataclass
class QueueFunction:
    """A queue-triggered function."""

    name: str
    queue: str
    connection: str
    call: Callable[..., Awaitable[Any]]
    arg_name: str
    outputs: list[QueueOutput] = field(default_factory=list)


@dataclass
class HostConfig:
    """What the host needs beyond the app: prefix, queue settings, keys, authentication."""

    route_prefix: str = "api"
    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 30.0
    max_polling_interval: float = 2.0
    function_keys: dict[str, str] = field(default_factory=dict)
    master_key: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_ssl: ssl.SSLContext | None = None
    auth_enabled: bool = False
    auth_excluded_paths: tuple[str, ...] = ()
    auth_action: str = "Return401"
    #: Largest request body; larger ones get 413 before any function runs.
    max_body_bytes: int = DEFAULT_MAX_BODY
    #: host.json extensions.queues.messageEncoding: "base64" (the default) or "none".
    message_encoding: str = "base64"
    #: Seconds a received message stays invisible while its function runs, renewed at half that time
    #: (MESSAGE_LEASE_SETTING; Azure's queue listener uses 10 minutes). An instance that dies stops
    #: renewing, so its message is visible to the other instances again at most this long after.
    message_lease: float = 600.0
    #: Whether this instance runs the timers (`--instances` runs them on the first instance only).
    timers: bool = True

    @classmethod
    def from_host_json(cls, path: Path, **overrides: Any) -> HostConfig:
        """Read host.json's http and queues sections."""
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        # App settings override host.json the way Azure does: AzureFunctionsJobHost__extensions__queues__x.
        for key, value in os.environ.items():
            if key.startswith("AzureFunctionsJobHost__"):
                node = data
                *parents, leaf = key.split("__")[1:]
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        extensions = data.get("extensions", {})
        queues = extensions.get("queues", {})
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"host.json extensions.queues.messageEncoding is {encoding!r}; use 'base64' or 'none'")
        overrides.setdefault("max_body_bytes", body_limit())
        overrides.setdefault("message_lease", message_lease())
        overrides.setdefault("timers", os.environ.get(TIMERS_SETTING, "on").strip().lower() != "off")
        return cls(route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")).strip("/"),
                   batch_size=int(queues.get("batchSize", 16)), max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
                   visibility_timeout=_timespan(queues.get("visibilityTimeout"), 0.0),
                   max_polling_interval=_timespan(queues.get("maxPollingInterval"), 2.0), message_encoding=encoding,
                   **overrides)


class LocalHost:
    """Serves one FunctionApp."""

    def __init__(self, app: func.FunctionApp, config: HostConfig) -> None:
        self.config = config
        self.http: list[HttpFunction] = []
        self.timers: list[TimerFunction] = []
        self.queues: list[QueueFunction] = []
        self.warmups: list[WarmupFunction] = []
        self._load(app)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._warming: list[asyncio.Task[None]] = []
        self._jwks: jwt.PyJWKClient | None = None
        self._manual: set[asyncio.Task[None]] = set()
        self._schedule: ScheduleMonitor | None = None

    # ------------------------------------------------------------------ metadata

    def _load(self, app: func.FunctionApp) -> None:
        for function in app.get_functions():
            spec = json.loads(function.get_function_json())
            trigger = next(b for b in spec["bindings"] if b["type"].endswith("Trigger"))
            call = function.get_user_function()
            name = str(function.get_function_name())
            outputs = [QueueOutput(b["name"], resolve(b["queueName"]), b.get("connection") or "AzureWebJobsStorage")
                       for b in spec["bindings"] if b["type"] == "queue" and str(b.get("direction")).upper() == "OUT"]
            if trigger["type"] == "httpTrigger":
                methods = frozenset(m.upper() for m in trigger.get("methods") or
                                    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
                self.http.append(HttpFunction(name, RouteTemplate.compile(str(trigger.get("route") or name)), methods,
                                              str(trigger.get("authLevel", "FUNCTION")).upper(), call,
                                              trigger["name"], outputs))
            elif trigger["type"] == "timerTrigger":
                self.timers.append(TimerFunction(name, trigger["schedule"], bool(trigger.get("runOnStartup")), call,
                                                 trigger["name"], outputs, trigger.get("useMonitor")))
            elif trigger["type"] == "queueTrigger":
                self.queues.append(QueueFunction(name, resolve(trigger["queueName"]),
                                                 trigger.get("connection") or "AzureWebJobsStorage", call,
                                                 trigger["name"], outputs))
            elif trigger["type"] == "warmupTrigger":
                self.warmups.append(WarmupFunction(name, call, trigger["name"]))
            else:
                log.warning("function %s has a %s trigger, which this host does not run", name, trigger["type"])
        # Literal segments win over parameters, as in ASP.NET routing.
        self.http.sort(key=lambda f: -f.template.literal_segments)

    # ------------------------------------------------------------------ HTTP

    async def handle(self, request: Request) -> Response:
        """Route one HTTP request to its function."""
        # App Service Authentication runs in front of the Functions host, so before routing and keys.
        auth = await self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return self._too_large(int(declared))
        if ADMIN_RUN.match(str(request.scope["path"])):
            return await self._admin_run(request)
        prefix = "/" + self.config.route_prefix if self.config.route_prefix else ""
        # The decoded path as sent: `request.url` goes through urlsplit, which drops CR, LF and tab.
        path = str(request.scope["path"])
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            # No route template serves a control character, not even a catch-all: it is never a resource name.
            return _problem(404, "Not found", f"no function serves {path!r}: the path holds a control character")
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return _problem(404, "Not found", f"no function serves {path}")
        sub = path[len(prefix):] or "/"
        candidates = [(f, params) for f in self.http if (params := f.template.match(sub)) is not None]
        if not candidates:
            return _problem(404, "Not found", f"no function serves {path}")
        chosen = next(((f, p) for f, p in candidates if request.method in f.methods), None)
        if chosen is None:
            allowed = sorted({m for f, _ in candidates for m in f.methods})
            return _problem(405, "Method not allowed", f"{request.method} is not allowed on {path}",
                            {"Allow": ", ".join(allowed)})
        function, params = chosen
        if disabled(function.name) and not self._master(request):
            # A disabled function still runs when called with the master key; any other key gets a 404.
            return _problem(404, "Not found", f"function {function.name} is disabled "
                            f"(app setting AzureWebJobs.{function.name}.Disabled)")
        # Read (up to the cap) before anything else, so an oversized body is a 413 on every route.
        body = await self._body(request)
        if body is None:
            return self._too_large(None)
        denied = self._check_key(request, function.auth_level)
        if denied is not None:
            return denied
        headers = {k: v for k, v in request.headers.items() if not k.lower().startswith("x-ms-client-principal")}
        headers.update(auth)
        http_request = func.HttpRequest(request.method, str(request.url), headers=headers,
                                        params=dict(request.query_params), route_params=params, body=body)
        try:
            result = await self._invoke(function.call, function.outputs, **{function.arg_name: http_request})
        except Exception:
            log.exception("function %s failed", function.name)
            return _problem(500, "Internal error", "the function failed; see the host log")
        if not isinstance(result, func.HttpResponse):
            return Response(status_code=204)
        response_headers = {k: v for k, v in result.headers.items() if k.lower() != "content-length"}
        return Response(content=result.get_body(), status_code=result.status_code, headers=response_headers,
                        media_type=result.mimetype)

    async def _body(self, request: Request) -> bytes | None:
        """The request body, read only up to the cap (a chunked body has no length to check first)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int | None) -> Response:
        found = f"is {size} bytes" if size is not None else "is larger than that"
        return _problem(413, "Request body too large", f"the request body {found}; the limit is "
                        f"{self.config.max_body_bytes} bytes (app setting MAX_BODY_BYTES)")

    async def _admin_run(self, request: Request) -> Response:
        """`POST /admin/functions/{name}` with the master key: run a timer or queue function now.

        As the Functions host does (https://learn.microsoft.com/azure/azure-functions/functions-manually-run-non-http):
        the body is `{"input": "..."}` (a queue function gets it as the message), the answer is 202
        and the function runs in the background; a disabled function runs too: the master key runs it in Azure
        as well (https://learn.microsoft.com/azure/azure-functions/disable-function).
        """
        if request.method != "POST":
            return _problem(405, "Method not allowed", "the admin endpoint takes POST", {"Allow": "POST"})
        if not self._master(request):
            return _problem(401, "Authentication required", "the admin endpoint needs the master key in the "
                            "x-functions-key header (MasterKey in local.settings.json)")
        raw = await self._body(request)
        if raw is None:
            return self._too_large(None)
        try:
            invocation = json.loads(raw or b"null")
        except ValueError:
            invocation = None
        if not isinstance(invocation, dict) or not isinstance(invocation.get("input", ""), str):
            return _problem(400, "Bad request", 'the body must be a JSON object {"input": "<text>"}; '
                            "input is a string (the message, for a queue function)")
        text = str(invocation.get("input") or "")
        name = str(request.scope["path"]).rstrip("/").rsplit("/", 1)[-1].lower()
        timer = next((t for t in self.timers if t.name.lower() == name), None)
        queue = next((q for q in self.queues if q.name.lower() == name), None)
        if timer is None and queue is None:
            if any(f.name.lower() == name for f in self.http):
                return _problem(400, "Bad request", f"{name} is an HTTP function: call its route instead")
            known = ", ".join(sorted([t.name for t in self.timers] + [q.name for q in self.queues]))
            return _problem(404, "Not found", f"no timer or queue function is named {name} (known: {known})")
        if timer is not None:
            work = self._fire(timer, past_due=False, manual=True)
        else:
            assert queue is not None
            work = self._run_message(queue, text)
        task = asyncio.create_task(work, name=f"admin:{name}")
        self._manual.add(task)
        task.add_done_callback(self._manual.discard)
        log.info("admin: %s %s started on demand", "timer" if timer else "queue function", name)
        return Response(status_code=202)

    def _master(self, request: Request) -> bool:
        given = request.headers.get("x-functions-key") or request.query_params.get("code") or ""
        master = self.config.master_key
        return bool(master) and hmac.compare_digest(given.encode(), str(master).encode())

    async def _run_message(self, queue: QueueFunction, text: str) -> None:
        now = dt.datetime.now(dt.UTC)
        payload = QueueMessage(  # type: ignore[no-untyped-call]
            id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1, expiration_time=now + dt.timedelta(days=7),
            insertion_time=now, time_next_visible=now, pop_receipt=None)
        try:
            await self._invoke(queue.call, queue.outputs, **{queue.arg_name: payload})
        except Exception:
            log.exception("function %s failed on the message given to the admin endpoint", queue.name)

    def _check_key(self, request: Request, level: str) -> Response | None:
        if level == "ANONYMOUS":
            return None
        given = request.headers.get("x-functions-key") or request.query_params.get("code")
        valid = {self.config.master_key} if level == "ADMIN" else {*self.config.function_keys.values(),
                                                                   self.config.master_key}
        valid.discard(None)
        if not given or not any(hmac.compare_digest(given.encode(), str(key).encode()) for key in valid):
            return _problem(401, "Authentication required",
                            "this function needs a function key: send it as the x-functions-key header or the "
                            "code query parameter (keys are in local.settings.json under FunctionKeys)")
        return None

    def _excluded(self, path: str) -> bool:
        """Whether `path` is one of globalValidation's excludedPaths: an exact path, or a prefix ending in `/*`.

        https://learn.microsoft.com/azure/app-service/configure-authentication-file-based
        """
        for entry in self.config.auth_excluded_paths:
            if entry.endswith("/*") and path.startswith(entry[:-1]):
                return True
            if path == entry:
                return True
        return False

    async def _authenticate(self, request: Request) -> dict[str, str] | Response:
        """App Service Authentication: validate a bearer token and describe the caller as Azure does.

        With authentication on, a path not excluded needs a valid Entra token: without one the request
        never reaches the host (unauthenticatedClientAction Return401, or Return403); an excluded path is
        passed on untouched, its Authorization header included.
        https://learn.microsoft.com/azure/app-service/overview-authentication-authorization
        """
        if not self.config.auth_enabled or self._excluded(request.url.path):
            return {}
        header = request.headers.get("authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer realm="bridge"'}
        if not header.lower().startswith("bearer "):
            if self.config.auth_action == "AllowAnonymous":
                return {}
            status = 403 if self.config.auth_action == "Return403" else 401
            return _problem(status, "Authentication required", "App Service Authentication is on and this path is "
                            "not excluded: send an Entra access token for the bridge's API as Authorization: "
                            "Bearer", challenge)
        if not self.config.auth_issuer:
            return _problem(401, "Authentication required", "the bearer token cannot be validated: set "
                            "LOCAL_AUTH_ISSUER to the Entra simulator's issuer", challenge)
        token = header[7:].strip()
        try:
            claims = await asyncio.to_thread(self._validate, token)
        except jwt.PyJWTError as exc:
            return _problem(401, "Authentication required", f"the bearer token was refused: {type(exc).__name__}",
                            challenge)
        principal_claims = [{"typ": k, "val": str(v)} for k, v in claims.items() if not isinstance(v, list)]
        principal_claims += [{"typ": "roles", "val": str(r)} for r in claims.get("roles", [])]
        encoded = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": principal_claims, "name_typ": "name",
                                               "role_typ": "roles"}).encode()).decode()
        return {"x-ms-client-principal": encoded, "x-ms-client-principal-id": str(claims.get("oid", "")),
                "x-ms-client-principal-name": str(claims.get("name") or claims.get("appid") or claims.get("oid")),
                "x-ms-client-principal-idp": "aad"}

    def _validate(self, token: str) -> dict[str, Any]:
        issuer = str(self.config.auth_issuer)
        if self._jwks is None:
            base = issuer[:-len("/v2.0")] if issuer.endswith("/v2.0") else issuer
            self._jwks = jwt.PyJWKClient(f"{base}/discovery/v2.0/keys", ssl_context=self.config.auth_ssl)
        key = self._jwks.get_signing_key_from_jwt(token)
        # The audiences the Bicep allows: the app's client id and its api:// URI.
        audience = self.config.auth_audience
        audiences = [audience, f"api://{audience}"] if audience and not audience.startswith("api://") else audience
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], issuer=issuer,
                                            audience=audiences,
                                            options={"require": ["exp", "iss", "aud"]})
        return claims

    # ------------------------------------------------------------------ timers and queues

    async def start(self) -> None:
        """Start warm-up functions, timers and queue listeners.

        Warm-up runs beside the others rather than before them: locally there is no load balancer to
        hold traffic back, and a slow or unreachable dependency must not delay the host's first answer.
        """
        for warmup in self.warmups:
            self._warming.append(asyncio.create_task(self._warm(warmup), name=f"warmup:{warmup.name}"))
        self._schedule = ScheduleMonitor(os.environ.get("AzureWebJobsStorage"),  # noqa: SIM112 - Azure's name
                                         os.environ.get("AzureFunctionsWebHost__hostid") or "local")  # noqa: SIM112
        for timer in self.timers:
            if not self.config.timers:
                log.info("timer %s runs on another instance (%s=off)", timer.name, TIMERS_SETTING)
                continue
            if disabled(timer.name):
                log.info("timer %s is disabled (AzureWebJobs.%s.Disabled); the admin endpoint still runs it",
                         timer.name, timer.name)
                continue
            self._tasks.append(asyncio.create_task(self._run_timer(timer), name=f"timer:{timer.name}"))
        for queue in self.queues:
            if disabled(queue.name):
                log.info("queue function %s is disabled (AzureWebJobs.%s.Disabled)", queue.name, queue.name)
                continue
            self._tasks.append(asyncio.create_task(self._run_queue(queue), name=f"queue:{queue.name}"))

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work and wait (up to `grace` seconds) for work in flight."""
        self._stopping.set()
        for task in self._warming:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        if self._manual:
            await asyncio.wait(self._manual, timeout=grace)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._schedule is not None:
            await self._schedule.close()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the host is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    async def _invoke(self, call: Callable[..., Awaitable[Any]], outputs: list[QueueOutput], **kwargs: Any) -> Any:
        """Run one invocation (tracked for graceful shutdown), then send what it set on its outputs."""
        values = {o.arg_name: OutValue() for o in outputs}
        task = asyncio.ensure_future(self._run(call, outputs, values, kwargs))
        self._in_flight.add(task)
        try:
            return await task
        finally:
            self._in_flight.discard(task)

    async def _run(self, call: Callable[..., Awaitable[Any]], outputs: list[QueueOutput],
                   values: dict[str, OutValue], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(call):
            result = await call(**kwargs, **values)
        else:
            # Plain functions run on a worker thread, as the Python worker runs them.
            result = await asyncio.to_thread(call, **kwargs, **values)
        for output in outputs:
            value = values[output.arg_name].get()
            if value is not None:
                await self._send(output, value if isinstance(value, list) else [value])
        return result

    async def _send(self, output: QueueOutput, items: list[Any]) -> None:
        connection = os.environ.get(output.connection)
        if not connection:
            raise KeyError(f"queue output {output.arg_name} needs the app setting {output.connection}")
        async with QueueClient.from_connection_string(connection, output.queue) as client:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            for item in items:
                text = item if isinstance(item, str | bytes) else json.dumps(item)
                raw = text if isinstance(text, bytes) else text.encode()
                await client.send_message(base64.b64encode(raw).decode() if self.config.message_encoding == "base64"
                                          else raw.decode())

    async def _run_timer(self, timer: TimerFunction) -> None:
        try:
            schedule = resolve(timer.schedule)
            cron = croniter(schedule, dt.datetime.now(dt.UTC), second_at_beginning=True)
        except (KeyError, ValueError) as exc:
            log.error("timer %s cannot start: %s", timer.name, exc)
            return
        missed = await self._check_schedule(timer, schedule)
        if missed:
            await self._fire(timer, past_due=True)
        elif timer.run_on_startup:
            await self._fire(timer, past_due=False)
        while True:
            due: dt.datetime = cron.get_next(dt.datetime)
            if await self._sleep((due - dt.datetime.now(dt.UTC)).total_seconds()):
                return
            late = (dt.datetime.now(dt.UTC) - due).total_seconds()
            await self._fire(timer, past_due=late > 5, due=due)

    async def _check_schedule(self, timer: TimerFunction, schedule: str) -> bool:
        """Read (or first write) the timer's schedule status; True when a run was missed while down."""
        now = dt.datetime.now(dt.UTC)
        monitor = self._schedule
        if monitor is None or not monitor.enabled or not monitored(schedule, timer.use_monitor, now):
            timer.schedule_resolved = None
            return False
        timer.schedule_resolved = schedule
        stored = await monitor.read(timer.name)
        if stored is None:
            timer.status = ScheduleStatus(NEVER, next_after(schedule, now), now)
            await monitor.write(timer.name, timer.status)
            return False
        checked, missed = past_due(schedule, stored, now)
        if checked != stored:
            await monitor.write(timer.name, checked)
        timer.status = checked
        if missed:
            log.warning("timer %s missed its run due at %s; running it once now (past due)", timer.name,
                        checked.next.isoformat())
        return missed

    async def _warm(self, warmup: WarmupFunction) -> None:
        try:
            await self._invoke(warmup.call, [], **{warmup.arg_name: WarmUpContext()})
        except Exception:
            log.exception("warm-up function %s failed", warmup.name)

    async def _fire(self, timer: TimerFunction, *, past_due: bool, due: dt.datetime | None = None,
                    manual: bool = False) -> None:
        status = timer.status.to_binding() if timer.status is not None else None
        try:
            await self._invoke(timer.call, timer.outputs, **{timer.arg_name: TimerRequest(
                past_due=past_due, schedule_status=status)})
        except Exception:
            log.exception("timer %s failed", timer.name)
        # A run on demand is not a scheduled run: the schedule status stays as it is (as in Azure).
        if manual or self._schedule is None or timer.schedule_resolved is None:
            return
        now = dt.datetime.now(dt.UTC)
        timer.status = ScheduleStatus(due or now, next_after(timer.schedule_resolved, now), now)
        await self._schedule.write(timer.name, timer.status)

    async def _run_queue(self, queue: QueueFunction) -> None:
        connection = os.environ.get(queue.connection)
        if not connection:
            log.error("queue function %s needs the app setting %s (a storage connection string)", queue.name,
                      queue.connection)
            return
        client = QueueClient.from_connection_string(connection, queue.queue)
        poison = QueueClient.from_connection_string(connection, f"{queue.queue}-poison")
        async with client, poison:
            for c in (client, poison):
                with contextlib.suppress(ResourceExistsError):
                    await c.create_queue()
            idle = 0.1
            slots = asyncio.Semaphore(self.config.batch_size)
            pending: set[asyncio.Task[None]] = set()
            while not self._stopping.is_set():
                got = 0
                try:
                    async for message in client.receive_messages(
                            max_messages=self.config.batch_size, visibility_timeout=int(self.config.message_lease)):
                        got += 1
                        await slots.acquire()
                        task = asyncio.create_task(self._deliver(queue, client, poison, message, slots))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        if got >= self.config.batch_size:
                            break
                except Exception:
                    log.exception("polling %s failed; retrying", queue.queue)
                if got:
                    idle = 0.1
                    continue
                if await self._sleep(idle):
                    break
                idle = min(idle * 2, self.config.max_polling_interval)
            if pending:
                await asyncio.wait(pending, timeout=60)

    async def _deliver(self, queue: QueueFunction, client: QueueClient, poison: QueueClient, message: Any,
                       slots: asyncio.Semaphore) -> None:
        try:
            if message.dequeue_count > self.config.max_dequeue_count:
                await self._poison(client, poison, message)
                return
            try:
                body = base64.b64decode(message.content, validate=True) \
                    if self.config.message_encoding == "base64" else str(message.content).encode()
            except (binascii.Error, ValueError, TypeError):
                log.error("message %s on %s is not base64; moving it to the poison queue", message.id, queue.queue)
                await self._poison(client, poison, message)
                return
            payload = QueueMessage(  # type: ignore[no-untyped-call]
                id=message.id, body=body, dequeue_count=message.dequeue_count,
                                   expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                   time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
            # While the function runs, the message's invisibility is renewed, as Azure's queue listener does
            # (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger);
            # the renewal changes the pop receipt, so what is deleted or put back is the latest one.
            held = [message]
            renewal = asyncio.create_task(self._keep_invisible(client, held))
            try:
                await self._invoke(queue.call, queue.outputs, **{queue.arg_name: payload})
            except Exception:
                log.exception("function %s failed on message %s (delivery %d of %d)", queue.name, message.id,
                              message.dequeue_count, self.config.max_dequeue_count)
                renewal.cancel()
                if message.dequeue_count >= self.config.max_dequeue_count:
                    await self._poison(client, poison, message, held[-1])
                else:
                    await client.update_message(held[-1], visibility_timeout=int(self.config.visibility_timeout))
                return
            renewal.cancel()
            try:
                await client.delete_message(held[-1])
            except ResourceNotFoundError:
                log.warning("message %s was already gone when deleted", message.id)
        finally:
            slots.release()

    async def _keep_invisible(self, client: QueueClient, held: list[Any]) -> None:
        """Renew the invisibility of the message being processed every half lease; `held[-1]` is the latest."""
        lease = self.config.message_lease
        while True:
            await asyncio.sleep(lease / 2)
            try:
                held.append(await client.update_message(held[-1], visibility_timeout=int(lease)))
            except Exception:
                log.warning("could not renew the invisibility of message %s", held[-1].id, exc_info=True)

    async def _poison(self, client: QueueClient, poison: QueueClient, message: Any, latest: Any = None) -> None:
        await poison.send_message(message.content)
        await client.delete_message(latest if latest is not None else message)
        log.error("message %s moved to %s after %d deliveries", message.id, poison.queue_name, message.dequeue_count)


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": f"urn:entra-bridge:problem:host-{status}", "title": title, "status": status, "detail": detail}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)
