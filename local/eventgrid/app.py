"""A local stand-in for an Event Grid topic: publish, subscriptions, the webhook handshake, delivery with retries.

What it follows (Microsoft's pages win where this differs):
- Publishing: `POST /api/events?api-version=2018-01-01` with `application/cloudevents-batch+json`, a JSON
  array of CloudEvents 1.0, authenticated by `aeg-sas-key` or a Microsoft Entra bearer token for
  `https://eventgrid.azure.net` (https://learn.microsoft.com/azure/event-grid/authenticate-with-access-keys-shared-access-signatures,
  https://learn.microsoft.com/azure/event-grid/authenticate-with-microsoft-entra-id). 1 MB per request
  (https://learn.microsoft.com/azure/event-grid/quotas-limits).
- Subscriptions to a webhook are validated first with the CloudEvents abuse-protection handshake: an
  `OPTIONS` request carrying `WebHook-Request-Origin`, answered with `WebHook-Allowed-Origin`
  (https://learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema).
- Delivery: one event per request in structured mode (`application/cloudevents+json`); 200-204 is success;
  400, 401, 403 and 413 are not retried; other failures and no answer within 30 s are retried after
  10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h, with a little randomness,
  until 30 attempts or 24 hours; then the event is dead-lettered
  (https://learn.microsoft.com/azure/event-grid/delivery-and-retry). `time_scale` divides every wait so
  tests see hours pass in seconds.

Admin API (loopback only, for tests, `make run` and `python -m local.eventgrid subscribe`):
`GET/PUT/DELETE /_admin/subscriptions[/{name}]`, `GET /_admin/deadletters`, `GET /_admin/deliveries`.
A built-in subscriber, `/_sink/{name}`, answers the handshake, keeps what it receives (`GET`) and can be
told to fail its next deliveries (`PUT /_admin/sinks/{name}`), for the demo and for retry tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import hmac
import itertools
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("local.eventgrid")

ORIGIN = "eventgrid.azure.net"
AUDIENCE = "https://eventgrid.azure.net"
MAX_REQUEST_BYTES = 1024 * 1024
#: Event Grid's retry schedule in seconds; after the last step, every 12 hours.
SCHEDULE = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
EVERY_LATER = 12 * 3600
NOT_RETRIED = frozenset({400, 401, 403, 413})
RESPONSE_TIMEOUT = 30.0
REQUIRED = ("id", "source", "specversion", "type")


def retry_delay(attempt: int, jitter: float = 0.0) -> float:
    """Seconds before delivery attempt `attempt + 1`, after `attempt` failed attempts (1-based)."""
    base = SCHEDULE[attempt - 1] if attempt <= len(SCHEDULE) else EVERY_LATER
    return base * (1 + jitter)


class Subscription(BaseModel):
    """An event subscription to a webhook."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9-]{3,64}$")
    endpoint: str = Field(pattern=r"^https?://")
    #: CloudEvents `type` values delivered (`includedEventTypes`); empty: all.
    types: list[str] = Field(default_factory=list)
    max_delivery_attempts: int = Field(30, ge=1, le=30, alias="maxDeliveryAttempts")
    event_ttl_minutes: int = Field(1440, ge=1, le=1440, alias="eventTimeToLiveInMinutes")

    def wants(self, event: dict[str, Any]) -> bool:
        """Whether the filter passes the event."""
        return not self.types or str(event.get("type")) in self.types


@dataclass(order=True)
class Delivery:
    """One event on its way to one subscription."""

    due: float
    seq: int
    subscription: str = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    published: float = field(compare=False)
    attempts: int = field(default=0, compare=False)
    last_error: str = field(default="", compare=False)


@dataclass
class Sink:
    """A built-in webhook receiver."""

    received: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500
    attempts: int = 0


@dataclass
class Settings:
    """How the stand-in runs."""

    data_dir: Path
    key: str
    time_scale: float = 1.0
    authority: str | None = None
    tenant: str | None = None
    ssl_context: ssl.SSLContext | None = None
    seed: int | None = None


