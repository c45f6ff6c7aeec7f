"""The HTTP layer every route uses.

    bp = func.Blueprint()

    @route(bp, "connections/{c}/users/{id}/rotate", "POST", roles=[ADMIN], answers={202: RotationQueued})
    async def rotate_user(call: Call) -> Reply:
        ...
        return Reply(202, {"rotationId": rid})

    @route(bp, "connections/{c}/devices/{deviceId}", "PUT", roles=[DEVICES], body=DeviceRegistration)
    async def put_device(call: Call) -> Reply:
        registration = call.body  # a validated DeviceRegistration

It gives each handler: the route parameters, the query, a body parsed by a strict pydantic model
(unknown fields rejected, size limit MAX_BODY_BYTES -> 413), a correlation id taken from
`x-correlation-id` (or the trace id of `traceparent`) or made, and echoed back; the caller's app
roles checked from `X-MS-CLIENT-PRINCIPAL` when App Service Authentication is on. Every error becomes
RFC 9457 problem+json (https://www.rfc-editor.org/rfc/rfc9457), or the route's own format where it
declares one (`errors`, the SCIM routes): a BridgeError with its own type and status, anything
unexpected a 500 with no internals. Function keys are checked by the host (auth
level FUNCTION by default). What a route declares (body, `query` and `answers` models, roles) is also
what functions/openapi.py publishes as the API description.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection, settings
from shared.errors import BridgeError, Forbidden, InvalidInput, PayloadTooLarge, Unauthenticated

log = logging.getLogger("bridge.http")

ADMIN = "Bridge.Admin"
DEVICES = "Bridge.Devices"
AUDIT_READ = "Bridge.Audit.Read"
EXPORT = "Bridge.Export"
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
PROBLEM = "application/problem+json"
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Principal:
    """The caller as App Service Authentication describes it."""

    id: str | None
    name: str | None
    roles: frozenset[str]


@dataclass
class Call(Generic[M]):
    """One request as a handler sees it."""

    request: func.HttpRequest
    params: Mapping[str, str]
    query: Mapping[str, str]
    correlation_id: str
    principal: Principal | None
    body: M | None = None
    #: The connection `{c}` names, resolved before the handler runs (routes with `{c}` only).
    conn: Connection | None = None

    @property
    def connection(self) -> Connection:
        """The connection of a route with `{c}` in its path."""
        if self.conn is None:
            raise InvalidInput("this route names no connection", field="c")
        return self.conn

    @property
    def parsed(self) -> M:
        """The validated body of a route that declares a body model."""
        if self.body is None:
            raise InvalidInput("a JSON request body is required", field="body")
        return self.body

    @property
    def actor(self) -> str:
        """Who is acting, for audit records: the principal's name or id, else the function key's holder."""
        if self.principal is not None:
            return self.principal.name or self.principal.id or "principal"
        return "function-key"

    @property
    def url(self) -> str:
        """The request URL without its query string."""
        return str(self.request.url).split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """A request header (case-insensitive)."""
        value = self.request.headers.get(name)
        return None if value is None else str(value)


@dataclass
class Reply:
    """What a handler returns: status, JSON body (None for no content), extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


#: A call whose route takes no body.
Plain = Call[Any]
Handler = Callable[[Call[Any]], Awaitable[Reply]]


@dataclass(frozen=True)
class RouteDoc:
    """What the API description says of one HTTP function (functions/openapi.py reads these)."""

    name: str
    path: str
    method: str
    roles: tuple[str, ...]
    anonymous: bool
    #: Success status -> answer model (None: no body; `str`: a text/plain body); problem+json answers are
    #: described for every route. Empty: not declared yet (described as any JSON; tests/unit/test_openapi.py
    #: fails until it is).
    answers: Mapping[int, type[BaseModel] | type[str] | None]
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    doc: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The media type of the answers (and of a request body the route reads).
    media: str = "application/json"
    #: How the route answers its refusals; None: RFC 9457 problem+json.
    errors: ErrorStyle | None = None


