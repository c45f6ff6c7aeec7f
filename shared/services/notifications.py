"""Graph change notifications: subscriptions per connection, and notifications that queue a sync.

Each connection with sync on and NOTIFICATION_BASE_URL set holds two subscriptions (docs/notifications.md):
`groups` (changeType `updated`: a membership change of any group, nested ones included) and `users`
(`updated,deleted`: attribute changes), both pointing at `/api/notifications/connections/{c}` with
lifecycle events at `.../lifecycle`. `notification_timer` creates them and renews them well before
Graph's limit for directory resources (41,760 minutes,
https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime).

A notification is trusted only when its `subscriptionId` is one this connection recorded, its
`clientState` equals the connection's secret (kept in Key Vault, compared in constant time) and its
`tenantId` is the connection's tenant. Nothing is taken from its body but "run a sync" (a user change
about a user the directory does not hold runs nothing): a valid notification queues an incremental sync
unless one is already queued (a marker row, inserted only if
absent, makes a burst one run; the run removes it before it reads). A refused one writes nothing but an
audit record. Lifecycle events (https://learn.microsoft.com/graph/change-notifications-lifecycle-events):
`reauthorizationRequired` reauthorizes, `subscriptionRemoved` subscribes again and queues a run,
`missed` queues a run. The sync timer stays the safety net.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.config import Connection
from shared.errors import BridgeError, Forbidden, NotFound, PermissionDenied
from shared.services.audit_context import AuditContext
from shared.services.ports import (
    AuditSink,
    Clock,
    JsonObject,
    Leases,
    SecretStore,
    Subscription,
    SubscriptionApi,
    SubscriptionRecords,
    WorkQueue,
)
from shared.topology import Queue

log = logging.getLogger(__name__)

ACTOR = "graph-notification"
#: Graph's longest subscription to users and groups, in minutes; we ask for a little less.
MAX_MINUTES = 41760
LIFETIME = dt.timedelta(minutes=MAX_MINUTES - 60)
#: Renewed by the timer once less than this is left (the timer runs every 30 minutes).
RENEW_BEFORE = dt.timedelta(days=3)
#: A queued-run marker older than this is taken as lost (its message poisoned or dropped).
MARKER_STALE = dt.timedelta(minutes=15)
#: The lease scope (shared.services.ports.Leases) marking a run queued by a notification and not yet started.
QUEUED_SCOPE = "notified"
#: The connection's clientState is read from Key Vault at most this often (and again on a mismatch,
#: at most every REREAD_SECONDS, so forged traffic cannot turn into vault reads).
SECRET_TTL_SECONDS = 300.0
REREAD_SECONDS = 30.0
#: A notified run that finds another run holding the lease is queued again this much later.
REQUEUE_SECONDS = 2.0
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass(frozen=True)
class Want:
    """A subscription a connection keeps."""

    key: str
    resource: str
    change_type: str


WANTED = (Want("groups", "groups", "updated"), Want("users", "users", "updated,deleted"))


class UserLookup(Protocol):
    """Whether a user is in the bridge's directory (shared.services.directory.Directory)."""

    async def get(self, connection: str, user_id: str) -> Any:
        """The user's row, or None."""
        ...


class SyncRequester(Protocol):
    """What queues a sync run (shared.services.sync.SyncService)."""

    async def request(self, conn: Connection, *, actor: str, correlation_id: str, dry_run: bool = False,
                      full: bool = False, notified: bool = False) -> str:
        """Queue a run; returns its id."""
        ...


# ----------------------------------------------------------------------------- the HTTP bodies