class Topic:
    """The topic's state: subscriptions (kept in the data folder), pending deliveries, dead letters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subscriptions: dict[str, Subscription] = {}
        self.queue: list[Delivery] = []
        self.deadletters: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.sinks: dict[str, Sink] = {}
        self.published = 0
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._random = random.Random(settings.seed)  # noqa: S311 - jitter, not security
        self._jwks: jwt.PyJWKClient | None = None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._file = settings.data_dir / "subscriptions.json"
        if self._file.exists():
            for raw in json.loads(self._file.read_text(encoding="utf-8") or "[]"):
                sub = Subscription.model_validate(raw)
                self.subscriptions[sub.name] = sub

    def _save(self) -> None:
        rows = [s.model_dump(by_alias=True) for s in self.subscriptions.values()]
        self._file.write_text(json.dumps(rows, indent=2), encoding="utf-8")

    def scaled(self, seconds: float) -> float:
        """Real seconds for `seconds` of Event Grid's time."""
        return seconds / self.settings.time_scale

    # ------------------------------------------------------------------ publishing

    async def authorized(self, request: Request) -> bool:
        """`aeg-sas-key` equal to the topic's key, or a bearer token for Event Grid from the authority."""
        key = request.headers.get("aeg-sas-key")
        if key is not None:
            return hmac.compare_digest(key.encode(), self.settings.key.encode())
        authorization = request.headers.get("authorization", "")
        if not authorization.lower().startswith("bearer ") or not self.settings.authority or not self.settings.tenant:
            return False
        if self._jwks is None:
            base = f"{self.settings.authority.rstrip('/')}/{self.settings.tenant}"
            self._jwks = jwt.PyJWKClient(f"{base}/discovery/v2.0/keys", ssl_context=self.settings.ssl_context)
        token = authorization[7:].strip()
        try:
            signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            jwt.decode(token, signing.key, algorithms=["RS256"], audience=[AUDIENCE, AUDIENCE + "/"],
                       issuer=f"{self.settings.authority.rstrip('/')}/{self.settings.tenant}/v2.0")
        except jwt.PyJWTError:
            return False
        return True

    def accept(self, events: list[dict[str, Any]]) -> None:
        """Queue each event for every subscription whose filter passes it."""
        now = time.monotonic()
        self.published += len(events)
        for event in events:
            for sub in self.subscriptions.values():
                if sub.wants(event):
                    heapq.heappush(self.queue, Delivery(now, next(self._seq), sub.name, event, now))
        self._wake.set()

    # ------------------------------------------------------------------ subscriptions

    async def handshake(self, endpoint: str, client: httpx.AsyncClient) -> str | None:
        """The CloudEvents validation handshake; None when the endpoint allowed us, else why not."""
        try:
            answer = await client.options(endpoint, headers={"WebHook-Request-Origin": ORIGIN,
                                                             "WebHook-Request-Rate": "120"}, timeout=RESPONSE_TIMEOUT)
        except httpx.HTTPError as exc:
            return f"the endpoint could not be reached: {type(exc).__name__}"
        allowed = {o.strip() for o in answer.headers.get("WebHook-Allowed-Origin", "").split(",")}
        if answer.status_code != 200 or not (ORIGIN in allowed or "*" in allowed):
            return (f"the endpoint answered the validation request with {answer.status_code} and "
                    f"WebHook-Allowed-Origin {answer.headers.get('WebHook-Allowed-Origin')!r}")
        return None

    def subscribe(self, sub: Subscription) -> None:
        """Keep a validated subscription."""
        self.subscriptions[sub.name] = sub
        self._save()

    def unsubscribe(self, name: str) -> bool:
        """Drop a subscription (its pending deliveries go too)."""
        found = self.subscriptions.pop(name, None) is not None
        self.queue = [d for d in self.queue if d.subscription != name]
        heapq.heapify(self.queue)
        self._save()
        return found

    # ------------------------------------------------------------------ delivery

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        record = {"subscription": delivery.subscription, "event": delivery.event, "attempts": delivery.attempts,
                  "deadLetterReason": reason, "lastError": delivery.last_error,
                  "deadLetteredAt": dt.datetime.now(dt.UTC).isoformat()}
        self.deadletters.append(record)
        folder = self.settings.data_dir / "deadletter"
        folder.mkdir(exist_ok=True)
        with (folder / f"{delivery.subscription}.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    async def _attempt(self, delivery: Delivery, client: httpx.AsyncClient) -> None:
        sub = self.subscriptions.get(delivery.subscription)
        if sub is None:
            return
        delivery.attempts += 1
        status = 0
        try:
            answer = await client.post(sub.endpoint, content=json.dumps(delivery.event).encode(),
                                       headers={"Content-Type": "application/cloudevents+json; charset=utf-8",
                                                "WebHook-Request-Origin": ORIGIN},
                                       timeout=self.scaled(RESPONSE_TIMEOUT))
            status = answer.status_code
        except httpx.HTTPError as exc:
            delivery.last_error = f"{type(exc).__name__}"
        if 200 <= status <= 204:
            self.delivered.append({"subscription": sub.name, "id": delivery.event.get("id"),
                                   "attempts": delivery.attempts,
                                   "delaySeconds": round(time.monotonic() - delivery.published, 4)})
            return
        if status:
            delivery.last_error = f"HTTP {status}"
        if status in NOT_RETRIED:
            self._dead_letter(delivery, "the endpoint answered with an error that is not retried")
            return
        waited = (time.monotonic() - delivery.published) * self.settings.time_scale
        if delivery.attempts >= sub.max_delivery_attempts:
            self._dead_letter(delivery, "MaxDeliveryAttemptsExceeded")
            return
        delay = retry_delay(delivery.attempts, self._random.uniform(0, 0.1))
        if waited + delay > sub.event_ttl_minutes * 60:
            self._dead_letter(delivery, "TimeToLiveExceeded")
            return
        delivery.due = time.monotonic() + self.scaled(delay)
        heapq.heappush(self.queue, delivery)
        self._wake.set()

    async def deliver_forever(self, client: httpx.AsyncClient) -> None:
        """Deliver due events, each on its own task (a slow subscriber holds up no other delivery)."""
        running: set[asyncio.Task[None]] = set()
        limit = asyncio.Semaphore(32)

        async def one(delivery: Delivery) -> None:
            async with limit:
                try:
                    await self._attempt(delivery, client)
                except Exception:  # a stand-in bug must not stop delivery of everything else
                    log.exception("delivery of %s failed", delivery.event.get("id"))

        while True:
            now = time.monotonic()
            while self.queue and self.queue[0].due <= now:
                task = asyncio.create_task(one(heapq.heappop(self.queue)))
                running.add(task)
                task.add_done_callback(running.discard)
            self._wake.clear()
            wait = (self.queue[0].due - now) if self.queue else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.0))