@dataclass(frozen=True)
class ErrorStyle:
    """Refusals in another format than problem+json (the SCIM routes' RFC 7644 errors): their media type,
    the model of their body (for the API description) and how a taxonomy error becomes that body."""

    media: str
    model: type[BaseModel]
    render: Callable[[BridgeError], dict[str, Any]]


#: Every described HTTP function by function name: those of `route`, and others through `describe`.
ROUTES: dict[str, RouteDoc] = {}


def describe(doc: RouteDoc) -> None:
    """Add a function that is not registered with `route` (e.g. health) to the API description."""
    ROUTES[doc.name] = doc


def problem(err: BridgeError, *, instance: str, correlation_id: str) -> func.HttpResponse:
    """An RFC 9457 problem response for a taxonomy error."""
    body = {"type": err.type_uri, "title": err.title, "status": err.status, "detail": logs.mask(err.detail),
            "instance": instance, "correlationId": correlation_id, **err.extensions()}
    headers = {"x-correlation-id": correlation_id}
    retry_after = getattr(err, "retry_after", None)
    if retry_after:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return func.HttpResponse(json.dumps(body, default=str), status_code=err.status, headers=headers,
                             mimetype=PROBLEM)


def refusal(err: BridgeError, *, instance: str, correlation_id: str,
            style: ErrorStyle | None) -> func.HttpResponse:
    """A taxonomy error as the route answers it: problem+json, or the route's own error format."""
    if style is None:
        return problem(err, instance=instance, correlation_id=correlation_id)
    return func.HttpResponse(json.dumps(style.render(err), default=str), status_code=err.status,
                             headers={"x-correlation-id": correlation_id}, mimetype=style.media)


def correlation_of(req: func.HttpRequest) -> str:
    """The caller's correlation id if well-formed, the trace id of `traceparent`, or a new one."""
    given = str(req.headers.get("x-correlation-id") or "")
    if given and _CORRELATION.match(given):
        return given
    parent = str(req.headers.get("traceparent") or "")
    parts = parent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return str(uuid.uuid4())


def principal_of(req: func.HttpRequest) -> Principal | None:
    """Decode `X-MS-CLIENT-PRINCIPAL` (base64 JSON of claims); None when absent."""
    raw = req.headers.get("x-ms-client-principal")
    if not raw:
        return None
    try:
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unauthenticated("X-MS-CLIENT-PRINCIPAL is not valid base64 JSON") from None
    claims = data.get("claims") or []
    role_types = {*ROLE_CLAIMS, str(data.get("role_typ") or "")}
    roles = frozenset(str(c.get("val")) for c in claims if isinstance(c, dict) and c.get("typ") in role_types)
    name_type = data.get("name_typ") or "name"
    name = next((str(c.get("val")) for c in claims if isinstance(c, dict) and c.get("typ") == name_type), None)
    return Principal(req.headers.get("x-ms-client-principal-id"), name or req.headers.get(
        "x-ms-client-principal-name"), roles)


def _authorize(req: func.HttpRequest, roles: Sequence[str]) -> Principal | None:
    principal = principal_of(req)
    if not roles or not settings().auth_enabled:
        return principal
    if principal is None:
        raise Unauthenticated("App Service Authentication is on: send an Entra token for this app "
                              f"(app role needed: {', '.join(roles)})")
    if not principal.roles & set(roles):
        raise Forbidden(f"this route needs the app role {' or '.join(roles)}; assign it to the caller in "
                        "Entra admin center > Enterprise applications > (the bridge) > Users and groups",
                        required_roles=list(roles))
    return principal


def validation_errors(exc: ValidationError) -> list[dict[str, object]]:
    """Each failed field of a request body: its dotted path ("body" for the whole) and pydantic's message."""
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)]


