"""Recorded change-notification subscriptions on Table storage: implements shared.services.ports.SubscriptionRecords.

Rows: `syncstate` table, partition = connection, row `subscription.{key}` (beside sync's state rows),
properties as the service gives them.
"""

from __future__ import annotations

from shared.services.ports import Entity, EntityStore, JsonObject
from shared.topology import Table

PREFIX = "subscription."


class TableSubscriptionRecords:
    """Subscription records of every connection."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, key: str) -> JsonObject | None:
        """One subscription's row."""
        found = await self._entities.get(Table.SYNCSTATE, connection, PREFIX + key)
        return dict(found.data) if found else None

    async def put(self, connection: str, key: str, record: JsonObject) -> None:
        """Replace a subscription's row."""
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, PREFIX + key, dict(record)))

    async def forget(self, connection: str, key: str) -> None:
        """Delete a subscription's row."""
        await self._entities.delete(Table.SYNCSTATE, connection, PREFIX + key)
