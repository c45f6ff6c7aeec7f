"""Licences on the Graph gateway: the tenant's subscribed SKUs and a user's licence assignment.

- https://learn.microsoft.com/graph/api/subscribedsku-list (free seats = prepaidUnits.enabled - consumedUnits),
- https://learn.microsoft.com/graph/api/user-assignlicense (the user needs a usageLocation first).

Requests are built with msgraph-sdk's request builders; the SKUs are parsed into its `SubscribedSku` model.
"""

from __future__ import annotations

from uuid import UUID

from msgraph.generated.models.assigned_license import AssignedLicense
from msgraph.generated.models.subscribed_sku import SubscribedSku
from msgraph.generated.users.item.assign_license.assign_license_post_request_body import (
    AssignLicensePostRequestBody,
)

from shared.adapters.graph.gateway import GraphApi
from shared.adapters.graph.organization import parsed
from shared.domain.export import Sku
from shared.services.ports import Written


class GraphLicenses:
    """One connection's SKUs and licence assignments."""

    def __init__(self, graph: GraphApi) -> None:
        self._graph = graph
        self._requests = graph.requests

    async def skus(self) -> list[Sku]:
        """Subscribed SKUs with their free seats."""
        body = await self._graph.get(self._requests.subscribed_skus.to_get_request_information())
        found: list[Sku] = []
        for item in body.get("value") or []:
            sku: SubscribedSku = parsed(item, SubscribedSku)
            enabled = (sku.prepaid_units.enabled if sku.prepaid_units else None) or 0
            free = int(enabled) - int(sku.consumed_units or 0)
            found.append(Sku(str(sku.sku_id), str(sku.sku_part_number or ""), free))
        return found

    async def assign(self, user_id: str, sku_id: str) -> Written:
        """Add one licence, removing none."""
        body = AssignLicensePostRequestBody(add_licenses=[AssignedLicense(sku_id=UUID(sku_id), disabled_plans=[])],
                                            remove_licenses=[])
        response = await self._graph.send(self._requests.users.by_user_id(user_id).assign_license
                                          .to_post_request_information(body))
        return Written(None, response.request_id)