def _parse_body(req: func.HttpRequest, model: type[M]) -> M:
    raw = req.get_body() or b""
    limit = settings().max_body_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes; the limit is {limit} (MAX_BODY_BYTES)")
    if not raw.strip():
        raise InvalidInput("a JSON request body is required", field="body")
    content_type = (req.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidInput(f"Content-Type must be application/json, not {content_type!r}", field="Content-Type")
    try:
        # Strict: JSON types must match the model (no "5" for 5); unknown members are refused by the models.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = validation_errors(exc)
        first = errors[0]
        raise InvalidInput(f"{first['field']}: {first['message']}", field=str(first["field"]), errors=errors) from None


def _check_query(req: func.HttpRequest, model: type[BaseModel]) -> None:
    """Validate the query string against the route's query model; unknown names (e.g. `code`) are ignored."""
    try:
        model.model_validate(dict(req.params or {}))
    except ValidationError as exc:
        errors = validation_errors(exc)
        first = errors[0]
        raise InvalidInput(f"query parameter {first['field']}: {first['message']}", field=str(first["field"]),
                           errors=errors) from None


def route(bp: func.Blueprint, path: str, method: str, *, roles: Sequence[str] = (ADMIN,),
          body: type[BaseModel] | None = None, auth_level: func.AuthLevel = func.AuthLevel.FUNCTION,
          name: str | None = None, answers: Mapping[int, type[BaseModel] | None] | None = None,
          query: type[BaseModel] | None = None, optional_body: type[BaseModel] | None = None,
          headers: Mapping[str, str] | None = None, media: str = "application/json",
          errors: ErrorStyle | None = None, body_required: bool | None = None) -> Callable[[Handler], Handler]:
    """Register `handler` for `method path` with parsing, errors, correlation and roles handled.

    `answers` (status -> model), `query`, `optional_body` (a body the handler parses itself; `body_required`
    when the handler refuses its absence) and `headers` (answer header -> description) describe the route in
    the API description; a `query` model is also enforced: a query string it refuses is answered 400 naming
    the parameter. `media` is the answers' media type; `errors` a format of refusals other than problem+json.
    """

    def register(handler: Handler) -> Handler:
        ROUTES[name or handler.__name__] = RouteDoc(
            name=name or handler.__name__, path=path, method=method, roles=tuple(roles),
            anonymous=auth_level == func.AuthLevel.ANONYMOUS, answers=dict(answers or {}),
            body=body or optional_body, body_required=body is not None if body_required is None else body_required,
            query=query, doc=handler.__doc__ or "", headers=dict(headers or {}), media=media, errors=errors)

        async def endpoint(req: func.HttpRequest) -> func.HttpResponse:
            correlation_id = correlation_of(req)
            with logs.correlation(correlation_id):
                try:
                    principal = _authorize(req, roles)
                    if query is not None:
                        _check_query(req, query)
                    params = dict(req.route_params or {})
                    # An unknown connection is a 404 naming CONNECTIONS, before the body is read.
                    conn = bridge().connection(params.get("c", "")) if "{c}" in path else None
                    call: Call[Any] = Call(request=req, params=params, query=dict(req.params or {}),
                                           correlation_id=correlation_id, principal=principal,
                                           body=_parse_body(req, body) if body else None, conn=conn)
                    reply = await handler(call)
                except BridgeError as err:
                    level = logging.WARNING if err.status < 500 else logging.ERROR
                    log.log(level, "%s %s -> %s %s", method, path, err.status, err.detail)
                    return refusal(err, instance=req.url.split("?", 1)[0], correlation_id=correlation_id,
                                   style=errors)
                except Exception:
                    log.exception("%s %s failed unexpectedly", method, path)
                    error = BridgeError("an unexpected error occurred; the correlation id identifies it in the logs")
                    return refusal(error, instance=req.url.split("?", 1)[0], correlation_id=correlation_id,
                                   style=errors)
                headers = {"x-correlation-id": correlation_id, **reply.headers}
                if reply.body is None:
                    return func.HttpResponse(status_code=reply.status, headers=headers)
                return func.HttpResponse(json.dumps(reply.body, default=str), status_code=reply.status,
                                         headers=headers, mimetype=media)

        endpoint.__name__ = endpoint.__qualname__ = name or handler.__name__
        endpoint.__doc__ = handler.__doc__
        bp.function_name(name or handler.__name__)(
            bp.route(route=path, methods=[method], auth_level=auth_level)(endpoint))
        return handler

    return register
