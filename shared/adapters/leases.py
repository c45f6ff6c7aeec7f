"""Leases on Table storage: implements shared.services.ports.Leases.

Rows: `leases` table, partition = the key (a connection), row = the scope ("sync", "events"); `owner` and
`until` (ISO 8601). A released lease keeps its row with no owner. Every write is guarded by the ETag the
row was read with (https://learn.microsoft.com/rest/api/storageservices/update-entity2), so of two takers
one wins and the other sees Conflict.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from shared.errors import Conflict, NotFound
from shared.services.ports import Clock, Entity, EntityStore, Lease
from shared.topology import Table

_EPOCH = "1970-01-01T00:00:00+00:00"


class TableLeases:
    """Leases of every scope on the `leases` table."""

    def __init__(self, entities: EntityStore, clock: Clock) -> None:
        self._entities = entities
        self._clock = clock

    def _row(self, scope: str, key: str, owner: str, until: dt.datetime, etag: str | None) -> Entity:
        return Entity(key, scope, {"owner": owner, "until": until.isoformat()}, etag)

    @staticmethod
    def _until(found: Entity) -> dt.datetime:
        return dt.datetime.fromisoformat(str(found.data.get("until") or _EPOCH))

    async def take(self, scope: str, key: str, owner: str, seconds: float) -> Lease | None:
        """Take or extend the lease; None when another live owner holds it (or won it just now)."""
        now = self._clock.now()
        until = now + dt.timedelta(seconds=seconds)
        found = await self._entities.get(Table.LEASES, key, scope)
        try:
            if found is None:
                stored = await self._entities.insert(Table.LEASES, self._row(scope, key, owner, until, None))
            else:
                if found.data.get("owner") not in (None, "", owner) and self._until(found) > now:
                    return None
                stored = await self._entities.update(Table.LEASES, self._row(scope, key, owner, until, found.etag))
        except (Conflict, NotFound):
            return None
        return Lease(scope, key, owner, until, stored.etag)

    async def holder(self, scope: str, key: str) -> Lease | None:
        """The live holder, or None."""
        found = await self._entities.get(Table.LEASES, key, scope)
        if found is None or not found.data.get("owner") or self._until(found) <= self._clock.now():
            return None
        return Lease(scope, key, str(found.data["owner"]), self._until(found), found.etag)

    async def renew(self, lease: Lease, seconds: float) -> Lease:
        """Extend the lease; Conflict when the row moved since `lease` was written."""
        until = self._clock.now() + dt.timedelta(seconds=seconds)
        try:
            stored = await self._entities.update(
                Table.LEASES, self._row(lease.scope, lease.key, lease.owner, until, lease.etag))
        except NotFound:
            raise Conflict(f"the {lease.scope} lease of {lease.key!r} is gone") from None
        return Lease(lease.scope, lease.key, lease.owner, until, stored.etag)

    async def release(self, lease: Lease) -> None:
        """Free the lease if it is still `lease` (a lease taken over stays with its new owner)."""
        with contextlib.suppress(Conflict, NotFound):
            await self._entities.update(Table.LEASES, self._row(lease.scope, lease.key, "",
                                                                dt.datetime.fromisoformat(_EPOCH), lease.etag))
