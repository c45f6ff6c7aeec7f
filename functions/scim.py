"""The SCIM 2.0 service (RFC 7644) under /api/scim/v2/{c}/, and the export-work queue (docs/export.md).

Callers present the function key and, with App Service Authentication on, a token with the app role
Bridge.Export. Refusals of the SCIM service are SCIM error bodies (RFC 7644 section 3.12) with scimType.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import azure.functions as func
from pydantic import BaseModel

from functions import answers
from functions.http import EXPORT, ErrorStyle, Plain, Reply, route
from functions.work import job, watch_last_delivery, work_message
from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection
from shared.domain import scim
from shared.domain.scim import Kind, ScimError, Stored
from shared.errors import BridgeError, InvalidInput
from shared.services.scim import ScimService
from shared.topology import Queue

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)
SCIM = "scim/v2/{c}"
DOCS = "https://www.rfc-editor.org/rfc/rfc7644"
MEDIA = "application/scim+json"
ScimHandler = Callable[[Plain, Connection, Kind], Awaitable[Reply]]
#: An answer model per resource type (the same for both when the route is not per type).
Answers = Callable[[Kind], dict[int, type[BaseModel] | None]]
RESOURCES: dict[Kind, type[BaseModel]] = {"Users": answers.ScimUser, "Groups": answers.ScimGroup}
LISTS: dict[Kind, type[BaseModel]] = {"Users": answers.ScimUserList, "Groups": answers.ScimGroupList}
BODIES: dict[Kind, type[BaseModel]] = {"Users": answers.ScimUserBody, "Groups": answers.ScimGroupBody}
ETAG = {"ETag": "the resource's version (meta.version), for If-Match"}


def _error_body(err: BridgeError) -> dict[str, Any]:
    """A refusal of the HTTP layer (app role, query string, unexpected failure) as a SCIM error."""
    scim_type = "invalidValue" if isinstance(err, InvalidInput) else None
    return ScimError(err.status, logs.mask(err.detail), scim_type).body()


SCIM_ERRORS = ErrorStyle(media=MEDIA, model=answers.ScimErrorBody, render=_error_body)


def _base(call: Plain) -> str:
    url = call.url
    marker = f"/scim/v2/{call.params['c']}"
    return url[:url.index(marker) + len(marker)] if marker in url else url


def _body(call: Plain) -> Any:
    raw = call.request.get_body() or b""
    # The host refuses larger bodies before this runs (MAX_BODY_BYTES); Bulk advertises the same limit.
    limit = min(bridge().settings.max_body_bytes, scim.MAX_BULK_BYTES)
    if len(raw) > limit:
        raise ScimError(413, f"request body is {len(raw)} bytes; the limit is {limit}")
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ScimError(400, "the request body is not JSON", "invalidSyntax") from None


def _answer(stored: Stored, call: Plain, status: int = 200) -> Reply:
    headers = {"ETag": stored.etag}
    if status == 201:
        headers["Location"] = f"{_base(call)}/{stored.kind}/{stored.id}"
    return Reply(status, stored.render(_base(call)), headers)


def scim_route(path: str, method: str, answers_of: Answers, *, body: Callable[[Kind], type[BaseModel]] | None = None,
               query: type[BaseModel] | None = None,
               headers: Mapping[str, str] | None = None) -> Callable[[ScimHandler], ScimHandler]:
    """A SCIM route: the connection resolved, answers in application/scim+json, ScimError and the taxonomy
    answered as SCIM errors. A path with `{kind}` is registered once for Users and once for Groups.
    `answers_of`, `body`, `query` and `headers` describe it in the API description."""
    def register(handler: ScimHandler) -> ScimHandler:
        def endpoint_of(kind: Kind) -> Callable[[Plain], Awaitable[Reply]]:
            async def endpoint(call: Plain) -> Reply:
                try:
                    conn = call.connection
                    ScimService.enabled(conn)  # before anything is built for a connection that does not export
                    return await handler(call, conn, kind)
                except ScimError as err:
                    return Reply(err.status, err.body())

            endpoint.__doc__ = handler.__doc__
            return endpoint

        def add(kind: Kind, route_path: str, name: str) -> None:
            route(bp, f"{SCIM}/{route_path}", method, roles=[EXPORT], name=name, answers=answers_of(kind),
                  optional_body=body(kind) if body else None, body_required=body is not None, query=query,
                  headers=headers, media=MEDIA, errors=SCIM_ERRORS)(endpoint_of(kind))

        if "{kind}" in path:
            for kind in scim.KINDS:
                add(kind, path.replace("{kind}", kind), f"{handler.__name__}_{kind.lower()}")
        else:
            add("Users", path, handler.__name__)
        return handler
    return register


async def _domains(conn: Connection) -> list[str]:
    return await (await bridge().export_directory(conn)).verified_domains()


@scim_route("ServiceProviderConfig", "GET", lambda _: {200: answers.ScimServiceProviderConfig})
async def scim_service_provider_config(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """What the service supports (RFC 7643 section 5)."""
    return Reply(200, {**scim.service_provider_config(DOCS, bridge().settings.max_body_bytes),
                       "meta": {"resourceType": "ServiceProviderConfig",
                                "location": f"{_base(call)}/ServiceProviderConfig"}})


@scim_route("ResourceTypes", "GET", lambda _: {200: answers.ScimDiscoveryList})
async def scim_resource_types(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """User (with the enterprise extension) and Group."""
    return Reply(200, scim.as_list(scim.resource_types(_base(call))))


@scim_route("Schemas", "GET", lambda _: {200: answers.ScimDiscoveryList})
async def scim_schemas(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """The schemas of the served resources."""
    return Reply(200, scim.as_list(scim.schemas(_base(call))))


@scim_route("{kind}", "POST", lambda kind: {201: RESOURCES[kind]}, body=BODIES.__getitem__,
            headers={**ETAG, "Location": "the URL of the created resource"})
async def scim_create(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Create a User or Group; its export to Entra is queued."""
    stored = await bridge().scim.create(conn, kind, _body(call), request_id=call.correlation_id,
                                        domains=lambda: _domains(conn))
    return _answer(stored, call, 201)


