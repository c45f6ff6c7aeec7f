"""Graph change notifications: `/subscriptions`, the validation call, delivery and lifecycle events.

As Microsoft documents them:
- Create: https://learn.microsoft.com/graph/api/subscription-post-subscriptions (201; before answering,
  a POST to `notificationUrl?validationToken=...` (and to `lifecycleNotificationUrl` when given) that must
  answer 200 with the token as text/plain within 10 s, else 400); permissions by resource: groups need
  Group.Read.All, users User.Read.All (or a broader one).
- Renew: https://learn.microsoft.com/graph/api/subscription-update (PATCH `expirationDateTime`, 200);
  delete: https://learn.microsoft.com/graph/api/subscription-delete (204);
  reauthorize: https://learn.microsoft.com/graph/api/subscription-reauthorize (204).
- Lifetime (https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime): users,
  groups and other directory resources at most 41,760 minutes; a requested expiry under 45 minutes
  from now is moved to 45 minutes (https://learn.microsoft.com/graph/api/resources/subscription).
- Resources (https://learn.microsoft.com/graph/change-notifications-overview#supported-resources):
  `/users`, `/users/{id}`, `/groups`, `/groups/{id}`, `/groups/{id}/members`, `/groups/{id}/owners`;
  creation and soft deletion of users and groups are `updated`.
- Delivery (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks): a POST of
  `{"value": [changeNotification...]}` with `clientState`; an answer other than 2xx within 3 s is
  tried again (here three times, 1, 2 and 4 s apart, compressed by `--time-scale`), then dropped and a
  `missed` lifecycle event is sent.
- Lifecycle events (https://learn.microsoft.com/graph/change-notifications-lifecycle-events):
  `reauthorizationRequired`, `subscriptionRemoved`, `missed`, POSTed to `lifecycleNotificationUrl`.

Faults: the rules of the admin API's faults apply to deliveries under the path `/_notifications/<resource>`
(e.g. `{"routes": [{"path": "^/_notifications", "latencyMs": 500, "dropRate": 0.2}]}`): `latencyMs`
delays each delivery, `dropRate` loses the notification silently, `errorRate` fails it as an endpoint
that never answers would (a `missed` event follows). Admin routes (with --admin):
`GET /_sim/subscriptions` (with delivery counters), `POST /_sim/subscriptions/{id}/lifecycle`
`{"event": "reauthorizationRequired" | "subscriptionRemoved" | "missed"}` (a removal also deletes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.entra.core import Caller, GraphError, Simulator, graph_route, json_body
from local.entra.state import Tenant

log = logging.getLogger("local.entra.subscriptions")

MAX_MINUTES = 41760
MIN_MINUTES = 45
VALIDATION_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 3.0
RETRY_DELAYS = (1.0, 2.0, 4.0)
POLL_SECONDS = 0.02
CLIENT_STATE_MAX = 128
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_ID = r"[0-9a-fA-F-]{36}"
#: Supported directory resources and the permissions (least privileged first) that allow a subscription.
RESOURCES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(rf"^users(/{_ID})?$"), ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
                                        "Directory.ReadWrite.All")),
    (re.compile(rf"^groups(/{_ID}(/(members|owners))?)?$"), ("Group.Read.All", "Group.ReadWrite.All",
                                                              "Directory.Read.All", "Directory.ReadWrite.All")),
)
CHANGE_TYPES = frozenset({"updated", "deleted"})


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _parse(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{value}'.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _resource(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GraphError(400, "InvalidRequest", "resource is required.")
    return value.strip().strip("/")


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(400, "InvalidRequest", f"{name} is required.")
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise GraphError(400, "InvalidRequest", f"The {name} must be an https URL.")
    return value


def _client_context() -> ssl.SSLContext:
    bundle = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=bundle) if bundle and os.path.exists(bundle) else \
        ssl.create_default_context()


@dataclass
class Delivery:
    """Counters of one subscription's deliveries (admin API)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    lifecycle: int = 0
    #: (time.time() when sent, when answered, number of notifications) of the last deliveries.
    recent: list[tuple[float, float, int]] = field(default_factory=list)