class ChangeNotification(BaseModel):
    """One item of a changeNotificationCollection (https://learn.microsoft.com/graph/api/resources/changenotification)
    or a lifecycle event; only what the checks need is read, the rest is ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: str = Field(alias="subscriptionId", min_length=1, max_length=64)
    client_state: str | None = Field(default=None, alias="clientState", max_length=256)
    tenant_id: str | None = Field(default=None, alias="tenantId", max_length=64)
    lifecycle_event: str | None = Field(default=None, alias="lifecycleEvent", max_length=64)
    resource: str | None = Field(default=None, max_length=512)

    def user_id(self) -> str | None:
        """The user a `Users/{id}` notification names (read only to skip users the bridge does not hold)."""
        head, _, tail = (self.resource or "").strip("/").partition("/")
        return tail if head.lower() == "users" and tail and "/" not in tail else None


class NotificationCollection(BaseModel):
    """A POST from Graph: `{"value": [...]}`."""

    model_config = ConfigDict(extra="ignore")

    value: list[ChangeNotification] = Field(min_length=1, max_length=1000)


@dataclass
class Outcome:
    """What one POST from Graph led to."""

    accepted: int = 0
    refused: int = 0
    #: Genuine notifications about users the bridge does not hold (no run for them).
    ignored: int = 0
    queued: str | None = None
    coalesced: bool = False
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> JsonObject:
        """The reply body."""
        return {"accepted": self.accepted, "refused": self.refused, "ignored": self.ignored, "queuedRun": self.queued,
                "coalesced": self.coalesced, **({"events": self.events} if self.events else {})}


@dataclass
class MaintainReport:
    """What the timer did for one connection."""

    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> JsonObject:
        """The report as JSON."""
        return {"created": self.created, "renewed": self.renewed, "kept": self.kept, "removed": self.removed,
                "problems": self.problems}


def client_state_name(connection: str) -> str:
    """Key Vault name of a connection's clientState secret."""
    return f"graph-client-state-{connection}"


def notification_urls(base_url: str, connection: str) -> tuple[str, str]:
    """The notificationUrl and lifecycleNotificationUrl of a connection."""
    root = f"{base_url.rstrip('/')}/api/notifications/connections/{connection}"
    return root, f"{root}/lifecycle"


