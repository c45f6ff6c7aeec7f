"""The emulator's HTTP surface: Key Vault's secrets REST API and, when enabled, the /_emulator/ admin API.

Paths, bodies and api-versions are those azure-keyvault-secrets sends
(https://learn.microsoft.com/en-us/rest/api/keyvault/secrets/operation-groups). The order of checks
follows the service: the bodiless first request of the SDK's challenge flow gets 401 before anything
else is looked at; throttled requests do not count; a write hit by an "ambiguous" fault is applied and
then its connection is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, ValidationError

from local.vault import rules
from local.vault.auth import KNOWN_ROLES, RoleBook, TokenValidator
from local.vault.errors import VaultError, bad_parameter
from local.vault.limits import FaultPlan, Faults, Throttle
from local.vault.store import EmulatedClock, SecretBook

log = logging.getLogger("local.vault")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVICE_VERSION = "1.9.0.0"  # shown in x-ms-keyvault-service-version, informational
WRITES = frozenset({"set", "update", "delete", "recover", "purge"})
SEGMENT = r"([^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/secrets/?$"), "list"),
    ("GET", re.compile(rf"^/secrets/{SEGMENT}/versions/?$"), "versions"),
    ("PUT", re.compile(rf"^/secrets/{SEGMENT}/?$"), "set"),
    ("DELETE", re.compile(rf"^/secrets/{SEGMENT}/?$"), "delete"),
    ("GET", re.compile(rf"^/secrets/{SEGMENT}(?:/([^/]*))?/?$"), "get"),
    ("PATCH", re.compile(rf"^/secrets/{SEGMENT}(?:/([^/]*))?/?$"), "update"),
    ("GET", re.compile(r"^/deletedsecrets/?$"), "list_deleted"),
    ("POST", re.compile(rf"^/deletedsecrets/{SEGMENT}/recover/?$"), "recover"),
    ("GET", re.compile(rf"^/deletedsecrets/{SEGMENT}/?$"), "get_deleted"),
    ("DELETE", re.compile(rf"^/deletedsecrets/{SEGMENT}/?$"), "purge"),
]


class DropConnection(Exception):
    """Raised after a partial response so that the server closes the connection mid-answer."""


@dataclass
class Settings:
    """Everything the emulator needs at start."""

    data_dir: Path
    base_url: str
    authority: str
    tenant: str
    roles_file: Path | None = None
    time_scale: float = 1.0
    admin: bool = False
    limits: bool = True
    faults: Faults = field(default_factory=Faults)
    ssl_context: ssl.SSLContext | None = None


class RoleGrant(BaseModel):
    """Body of PUT /_emulator/roles/{oid}."""

    model_config = ConfigDict(extra="forbid")
    role: str


class LimitSwitch(BaseModel):
    """Body of PUT /_emulator/limits."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool


def _route(method: str, path: str) -> tuple[str, tuple[str | None, ...]] | None:
    for verb, pattern, operation in ROUTES:
        if verb == method:
            match = pattern.match(path)
            if match:
                return operation, match.groups()
    return None


def _skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, number = text.split(":", 1)
        if prefix != "offset" or int(number) < 0:
            raise ValueError(text)
        return int(number)
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("The parameter '$skiptoken' is not valid.") from None