class Hub:
    """The subscriptions of every tenant, and the task that turns directory changes into notifications."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.tenants: dict[str, Tenant] = {}
        self.cursor: dict[str, int] = {}
        self.deliveries: dict[str, Delivery] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ storage (the tenant file keeps them)

    @staticmethod
    def table(tenant: Tenant) -> dict[str, dict[str, Any]]:
        """The tenant's subscriptions by id."""
        found: dict[str, dict[str, Any]] = tenant.extra.setdefault("subscriptions", {})
        return found

    def watch(self, tenant: Tenant) -> None:
        """Deliver this tenant's changes from now on."""
        if tenant.tenantId not in self.tenants:
            self.tenants[tenant.tenantId] = tenant
            self.cursor[tenant.tenantId] = tenant.sequence
        self.ensure_running()

    def ensure_running(self) -> None:
        """Start the delivery task in the running loop if it is not running there (subscriptions kept in
        the tenant file from an earlier run are served again from the first call)."""
        if self.table(self.sim.tenant) and self.sim.tenant.tenantId not in self.tenants:
            self.tenants[self.sim.tenant.tenantId] = self.sim.tenant
            self.cursor[self.sim.tenant.tenantId] = self.sim.tenant.sequence
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._client = httpx.AsyncClient(verify=_client_context(), timeout=DELIVERY_TIMEOUT)
            self._task = loop.create_task(self._run())

    def client(self) -> httpx.AsyncClient:
        """The HTTP client for validation calls and deliveries."""
        if self._client is None:
            self._client = httpx.AsyncClient(verify=_client_context(), timeout=DELIVERY_TIMEOUT)
        return self._client

    # ------------------------------------------------------------------ validation

    async def validate(self, url: str) -> None:
        """The validation call: 200 with the token as text/plain within 10 s, else 400."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: " \
                f"{uuid.uuid4()} {secrets.token_hex(8)}"
        failure = "Subscription validation request failed. Notification endpoint must respond with 200 OK " \
                  "to validation request."
        try:
            answer = await self.client().post(url, params={"validationToken": token},
                                              headers={"content-type": "text/plain; charset=utf-8"},
                                              timeout=VALIDATION_TIMEOUT)
        except httpx.HTTPError:
            raise GraphError(400, "ValidationError", f"{failure} The endpoint could not be reached.") from None
        content_type = answer.headers.get("content-type", "").split(";")[0].strip().lower()
        if answer.status_code != 200:
            raise GraphError(400, "ValidationError", f"{failure} It answered {answer.status_code}.")
        if content_type != "text/plain":
            raise GraphError(400, "ValidationError", f"{failure} The answer must be text/plain, not "
                                                     f"{content_type or 'untyped'}.")
        if answer.text != token:
            raise GraphError(400, "ValidationError", f"{failure} The answer was not the validation token.")

    # ------------------------------------------------------------------ delivery

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self._tick()
            except Exception:  # the delivery loop must outlive one bad change
                log.exception("notification delivery failed")

    def _tick(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for tenant_id, tenant in list(self.tenants.items()):
            subscriptions = self.table(tenant)
            for sid, sub in list(subscriptions.items()):
                if _parse(sub["expirationDateTime"]) <= now:
                    # Graph deletes a subscription that was not renewed in time.
                    subscriptions.pop(sid, None)
                    self.sim.store.changed()
            changes = tenant.changes_since(self.cursor[tenant_id])
            if not changes:
                continue
            self.cursor[tenant_id] = changes[-1]["seq"]
            for sub in list(subscriptions.values()):
                items = [n for change in changes if (n := self._notification(tenant, sub, change)) is not None]
                if items:
                    self._spawn(self._deliver(sub, items))

    def _notification(self, tenant: Tenant, sub: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
        if change["seq"] <= int(sub.get("fromSequence", 0)):
            return None
        resource = str(sub["resource"])
        kind, object_id = change["kind"], str(change["id"])
        if kind == "group":
            members_changed = bool(change.get("added") or change.get("removed"))
            if not (resource == "groups" or resource == f"groups/{object_id}"
                    or (resource == f"groups/{object_id}/members" and members_changed)):
                return None
            odata_type, path = "#Microsoft.Graph.Group", f"Groups/{object_id}"
            change_type = "updated" if object_id in tenant.groups else "deleted"
        elif kind == "user":
            if resource not in ("users", f"users/{object_id}"):
                return None
            odata_type, path = "#Microsoft.Graph.User", f"Users/{object_id}"
            # A soft deletion is `updated`; only a permanent one is `deleted`.
            change_type = "updated" if object_id in tenant.users or object_id in tenant.deletedUsers else "deleted"
        else:
            return None
        if change_type not in str(sub["changeType"]).split(","):
            return None
        return {"id": str(uuid.uuid4()), "subscriptionId": sub["id"],
                "subscriptionExpirationDateTime": sub["expirationDateTime"], "changeType": change_type,
                "resource": path, "clientState": sub.get("clientState"), "tenantId": tenant.tenantId,
                "resourceData": {"@odata.type": odata_type, "@odata.id": path, "id": object_id,
                                 "organizationId": tenant.tenantId, "sequenceNumber": change["seq"]}}

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, sub: dict[str, Any], items: list[dict[str, Any]]) -> None:
        counters = self.deliveries.setdefault(sub["id"], Delivery())
        settings = self.sim.faults.settings_for("POST", f"/_notifications/{sub['resource']}")
        if settings["latency_ms"]:
            await asyncio.sleep(settings["latency_ms"] / 1000)
        if self.sim.faults.roll(settings["drop_rate"]):
            counters.dropped += len(items)
            return
        failed_by_fault = self.sim.faults.roll(settings["error_rate"])
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay / max(self.sim.time_scale, 1e-9))
            if failed_by_fault:
                break
            try:
                sent = time.time()
                answer = await self.client().post(sub["notificationUrl"], json={"value": items})
                if 200 <= answer.status_code < 300:
                    counters.delivered += len(items)
                    counters.recent = [*counters.recent[-99:], (sent, time.time(), len(items))]
                    return
                log.info("notification for %s answered %d (attempt %d)", sub["id"], answer.status_code, attempt + 1)
            except httpx.HTTPError as exc:
                log.info("notification for %s not delivered (attempt %d): %s", sub["id"], attempt + 1, exc)
        counters.failed += len(items)
        await self.lifecycle(sub, "missed")

    async def lifecycle(self, sub: dict[str, Any], event: str) -> bool:
        """POST one lifecycle event to the subscription's lifecycleNotificationUrl; False without one."""
        url = sub.get("lifecycleNotificationUrl")
        if not url:
            return False
        item = {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "tenantId": sub["tenantId"], "clientState": sub.get("clientState"), "lifecycleEvent": event}
        self.deliveries.setdefault(sub["id"], Delivery()).lifecycle += 1
        with contextlib.suppress(httpx.HTTPError):
            await self.client().post(url, json={"value": [item]})
        return True


