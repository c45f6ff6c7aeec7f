"""Graph change-notification subscriptions on the Graph gateway (implements SubscriptionApi).

- Create: https://learn.microsoft.com/graph/api/subscription-post-subscriptions (Graph first calls the
  notificationUrl with a validationToken; a failed validation is a 400). Permissions (application):
  `groups` resources Group.Read.All, `users` resources User.Read.All.
- Renew: https://learn.microsoft.com/graph/api/subscription-update (PATCH expirationDateTime).
- Reauthorize: https://learn.microsoft.com/graph/api/subscription-reauthorize.
- Delete: https://learn.microsoft.com/graph/api/subscription-delete; list:
  https://learn.microsoft.com/graph/api/subscription-list (the calling app's own subscriptions).

Requests are built with msgraph-sdk's request builders and its `Subscription` model; answers are parsed
into the model too (a few calls a day per connection).
"""

from __future__ import annotations

import contextlib
import datetime as dt

from msgraph.generated.models.subscription import Subscription as GraphSubscription

from shared.adapters.graph.gateway import GraphApi
from shared.adapters.graph.organization import parsed
from shared.errors import Configuration, InvalidInput, NotFound, PermissionDenied
from shared.services.ports import JsonObject, Subscription

#: The least privileged application permission Microsoft lists for subscribing to each resource.
PERMISSION = {"groups": "Group.Read.All", "users": "User.Read.All"}


def _subscription(body: JsonObject | None) -> Subscription:
    model: GraphSubscription = parsed(body or {}, GraphSubscription)
    if not model.id or model.expiration_date_time is None:
        raise InvalidInput("Graph answered a subscription without an id or expirationDateTime")
    expires = model.expiration_date_time
    return Subscription(id=str(model.id), resource=str(model.resource or ""),
                        expires=expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC),
                        notification_url=str(model.notification_url or ""))


class GraphSubscriptions:
    """Implements shared.services.notifications.SubscriptionApi."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        self._requests = graph.requests

    async def create(self, *, resource: str, change_type: str, notification_url: str, lifecycle_url: str,
                     expires: dt.datetime, client_state: str) -> Subscription:
        """A new subscription (Graph validates both URLs before answering)."""
        body = GraphSubscription(change_type=change_type, notification_url=notification_url,
                                 lifecycle_notification_url=lifecycle_url, resource=resource,
                                 expiration_date_time=expires.astimezone(dt.UTC), client_state=client_state,
                                 latest_supported_tls_version="v1_2")
        try:
            answer = await self._graph.send(self._requests.subscriptions.to_post_request_information(body))
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
        answer = await self._graph.send(self._requests.subscriptions.by_subscription_id(subscription_id)
                                        .to_patch_request_information(GraphSubscription(
                                            expiration_date_time=expires.astimezone(dt.UTC))))
        return _subscription(answer.body)

    async def reauthorize(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired event; NotFound when the subscription is gone."""
        await self._graph.send(self._requests.subscriptions.by_subscription_id(subscription_id)
                               .reauthorize.to_post_request_information())

    async def delete(self, subscription_id: str) -> None:
        """Remove a subscription; one already gone counts as removed."""
        with contextlib.suppress(NotFound):
            await self._graph.send(self._requests.subscriptions.by_subscription_id(subscription_id)
                                   .to_delete_request_information())

    async def list(self) -> list[Subscription]:
        """The app's subscriptions in the tenant."""
        found: list[Subscription] = []
        async for page in self._graph.pages(self._requests.subscriptions.to_get_request_information()):
            found += [_subscription(item) for item in page.get("value") or [] if isinstance(item, dict)]
        return found
