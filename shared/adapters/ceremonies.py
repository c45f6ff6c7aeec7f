"""Passkey registration ceremonies in Table storage.

Implements shared.services.ports.CeremonyRepository. Table `ceremonies`: partition = connection,
row = ceremony id; the excluded credential ids are kept comma-separated (credential ids are base64url).
The ETag guards consumption: of two registrations with the same ceremony, only one can mark it used.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import ValidationError

from shared.domain.devices import Ceremony
from shared.errors import Conflict, InvalidInput
from shared.services.ports import Entity, EntityStore, JsonObject, Versioned
from shared.topology import Table

log = logging.getLogger(__name__)


def _row(ceremony: Ceremony) -> JsonObject:
    return {"challenge": ceremony.challenge, "expiresAt": ceremony.expires_at.isoformat(), "userId": ceremony.user_id,
            "deviceId": ceremony.device_id, "excluded": ",".join(ceremony.excluded), "used": ceremony.used}


def _ceremony(entity: Entity) -> Ceremony:
    excluded = tuple(c for c in str(entity.data.get("excluded") or "").split(",") if c)
    return Ceremony.model_validate({**entity.data, "id": entity.row_key, "excluded": excluded})


class TableCeremonies:
    """Ceremonies on the `ceremonies` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def add(self, connection: str, ceremony: Ceremony) -> None:
        """Keep a new ceremony; Conflict when the id is taken."""
        await self._entities.insert(Table.CEREMONIES, Entity(connection, ceremony.id, _row(ceremony)))

    async def get(self, connection: str, ceremony_id: str) -> Versioned[Ceremony] | None:
        """One ceremony, or None (also for an id that cannot be a row key, or a row that is not a ceremony)."""
        try:
            found = await self._entities.get(Table.CEREMONIES, connection, ceremony_id)
        except InvalidInput:
            return None
        if found is None:
            return None
        try:
            return Versioned(_ceremony(found), found.etag)
        except ValidationError:
            log.warning("ceremony %s/%s is malformed; treated as absent", connection, ceremony_id)
            return None

    async def consume(self, connection: str, ceremony: Versioned[Ceremony]) -> None:
        """Mark a ceremony used; Conflict when it changed since it was read."""
        used = ceremony.value.model_copy(update={"used": True})
        await self._entities.update(Table.CEREMONIES, Entity(connection, used.id, _row(used), ceremony.version))

    async def purge(self, connection: str, expired_before: dt.datetime) -> int:
        """Delete ceremonies that expired before the time, used or not, and unreadable ones; returns how many."""
        stale: list[Entity] = []
        async for found in self._entities.query(Table.CEREMONIES, connection):
            try:
                expires = dt.datetime.fromisoformat(str(found.data.get("expiresAt")).replace("Z", "+00:00"))
            except ValueError:
                log.warning("ceremony %s/%s has no readable expiry; deleted", connection, found.row_key)
                stale.append(found)
                continue
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.UTC)
            if expires < expired_before:
                stale.append(found)
        for found in stale:
            # The ETag keeps a ceremony that is being consumed right now (it cannot be, once expired).
            try:
                await self._entities.delete(Table.CEREMONIES, connection, found.row_key, etag=found.etag)
            except Conflict:
                continue
        return len(stale)