def _view(sub: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in sub.items() if k not in ("tenantId", "fromSequence")}
    return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity", **shown}


def routes(sim: Simulator) -> list[Route]:
    """`/subscriptions` for /v1.0 and /beta, and the admin routes of notifications."""
    hub = Hub(sim)

    def tenant() -> Tenant:
        return sim.tenant

    def expiry(requested: Any) -> str:
        now = dt.datetime.now(dt.UTC)
        moment = _parse(requested)
        if moment > now + dt.timedelta(minutes=MAX_MINUTES, seconds=5):
            raise GraphError(400, "InvalidRequest", f"Subscription expiration can only be {MAX_MINUTES} minutes "
                                                    "in the future.")
        if moment <= now:
            raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
        return _iso(max(moment, now + dt.timedelta(minutes=MIN_MINUTES)))

    def owned(caller: Caller, sid: str) -> dict[str, Any]:
        sub = hub.table(tenant()).get(sid)
        if sub is None or sub.get("applicationId") != caller.claims.get("appid"):
            raise GraphError(404, "ResourceNotFound", f"The object was not found. Subscription '{sid}'.")
        return sub

    async def create(request: Request, caller: Caller) -> Response:
        body = await json_body(request)
        resource = _resource(body.get("resource"))
        needs = next((perms for pattern, perms in RESOURCES if pattern.match(resource)), None)
        if needs is None:
            raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported for change "
                                                    "notifications.")
        sim.authorize(caller, needs)
        change_types = [c.strip() for c in str(body.get("changeType") or "").split(",") if c.strip()]
        if not change_types or not set(change_types) <= CHANGE_TYPES:
            raise GraphError(400, "InvalidRequest", "changeType must be 'updated', 'deleted' or both for "
                                                    f"resource '{resource}'.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > CLIENT_STATE_MAX):
            raise GraphError(400, "InvalidRequest", f"clientState must be a string of at most {CLIENT_STATE_MAX} "
                                                    "characters.")
        notification_url = _url(body.get("notificationUrl"), "notificationUrl")
        lifecycle_url = body.get("lifecycleNotificationUrl")
        if lifecycle_url is not None:
            lifecycle_url = _url(lifecycle_url, "lifecycleNotificationUrl")
        expires = expiry(body.get("expirationDateTime"))
        await hub.validate(notification_url)
        if lifecycle_url:
            await hub.validate(lifecycle_url)
        current = tenant()
        sub = {"id": str(uuid.uuid4()), "resource": resource, "applicationId": caller.claims.get("appid"),
               "changeType": ",".join(change_types), "clientState": client_state,
               "notificationUrl": notification_url, "lifecycleNotificationUrl": lifecycle_url,
               "expirationDateTime": expires, "creatorId": caller.principal_id,
               "latestSupportedTlsVersion": body.get("latestSupportedTlsVersion", "v1_2"),
               "notificationContentType": "application/json", "includeResourceData": False,
               "tenantId": current.tenantId, "fromSequence": current.sequence}
        hub.table(current)[sub["id"]] = sub
        hub.watch(current)
        return JSONResponse(_view(sub), status_code=201)

    async def get_one(request: Request, caller: Caller) -> dict[str, Any]:
        hub.ensure_running()
        return _view(owned(caller, request.path_params["id"]))

    async def list_all(request: Request, caller: Caller) -> dict[str, Any]:
        hub.ensure_running()
        mine = [_view(s) for s in hub.table(tenant()).values() if s.get("applicationId") == caller.claims.get("appid")]
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": mine}

    async def update(request: Request, caller: Caller) -> dict[str, Any]:
        sub = owned(caller, request.path_params["id"])
        body = await json_body(request)
        unknown = set(body) - {"expirationDateTime", "notificationUrl", "lifecycleNotificationUrl", "@odata.type"}
        if unknown:
            raise GraphError(400, "InvalidRequest", f"Only expirationDateTime and notificationUrl can be updated, "
                                                    f"not {', '.join(sorted(unknown))}.")
        expires = expiry(body["expirationDateTime"]) if "expirationDateTime" in body else None
        if "notificationUrl" in body:
            url = _url(body["notificationUrl"], "notificationUrl")
            await hub.validate(url)
            sub["notificationUrl"] = url
        if expires is not None:
            sub["expirationDateTime"] = expires
        hub.watch(tenant())
        return _view(sub)

    async def delete(request: Request, caller: Caller) -> None:
        owned(caller, request.path_params["id"])
        hub.table(tenant()).pop(request.path_params["id"], None)

    async def reauthorize(request: Request, caller: Caller) -> None:
        sub = owned(caller, request.path_params["id"])
        needs = next(perms for pattern, perms in RESOURCES if pattern.match(str(sub["resource"])))
        sim.authorize(caller, needs)
        sub["reauthorizedAt"] = _iso(dt.datetime.now(dt.UTC))
        hub.watch(tenant())

    found: list[Route] = []
    for version in ("v1.0", "beta"):
        found += [
            Route(f"/{version}/subscriptions", graph_route(sim, create, permissions=(), write=True),
                  methods=["POST"]),
            Route(f"/{version}/subscriptions", graph_route(sim, list_all, permissions=()), methods=["GET"]),
            Route(f"/{version}/subscriptions/{{id}}", graph_route(sim, get_one, permissions=()), methods=["GET"]),
            Route(f"/{version}/subscriptions/{{id}}", graph_route(sim, update, permissions=(), write=True),
                  methods=["PATCH"]),
            Route(f"/{version}/subscriptions/{{id}}", graph_route(sim, delete, permissions=(), write=True),
                  methods=["DELETE"]),
            Route(f"/{version}/subscriptions/{{id}}/reauthorize",
                  graph_route(sim, reauthorize, permissions=(), write=True), methods=["POST"]),
        ]
    if not sim.admin:
        return found

    async def admin_list(request: Request) -> Response:
        hub.ensure_running()
        value = []
        for sub in hub.table(tenant()).values():
            counters = hub.deliveries.get(sub["id"], Delivery())
            value.append({**_view(sub), "deliveries": {"delivered": counters.delivered, "failed": counters.failed,
                                                       "dropped": counters.dropped, "lifecycle": counters.lifecycle,
                                                       "recent": [{"sentAt": sent, "answeredAt": answered,
                                                                   "count": n}
                                                                  for sent, answered, n in counters.recent]}})
        return JSONResponse({"value": value})

    async def admin_lifecycle(request: Request) -> Response:
        try:
            body = await json_body(request)
        except GraphError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        event = body.get("event")
        if event not in LIFECYCLE_EVENTS:
            return JSONResponse({"error": f"event must be one of {', '.join(LIFECYCLE_EVENTS)}"}, status_code=400)
        subscriptions = hub.table(tenant())
        sub = subscriptions.get(request.path_params["id"])
        if sub is None:
            return JSONResponse({"error": "no such subscription"}, status_code=404)
        if event == "subscriptionRemoved":
            subscriptions.pop(sub["id"], None)
            sim.store.changed()
        sent = await hub.lifecycle(sub, str(event))
        return JSONResponse({"id": sub["id"], "event": event, "sent": sent})

    found += [
        Route("/_sim/subscriptions", admin_list, methods=["GET"]),
        Route("/_sim/subscriptions/{id}/lifecycle", admin_lifecycle, methods=["POST"]),
    ]
    return found