class VaultApp:
    """An ASGI application emulating one vault's secrets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = EmulatedClock(settings.time_scale)
        self.book = SecretBook(settings.data_dir, settings.base_url, self.clock)
        self.roles = RoleBook(settings.roles_file)
        self.validator = TokenValidator(settings.authority, settings.tenant, ssl_context=settings.ssl_context)
        self.throttle = Throttle(self.clock, enabled=settings.limits)
        self.faults = FaultPlan(settings.faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self._read_body(receive)
        request_id = str(uuid.uuid4())
        try:
            if path.startswith("/_emulator/") and self.settings.admin:
                status, payload = self._admin(method, path, body)
                await self._respond(send, status, payload, request_id)
                return
            status, payload, fault = await self._api(method, path, query, headers, body)
        except VaultError as err:
            log.info("%s %s -> %s %s", method, path, err.status, err.code)
            await self._respond(send, err.status, err.body(), request_id, extra=err.headers)
            return
        if fault == "ambiguous":
            log.info("%s %s -> %s applied, then connection dropped (injected fault)", method, path, status)
            await self._drop(send)
        log.info("%s %s -> %s", method, path, status)
        await self._respond(send, status, payload, request_id)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.book.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _api(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                   body: bytes) -> tuple[int, Any, str | None]:
        found = _route(method, path)
        if found is None:
            raise VaultError(404, "NotFound", f"The operation {method} {path[:200]} is not supported by this vault.")
        operation, groups = found
        fault = self.faults.draw(write=operation in WRITES)
        if self.faults.faults.latency_ms:
            await asyncio.sleep(self.faults.faults.latency_ms / 1000)
        if fault == "error":
            raise VaultError(503, "ServiceUnavailable", "The service is temporarily unavailable (injected fault).")
        if fault == "drop":
            log.info("%s %s -> connection dropped (injected fault)", method, path)
            raise DropConnection
        caller = await self.validator.caller(headers.get("authorization"))
        rules.check_api_version(query.get("api-version"))
        self.throttle.check(create=operation == "set")
        name = groups[0] if groups else None
        resource = f"{self.settings.base_url}/secrets/{name}" if name else f"{self.settings.base_url}/secrets"
        self.roles.authorize(caller, operation, resource)
        return (*self._execute(operation, groups, query, body), fault)

    def _json(self, body: bytes) -> Any:
        if not body:
            raise bad_parameter("The request body is required.")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_parameter("The request body is not valid JSON.") from None

    def _page(self, items: list[dict[str, Any]], path: str, query: dict[str, str]) -> dict[str, Any]:
        size = rules.check_maxresults(query.get("maxresults"))
        start = _offset(query.get("$skiptoken"))
        page: dict[str, Any] = {"value": items[start:start + size], "nextLink": None}
        if start + size < len(items):
            page["nextLink"] = (f"{self.settings.base_url}{path}?api-version={query['api-version']}"
                                f"&$skiptoken={_skiptoken(start + size)}&maxresults={size}")
        return page

    def _execute(self, operation: str, groups: tuple[str | None, ...], query: dict[str, str],
                 body: bytes) -> tuple[int, Any]:
        book = self.book
        name = groups[0] if groups else ""
        version = groups[1] if len(groups) > 1 and groups[1] else None
        if operation == "set":
            return 200, book.set(name or "", self._json(body))
        if operation == "get":
            return 200, book.get(name or "", version)
        if operation == "update":
            return 200, book.update(name or "", version, self._json(body))
        if operation == "delete":
            return 200, book.delete(name or "")
        if operation == "list":
            return 200, self._page(book.list_secrets(), "/secrets", query)
        if operation == "versions":
            return 200, self._page(book.list_versions(name or ""), f"/secrets/{name}/versions", query)
        if operation == "list_deleted":
            return 200, self._page(book.list_deleted(), "/deletedsecrets", query)
        if operation == "get_deleted":
            return 200, book.get_deleted(name or "")
        if operation == "recover":
            return 200, book.recover(name or "")
        book.purge(name or "")
        return 204, None

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            if path == "/_emulator/health" and method == "GET":
                return 200, {"status": "ok", "timeScale": self.clock.scale, "limits": self.throttle.enabled,
                             "faults": self.faults.faults.model_dump()}
            if path == "/_emulator/faults" and method == "GET":
                return 200, self.faults.faults.model_dump()
            if path == "/_emulator/faults" and method == "PUT":
                self.faults.set(Faults.model_validate_json(body or b"{}"))
                return 200, self.faults.faults.model_dump()
            if path == "/_emulator/limits" and method == "PUT":
                self.throttle.enabled = LimitSwitch.model_validate_json(body).enabled
                return 200, {"enabled": self.throttle.enabled}
            match = re.fullmatch(r"/_emulator/roles/([0-9A-Za-z-]{1,64})", path)
            if match and method == "PUT":
                grant = RoleGrant.model_validate_json(body)
                if grant.role not in KNOWN_ROLES:
                    raise bad_parameter(f"Unknown role {grant.role!r}; known roles: {sorted(KNOWN_ROLES)}.")
                self.roles.grant(match.group(1), grant.role)
                return 200, {"principalId": match.group(1), "roles": sorted(self.roles.roles(match.group(1)))}
            if match and method == "DELETE":
                self.roles.revoke(match.group(1))
                return 204, None
        except ValidationError as exc:
            raise bad_parameter(f"Invalid admin request: {exc.errors(include_input=False)}") from None
        raise VaultError(404, "NotFound", f"No admin operation {method} {path[:100]}.")

    async def _respond(self, send: Send, status: int, payload: Any, request_id: str,
                       extra: dict[str, str] | None = None) -> None:
        data = b"" if payload is None or status == 204 else json.dumps(payload).encode()
        headers = [(b"x-ms-request-id", request_id.encode()),
                   (b"x-ms-keyvault-service-version", SERVICE_VERSION.encode()),
                   (b"cache-control", b"no-cache"),
                   (b"content-length", str(len(data)).encode())]
        if data:
            headers.append((b"content-type", b"application/json; charset=utf-8"))
        for key, value in (extra or {}).items():
            headers.append((key.lower().encode(), value.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    async def _drop(send: Send) -> None:
        # Promise a body and break off: the client sees the connection end mid-response.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise DropConnection


class DroppingApp:
    """Wraps the vault so that DropConnection from before any answer also ends mid-response."""

    def __init__(self, inner: VaultApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.inner(scope, receive, tracking_send)
        except DropConnection:
            if not started:
                await VaultApp._drop(send)  # raises DropConnection again: the server closes the link
            raise