@scim_route("{kind}", "GET", lambda kind: {200: LISTS[kind]}, query=answers.ScimQuery)
async def scim_list(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Query with `filter`, `startIndex` and `count` (RFC 7644 section 3.4.2)."""
    found, total, start = await bridge().scim.query(conn, kind, filter_text=call.query.get("filter"),
                                                    start_index=call.query.get("startIndex"),
                                                    count=call.query.get("count"))
    return Reply(200, scim.list_response([s.render(_base(call)) for s in found], total, start))


@scim_route("{kind}/{id}", "GET", lambda kind: {200: RESOURCES[kind]}, headers=ETAG)
async def scim_get(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """One resource."""
    return _answer(await bridge().scim.get(conn, kind, call.params["id"]), call)


@scim_route("{kind}/{id}", "PUT", lambda kind: {200: RESOURCES[kind]}, body=BODIES.__getitem__, headers=ETAG)
async def scim_replace(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Replace a resource (If-Match honoured)."""
    stored = await bridge().scim.replace(conn, kind, call.params["id"], _body(call),
                                         if_match=call.header("if-match"), request_id=call.correlation_id,
                                         domains=lambda: _domains(conn))
    return _answer(stored, call)


@scim_route("{kind}/{id}", "PATCH", lambda kind: {200: RESOURCES[kind]},
            body=lambda _: answers.ScimPatchOp, headers=ETAG)
async def scim_patch(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Modify a resource with a PatchOp (RFC 7644 section 3.5.2)."""
    stored = await bridge().scim.patch(conn, kind, call.params["id"], _body(call),
                                       if_match=call.header("if-match"), request_id=call.correlation_id,
                                       domains=lambda: _domains(conn))
    return _answer(stored, call)


@scim_route("{kind}/{id}", "DELETE", lambda _: {204: None})
async def scim_delete(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Delete a resource; Entra follows the export rules (disable, or delete what the bridge created)."""
    await bridge().scim.delete(conn, kind, call.params["id"], if_match=call.header("if-match"),
                               request_id=call.correlation_id)
    return Reply(204)


@scim_route("Bulk", "POST", lambda _: {200: answers.ScimBulkResponse}, body=lambda _: answers.ScimBulkRequest)
async def scim_bulk(call: Plain, conn: Connection, kind: Kind) -> Reply:
    """Several operations in one request, with failOnErrors (RFC 7644 section 3.7)."""
    answer = await bridge().scim_bulk.run(conn, _body(call), request_id=call.correlation_id,
                                                 domains=lambda: _domains(conn), base_url=_base(call))
    return Reply(200, answer)


@bp.function_name("export_work")
@bp.queue_trigger(arg_name="msg", queue_name=Queue.EXPORT.value, connection="AzureWebJobsStorage")
@watch_last_delivery(Queue.EXPORT)
async def export_work(msg: func.QueueMessage) -> None:
    """Apply one received SCIM change to Entra."""
    message = work_message(msg)
    app = bridge()
    with logs.correlation(message.correlation_id):
        async with job("export_work", message.connection, message.correlation_id, queue=True):
            conn = app.connection(message.connection)
            kind: Kind = "Groups" if message.args.get("resourceType") == "Groups" else "Users"
            applied = await app.export.apply(conn, await app.export_directory(conn), kind, message.target,
                                             request_id=message.correlation_id,
                                             change_id=str(message.args.get("change") or message.idempotency_key))
            log.info("export of %s %s: %s", kind, message.target, applied.as_dict())