class NotificationService:
    """Keeps each connection's subscriptions and turns valid notifications into (coalesced) sync runs."""

    def __init__(self, *, sync: SyncRequester, subscriptions: SubscriptionRecords, leases: Leases,
                 secrets_store: SecretStore, audit: AuditSink, clock: Clock, base_url: str | None,
                 queue: WorkQueue | None = None, users: UserLookup | None = None) -> None:
        self._sync = sync
        self._users = users
        self._queue = queue
        self._subscriptions = subscriptions
        self._leases = leases
        self._secrets = secrets_store
        self._audit = audit
        self._clock = clock
        self.base_url = base_url
        self._state: dict[str, tuple[float, str]] = {}
        self._reread: dict[str, float] = {}

    # ------------------------------------------------------------------ the client state

    async def _client_state(self, connection: str, *, create: bool = False) -> str | None:
        known = self._state.get(connection)
        if known is not None and time.monotonic() - known[0] < SECRET_TTL_SECONDS:
            return known[1]
        try:
            value = (await self._secrets.get(client_state_name(connection))).value
        except NotFound:
            value = None
        if value is None and create:
            value = secrets.token_urlsafe(48)  # 64 characters; Graph takes up to 128
            await self._secrets.put(client_state_name(connection), value, tags={"purpose": "graph-client-state",
                                                                               "connection": connection})
        if value is not None:
            self._state[connection] = (time.monotonic(), value)
        return value

    async def _matches(self, connection: str, given: str | None) -> bool:
        if not given:
            return False
        expected = await self._client_state(connection)
        if expected is not None and hmac.compare_digest(given.encode(), expected.encode()):
            return True
        last = self._reread.get(connection, 0.0)
        if time.monotonic() - last < REREAD_SECONDS:
            return False
        # The secret may have been replaced since it was cached: read it once more.
        self._reread[connection] = time.monotonic()
        self._state.pop(connection, None)
        expected = await self._client_state(connection)
        return expected is not None and hmac.compare_digest(given.encode(), expected.encode())

    # ------------------------------------------------------------------ subscriptions

    async def recorded(self, connection: str) -> dict[str, JsonObject]:
        """The subscriptions recorded for a connection, by key (`groups`, `users`)."""
        found: dict[str, JsonObject] = {}
        for want in WANTED:
            row = await self._subscriptions.get(connection, want.key)
            if row is not None:
                found[want.key] = row
        return found

    async def maintain(self, conn: Connection, api: SubscriptionApi, *, correlation_id: str) -> MaintainReport:
        """Create what is missing, renew what expires within RENEW_BEFORE, recreate what Graph lost."""
        report = MaintainReport()
        if not self.base_url or not conn.features.sync.enabled:
            report.removed = await self.remove(conn, api, correlation_id=correlation_id)
            return report
        client_state = await self._client_state(conn.name, create=True)
        assert client_state is not None
        url, _ = notification_urls(self.base_url, conn.name)
        recorded = await self.recorded(conn.name)
        now = self._clock.now()
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        for want in WANTED:
            row = recorded.get(want.key)
            try:
                if row and row.get("subscriptionId") and row.get("notificationUrl") == url:
                    expires = dt.datetime.fromisoformat(str(row.get("expires")))
                    if expires - now > RENEW_BEFORE:
                        report.kept.append(want.key)
                        continue
                    try:
                        sub = await api.renew(str(row["subscriptionId"]), now + LIFETIME)
                        await self._record(conn.name, want, sub, url, renewed=True)
                        report.renewed.append(want.key)
                        await audit.record("notifications.renewed", want.resource, "renewed", subscriptionId=sub.id,
                                           expires=sub.expires.isoformat())
                        continue
                    except NotFound:
                        log.info("the %s subscription of %s is gone at Graph; subscribing again", want.key, conn.name)
                elif row and row.get("subscriptionId"):
                    # The public URL changed: the old subscription points elsewhere.
                    await api.delete(str(row["subscriptionId"]))
                await self._subscribe(conn, api, want, client_state, correlation_id)
                report.created.append(want.key)
            except PermissionDenied as err:
                # The users subscription is optional: a tenant that does not grant it keeps the groups one.
                report.problems.append(f"{want.key}: {err.detail}")
                await self._subscriptions.put(conn.name, want.key, {
                    "resource": want.resource, "problem": err.detail, "checkedAt": now.isoformat()})
        await self._drop_orphans(conn, api, url, report, correlation_id)
        return report

    async def _drop_orphans(self, conn: Connection, api: SubscriptionApi, url: str, report: MaintainReport,
                            correlation_id: str) -> None:
        """Delete subscriptions to this connection's URL that are not recorded (a create whose answer was lost)."""
        kept = {str(r.get("subscriptionId")) for r in (await self.recorded(conn.name)).values()}
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        for sub in await api.list():
            if sub.notification_url == url and sub.id not in kept:
                await api.delete(sub.id)
                report.removed.append(f"unrecorded {sub.resource} {sub.id}")
                await audit.record("notifications.removed", sub.resource, "unrecorded", subscriptionId=sub.id)

    async def _subscribe(self, conn: Connection, api: SubscriptionApi, want: Want, client_state: str,
                         correlation_id: str) -> Subscription:
        assert self.base_url
        url, lifecycle = notification_urls(self.base_url, conn.name)
        sub = await api.create(resource=want.resource, change_type=want.change_type, notification_url=url,
                               lifecycle_url=lifecycle, expires=self._clock.now() + LIFETIME,
                               client_state=client_state)
        await self._record(conn.name, want, sub, url, renewed=False)
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        await audit.record("notifications.subscribed", want.resource, "created", subscriptionId=sub.id,
                           expires=sub.expires.isoformat())
        return sub

    async def _record(self, connection: str, want: Want, sub: Subscription, url: str, *, renewed: bool) -> None:
        now = self._clock.now().isoformat()
        data: JsonObject = {"subscriptionId": sub.id, "resource": want.resource, "changeType": want.change_type,
                            "expires": sub.expires.isoformat(), "notificationUrl": url, "checkedAt": now}
        data["renewedAt" if renewed else "createdAt"] = now
        await self._subscriptions.put(connection, want.key, data)

    async def remove(self, conn: Connection, api: SubscriptionApi, *, correlation_id: str) -> list[str]:
        """Delete the connection's subscriptions at Graph and their records (uninstall)."""
        removed: list[str] = []
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        for key, row in (await self.recorded(conn.name)).items():
            if row.get("subscriptionId"):
                await api.delete(str(row["subscriptionId"]))
                removed.append(key)
                await audit.record("notifications.removed", str(row.get("resource") or key), "removed",
                                   subscriptionId=str(row["subscriptionId"]))
            await self._subscriptions.forget(conn.name, key)
        self._state.pop(conn.name, None)
        return removed

    async def uninstall(self, conn: Connection, api: SubscriptionApi, *, correlation_id: str) -> JsonObject:
        """`remove`, answered as POST connections/{c}/notifications/uninstall: what went, and whether the
        timer subscribes again."""
        body: dict[str, Any] = {"removed": await self.remove(conn, api, correlation_id=correlation_id)}
        if self.base_url and conn.features.sync.enabled:
            body["note"] = ["NOTIFICATION_BASE_URL is set and sync is on: the next notification_timer subscribes "
                            "again"]
        return body

    # ------------------------------------------------------------------ notifications

    async def _check(self, conn: Connection, items: list[ChangeNotification]) -> tuple[list[ChangeNotification],
                                                                                       list[str]]:
        ids = {str(r.get("subscriptionId")): key for key, r in (await self.recorded(conn.name)).items()
               if r.get("subscriptionId")}
        valid: list[ChangeNotification] = []
        reasons: list[str] = []
        for item in items:
            # Every check runs, so the answer's timing does not tell which one failed.
            known = item.subscription_id in ids
            state_ok = await self._matches(conn.name, item.client_state)
            tenant_ok = item.tenant_id is None or item.tenant_id.lower() == conn.tenant_id.lower()
            if known and state_ok and tenant_ok:
                valid.append(item)
                continue
            reasons.append("clientState missing" if not item.client_state else
                           "clientState does not match" if not state_ok else
                           "subscription not recorded for this connection" if not known else
                           "tenantId is not the connection's tenant")
        return valid, reasons

    async def refused(self, conn: Connection, reasons: list[str], correlation_id: str, *, lifecycle: bool) -> None:
        """Audit refused notifications (the reasons, never the values sent)."""
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        await audit.record("notification.refused", conn.name, "refused", count=len(reasons),
                           reasons=sorted(set(reasons)), lifecycle=lifecycle)
        log.warning("refused %d notification(s) for %s: %s", len(reasons), conn.name, ", ".join(sorted(set(reasons))))

    async def notified(self, conn: Connection, body: NotificationCollection, *, correlation_id: str) -> Outcome:
        """Change notifications: queue one sync if any is genuine; Forbidden when none is."""
        valid, reasons = await self._check(conn, body.value)
        outcome = Outcome(accepted=len(valid), refused=len(reasons))
        if reasons:
            await self.refused(conn, reasons, correlation_id, lifecycle=False)
        if not valid:
            raise Forbidden("notification refused: it does not carry this connection's subscription and clientState")
        relevant = [item for item in valid if await self._concerns(conn, item)]
        outcome.ignored = len(valid) - len(relevant)
        if relevant:
            outcome.queued = await self.queue_sync(conn, correlation_id=correlation_id)
            outcome.coalesced = outcome.queued is None
        return outcome

    async def _concerns(self, conn: Connection, item: ChangeNotification) -> bool:
        """Whether a genuine notification may change the directory: any group change may (membership, nesting);
        a user change only for a user the bridge holds (one who joins a sync group comes with a group change).
        In doubt, yes."""
        user = item.user_id()
        if user is None or self._users is None:
            return True
        try:
            return await self._users.get(conn.name, user) is not None
        except BridgeError:
            return True

    async def lifecycle(self, conn: Connection, body: NotificationCollection,
                        api: Callable[[], Awaitable[SubscriptionApi]], *, correlation_id: str) -> Outcome:
        """Lifecycle events: reauthorize, subscribe again, or queue a run for missed notifications."""
        valid, reasons = await self._check(conn, body.value)
        outcome = Outcome(accepted=len(valid), refused=len(reasons))
        if reasons:
            await self.refused(conn, reasons, correlation_id, lifecycle=True)
        if not valid:
            raise Forbidden("lifecycle notification refused: it does not carry this connection's subscription and "
                            "clientState")
        recorded = {str(r.get("subscriptionId")): key for key, r in (await self.recorded(conn.name)).items()}
        run = False
        audit = AuditContext(self._audit, connection=conn.name, actor=ACTOR, correlation_id=correlation_id)
        for item in valid:
            event = item.lifecycle_event or ""
            if event not in LIFECYCLE_EVENTS:
                outcome.events.append(f"{event or '(none)'}: ignored")
                continue
            key = recorded.get(item.subscription_id, "")
            want = next((w for w in WANTED if w.key == key), None)
            outcome.events.append(event)
            await audit.record("notification.lifecycle", want.resource if want else conn.name, event,
                               subscriptionId=item.subscription_id)
            if event == "missed":
                run = True
            elif event == "reauthorizationRequired":
                graph = await api()
                try:
                    await graph.reauthorize(item.subscription_id)
                    # Renewing too keeps it alive the longest (the docs allow either).
                    if want is not None:
                        sub = await graph.renew(item.subscription_id, self._clock.now() + LIFETIME)
                        assert self.base_url
                        await self._record(conn.name, want, sub, notification_urls(self.base_url, conn.name)[0],
                                           renewed=True)
                except NotFound:
                    if want is not None:
                        await self._resubscribe(conn, graph, want, correlation_id)
                        run = True
            elif event == "subscriptionRemoved" and want is not None:
                await self._resubscribe(conn, await api(), want, correlation_id)
                run = True
        if run:
            outcome.queued = await self.queue_sync(conn, correlation_id=correlation_id)
            outcome.coalesced = outcome.queued is None
        return outcome

    async def _resubscribe(self, conn: Connection, api: SubscriptionApi, want: Want, correlation_id: str) -> None:
        client_state = await self._client_state(conn.name, create=True)
        assert client_state is not None
        await self._subscribe(conn, api, want, client_state, correlation_id)

    # ------------------------------------------------------------------ coalescing

    async def queue_sync(self, conn: Connection, *, correlation_id: str) -> str | None:
        """Queue an incremental sync unless one is queued and not yet started; the run id, or None."""
        if not await self._mark_queued(conn.name):
            return None
        try:
            return await self._sync.request(conn, actor=ACTOR, correlation_id=correlation_id, notified=True)
        except BaseException:
            await self.release(conn.name)
            raise

    async def _mark_queued(self, connection: str) -> bool:
        """Mark a run as queued by a notification (a lease MARKER_STALE long, freed when the run starts); False
        when one is queued already. A mark older than MARKER_STALE is of a run that was lost: taken over."""
        owner = uuid.uuid4().hex
        return await self._leases.take(QUEUED_SCOPE, connection, owner, MARKER_STALE.total_seconds()) is not None

    async def requeue(self, conn: Connection, message: JsonObject, *, correlation_id: str) -> bool:
        """A notified run found another run holding the lease: send it again in REQUEUE_SECONDS, unless a run
        is already queued (that one reads the change too). True when sent again."""
        if not await self._mark_queued(conn.name):
            return False
        if self._queue is None:
            await self.release(conn.name)
            return False
        try:
            await self._queue.send(Queue.SYNC, message, delay_seconds=REQUEUE_SECONDS)
        except BaseException:
            await self.release(conn.name)
            raise
        return True

    async def release(self, connection: str) -> None:
        """A queued run is starting: the next notification queues another one."""
        held = await self._leases.holder(QUEUED_SCOPE, connection)
        if held is not None:
            await self._leases.release(held)

    async def status(self, connection: str) -> JsonObject:
        """The recorded subscriptions and whether a run is queued by a notification."""
        marker = await self._leases.holder(QUEUED_SCOPE, connection)
        subs: dict[str, Any] = {}
        for key, row in (await self.recorded(connection)).items():
            subs[key] = {k: row[k] for k in ("subscriptionId", "resource", "changeType", "expires", "createdAt",
                                             "renewedAt", "problem") if row.get(k)}
        return {"enabled": bool(self.base_url), "subscriptions": subs,
                "queuedAt": (marker.until - MARKER_STALE).isoformat() if marker else None}