def _problem(status: int, code: str, message: str) -> JSONResponse:
    # Event Grid's error body (https://learn.microsoft.com/azure/event-grid/troubleshoot-errors).
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def build_app(settings: Settings) -> Starlette:
    """The ASGI app of one topic."""
    topic = Topic(settings)
    verify: ssl.SSLContext | bool = settings.ssl_context or True
    client = httpx.AsyncClient(verify=verify)

    async def publish(request: Request) -> Response:
        if not await topic.authorized(request):
            return _problem(401, "Unauthorized", "The request authorization key is not authorized for this topic "
                            "(send aeg-sas-key or a bearer token for https://eventgrid.azure.net).")
        if request.query_params.get("api-version") is None:
            return _problem(400, "BadRequest", "The api-version query parameter is required.")
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            return _problem(413, "RequestEntityTooLarge", "The maximum size for the request is 1 MB.")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/cloudevents-batch+json":
            return _problem(400, "BadRequest", f"Content-Type {kind!r} is not application/cloudevents-batch+json.")
        try:
            events = json.loads(body)
        except ValueError:
            return _problem(400, "BadRequest", "The request body is not valid JSON.")
        if not isinstance(events, list) or not events:
            return _problem(400, "BadRequest", "The request body must be a non-empty array of CloudEvents.")
        for index, event in enumerate(events):
            missing = [name for name in REQUIRED if not isinstance(event, dict) or not event.get(name)]
            if missing:
                return _problem(400, "BadRequest", f"Event {index} lacks the required attribute(s) {missing}.")
            if event["specversion"] != "1.0":
                return _problem(400, "BadRequest", f"Event {index} has specversion {event['specversion']!r}; "
                                "1.0 is required.")
        topic.accept(events)
        return Response(status_code=200)

    async def subscriptions(request: Request) -> Response:
        return JSONResponse([s.model_dump(by_alias=True) for s in topic.subscriptions.values()])

    async def put_subscription(request: Request) -> Response:
        try:
            sub = Subscription.model_validate({**(await request.json()), "name": request.path_params["name"]})
        except (ValidationError, ValueError) as exc:
            return _problem(400, "InvalidRequest", str(exc).splitlines()[0])
        refused = await topic.handshake(sub.endpoint, client)
        if refused is not None:
            return _problem(400, "WebhookValidationFailed", f"Webhook validation handshake failed for "
                            f"{sub.endpoint}: {refused}")
        topic.subscribe(sub)
        return JSONResponse(sub.model_dump(by_alias=True), status_code=201)

    async def delete_subscription(request: Request) -> Response:
        return Response(status_code=200 if topic.unsubscribe(request.path_params["name"]) else 404)

    async def deadletters(request: Request) -> Response:
        return JSONResponse(topic.deadletters)

    async def deliveries(request: Request) -> Response:
        return JSONResponse({"published": topic.published, "pending": len(topic.queue),
                             "delivered": topic.delivered})

    async def put_sink(request: Request) -> Response:
        sink = topic.sinks.setdefault(request.path_params["name"], Sink())
        body = await request.json()
        sink.fail_next = int(body.get("failNext", 0))
        sink.fail_status = int(body.get("status", 500))
        return JSONResponse({"failNext": sink.fail_next, "status": sink.fail_status})

    async def sink(request: Request) -> Response:
        own = topic.sinks.setdefault(request.path_params["name"], Sink())
        if request.method == "OPTIONS":
            origin = request.headers.get("WebHook-Request-Origin", "")
            return Response(status_code=200, headers={"WebHook-Allowed-Origin": origin, "Allow": "POST, OPTIONS"})
        if request.method == "GET":
            start = int(request.query_params.get("from", "0") or 0)
            return JSONResponse({"received": own.received[start:], "attempts": own.attempts,
                                 "count": len(own.received)})
        own.attempts += 1
        if own.fail_next > 0:
            own.fail_next -= 1
            return Response(status_code=own.fail_status)
        own.received.append(json.loads(await request.body()))
        return Response(status_code=200)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(topic.deliver_forever(client))
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            await client.aclose()

    app = Starlette(routes=[
        Route("/api/events", publish, methods=["POST"]),
        Route("/_admin/subscriptions", subscriptions, methods=["GET"]),
        Route("/_admin/subscriptions/{name}", put_subscription, methods=["PUT"]),
        Route("/_admin/subscriptions/{name}", delete_subscription, methods=["DELETE"]),
        Route("/_admin/deadletters", deadletters, methods=["GET"]),
        Route("/_admin/deliveries", deliveries, methods=["GET"]),
        Route("/_admin/sinks/{name}", put_sink, methods=["PUT"]),
        Route("/_sink/{name}", sink, methods=["GET", "POST", "OPTIONS"]),
    ], lifespan=lifespan)
    app.state.topic = topic
    return app

