"""The federation watch's findings on Table storage: implements shared.services.ports.FederationWatch.

Rows: `syncstate` table, partition = connection, row `federation-{domain}` (beside sync's state rows),
properties as the service gives them.
"""

from __future__ import annotations

from shared.services.ports import Entity, EntityStore, JsonObject
from shared.topology import Table

PREFIX = "federation-"


class TableFederationWatch:
    """Watch records of every connection's federated domains."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def rows(self, connection: str) -> list[JsonObject]:
        """Every `federation-*` row of the connection (one range query)."""
        return [dict(row.data) async for row in self._entities.query(
            Table.SYNCSTATE, connection, row_key_from=PREFIX, row_key_to=PREFIX[:-1] + ".")]

    async def get(self, connection: str, domain: str) -> JsonObject | None:
        """One domain's row."""
        found = await self._entities.get(Table.SYNCSTATE, connection, PREFIX + domain)
        return dict(found.data) if found else None

    async def put(self, connection: str, domain: str, record: JsonObject) -> None:
        """Replace a domain's row."""
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, PREFIX + domain, dict(record)))

    async def forget(self, connection: str, domain: str) -> None:
        """Delete a domain's row."""
        await self._entities.delete(Table.SYNCSTATE, connection, PREFIX + domain)
