"""Graph change-notification subscriptions on the GraphApi port.

- Create: https://learn.microsoft.com/graph/api/subscription-post-subscriptions (Graph first calls the
  notificationUrl with a validationToken; a failed validation is a 400). Permissions (application):
  `groups` resources Group.Read.All, `users` resources User.Read.All.
- Renew: https://learn.microsoft.com/graph/api/subscription-update (PATCH expirationDateTime).
- Reauthorize: https://learn.microsoft.com/graph/api/subscription-reauthorize.
- Delete: https://learn.microsoft.com/graph/api/subscription-delete; list:
  https://learn.microsoft.com/graph/api/subscription-list (the calling app's own subscriptions).
"""

from __future__ import annotations

import contextlib
import datetime as dt

from shared.errors import Configuration, InvalidInput, NotFound, PermissionDenied
from shared.services.notifications import Subscription
from shared.services.ports import GraphApi, JsonObject

#: The least privileged application permission Microsoft lists for subscribing to each resource.
PERMISSION = {"groups": "Group.Read.All", "users": "User.Read.All"}


def _time(value: object) -> dt.datetime:
    text = str(value or "").replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _subscription(body: JsonObject | None) -> Subscription:
    body = body or {}
    return Subscription(id=str(body["id"]), resource=str(body.get("resource") or ""),
                        expires=_time(body.get("expirationDateTime")),
                        notification_url=str(body.get("notificationUrl") or ""))


class GraphSubscriptions:
    """Implements shared.services.notifications.SubscriptionApi."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph

    async def create(self, *, resource: str, change_type: str, notification_url: str, lifecycle_url: str,
                     expires: dt.datetime, client_state: str) -> Subscription:
        """A new subscription (Graph validates both URLs before answering)."""
        body: JsonObject = {"changeType": change_type, "notificationUrl": notification_url,
                            "lifecycleNotificationUrl": lifecycle_url, "resource": resource,
                            "expirationDateTime": expires.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                            "clientState": client_state, "latestSupportedTlsVersion": "v1_2"}
        try:
            answer = await self._graph.send("POST", "/subscriptions", body=body)
        except PermissionDenied as err:
            permission = PERMISSION.get(resource.split("/", 1)[0], "")
            raise PermissionDenied(f"Graph refused a subscription to {resource}: grant the application permission "
                                   f"{permission} (https://learn.microsoft.com/graph/api/subscription-post-"
                                   "subscriptions#permissions)", permission=permission,
                                   request_id=err.request_id) from None
        except InvalidInput as err:
            raise Configuration(f"Graph refused the subscription to {resource}: {err.detail} (it calls "
                                f"{notification_url} to validate it: NOTIFICATION_BASE_URL must be this app's public "
                                "https address)", setting="NOTIFICATION_BASE_URL") from None
        return _subscription(answer.body)

    async def renew(self, subscription_id: str, expires: dt.datetime) -> Subscription:
        """Move the expiry; NotFound when Graph no longer has the subscription."""
        answer = await self._graph.send("PATCH", f"/subscriptions/{subscription_id}", body={
            "expirationDateTime": expires.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")})
        return _subscription(answer.body)

    async def reauthorize(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired event; NotFound when the subscription is gone."""
        await self._graph.send("POST", f"/subscriptions/{subscription_id}/reauthorize")

    async def delete(self, subscription_id: str) -> None:
        """Remove a subscription; one already gone counts as removed."""
        with contextlib.suppress(NotFound):
            await self._graph.send("DELETE", f"/subscriptions/{subscription_id}")

    async def list(self) -> list[Subscription]:
        """The app's subscriptions in the tenant."""
        found: list[Subscription] = []
        async for page in self._graph.pages("/subscriptions"):
            found += [_subscription(item) for item in page.get("value") or [] if isinstance(item, dict)]
        return found
