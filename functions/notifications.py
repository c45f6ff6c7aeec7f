"""Graph change notifications: the subscription timer, the notification and lifecycle endpoints, status.

The two endpoints are anonymous (Graph brings no token of ours) and excluded from App Service
Authentication (infra/app-service-auth.json); what proves a notification genuine is its subscription id
and clientState (shared/services/notifications.py, docs/notifications.md). Graph's handshake
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation):
a POST with `?validationToken=...` is answered 200 with the token as text/plain, at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func
from pydantic import ValidationError

from functions import answers
from functions.http import ADMIN, Plain, Reply, RouteDoc, correlation_of, describe, problem, route
from functions.work import each_connection
from shared import logs
from shared.bootstrap import bridge
from shared.config import Connection, settings
from shared.errors import BridgeError, InvalidInput, PayloadTooLarge
from shared.services.notifications import NotificationCollection, Outcome
from shared.services.ports import SubscriptionApi

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)

#: Graph's tokens are far shorter; anything longer is not a handshake.
MAX_TOKEN = 4096
SCHEDULE = "0 */30 * * * *"


@bp.function_name("notification_timer")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False)
async def notification_timer(timer: func.TimerRequest) -> None:
    """Create, renew (well before Graph's limit) or remove each connection's subscriptions."""
    async def maintain(conn: Connection, correlation_id: str) -> None:
        service = bridge().notifications
        if not (service.base_url and conn.features.sync.enabled) and not await service.recorded(conn.name):
            return  # nothing to keep and nothing to take away: no Graph call
        report = await service.maintain(conn, await bridge().subscription_api(conn), correlation_id=correlation_id)
        log.info("subscriptions of %s: %s", conn.name, report.as_dict())

    await each_connection("notification_timer", maintain)


Handler = Callable[[Connection, NotificationCollection, str], Awaitable[Outcome]]


def _graph_post(path: str, name: str, handle: Handler) -> None:
    """Register an anonymous POST endpoint for Graph: the handshake, then a checked collection."""

    async def endpoint(req: func.HttpRequest) -> func.HttpResponse:
        correlation_id = correlation_of(req)
        instance = req.url.split("?", 1)[0]
        with logs.correlation(correlation_id):
            try:
                conn = bridge().connection(str((req.route_params or {}).get("c", "")))
                token = req.params.get("validationToken")
                if token is not None:
                    if not token or len(token) > MAX_TOKEN:
                        raise InvalidInput(f"validationToken must be 1 to {MAX_TOKEN} characters",
                                           field="validationToken")
                    if req.get_body():
                        # Graph's validation request has no body; one with a body is something else.
                        raise InvalidInput("a validation request (with validationToken) carries no body",
                                           field="body")
                    # The token goes back exactly as received, as text/plain, never interpreted.
                    return func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8",
                                             headers={"X-Content-Type-Options": "nosniff",
                                                      "Cache-Control": "no-store"})
                body = await _parsed(req, conn, correlation_id)
                await handle(conn, body, correlation_id)
            except BridgeError as err:
                log.log(logging.WARNING if err.status < 500 else logging.ERROR, "POST %s -> %s %s", path,
                        err.status, err.detail)
                return problem(err, instance=instance, correlation_id=correlation_id)
            except Exception:
                log.exception("POST %s failed unexpectedly", path)
                error = BridgeError("an unexpected error occurred; the correlation id identifies it in the logs")
                return problem(error, instance=instance, correlation_id=correlation_id)
            # 202: accepted; the sync runs from the queue (Graph wants an answer within 3 s).
            return func.HttpResponse(status_code=202, headers={"x-correlation-id": correlation_id})

    endpoint.__name__ = endpoint.__qualname__ = name
    bp.function_name(name)(bp.route(route=path, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)(endpoint))
    describe(RouteDoc(name=name, path=path, method="POST", roles=(), anonymous=True,
                      answers={200: str, 202: None}, body=NotificationCollection, body_required=False,
                      query=answers.GraphNotificationQuery, doc=(
                          f"{handle.__doc__ or ''}\nCalled by Graph, not by people: a POST with `validationToken` is "
                          "answered with the token as text/plain (Graph's handshake); otherwise each notification "
                          "must name a subscription of this connection and carry its clientState (403 if not).")))


async def _parsed(req: func.HttpRequest, conn: Connection, correlation_id: str) -> NotificationCollection:
    raw = req.get_body() or b""
    limit = settings().max_body_bytes
    reason = None
    if len(raw) > limit:
        reason = f"body of {len(raw)} bytes over MAX_BODY_BYTES {limit}"
    else:
        try:
            return NotificationCollection.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            reason = f"malformed body: {'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
    await bridge().notifications.refused(conn, [reason], correlation_id, lifecycle=False)
    if len(raw) > limit:
        raise PayloadTooLarge(reason)
    raise InvalidInput(reason, field="body")


async def _changes(conn: Connection, body: NotificationCollection, correlation_id: str) -> Outcome:
    """Graph's change notifications for the connection's sync groups and users: each queues one sync."""
    return await bridge().notifications.notified(conn, body, correlation_id=correlation_id)


async def _lifecycle(conn: Connection, body: NotificationCollection, correlation_id: str) -> Outcome:
    """Graph's lifecycle events: reauthorize, recreate a removed subscription, or sync after missed ones."""
    app = bridge()

    async def api() -> SubscriptionApi:
        return await app.subscription_api(conn)

    return await app.notifications.lifecycle(conn, body, api, correlation_id=correlation_id)


_graph_post("notifications/connections/{c}", "graph_notification", _changes)
_graph_post("notifications/connections/{c}/lifecycle", "graph_lifecycle_notification", _lifecycle)


@route(bp, "connections/{c}/notifications", "GET", roles=[ADMIN], answers={200: answers.NotificationStatus})
async def notification_status(call: Plain) -> Reply:
    """The connection's Graph subscriptions (id, resource, expiry, problem) and a run queued by a notification."""
    return Reply(200, await bridge().notifications.status(call.connection.name))


@route(bp, "connections/{c}/notifications/uninstall", "POST", roles=[ADMIN],
       answers={200: answers.NotificationsRemoved})
async def uninstall_notifications(call: Plain) -> Reply:
    """Delete the connection's Graph subscriptions and their records (the timer makes them again while
    NOTIFICATION_BASE_URL is set and sync is on)."""
    scope = await bridge().scope(call.connection)
    return Reply(200, await scope.app.notifications.uninstall(scope.conn, scope.subscriptions,
                                                              correlation_id=call.correlation_id))
