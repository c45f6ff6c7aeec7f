"""Each user's rotation state in Table storage, with the per-user lease inside the row.

Implements shared.services.ports.RotationRepository. Table `rotations`: partition = connection,
row = user id, the RotationRow's fields (snake_case, times in ISO form). Every write after a read
carries the read's ETag, so two workers cannot both take a lease or both record an outcome over
each other (docs/architecture.md, invariant 1: one rotation per user at a time).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shared.domain.rotation import RotationRow, Status
from shared.errors import Conflict
from shared.services.ports import Entity, EntityStore, Versioned
from shared.topology import Table

log = logging.getLogger(__name__)

_RELEASED = {"lease_owner": None, "lease_until": None}


class TableRotations:
    """Rotation rows on the `rotations` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, user_id: str) -> Versioned[RotationRow]:
        """The user's row with its ETag (an empty row when absent, or when malformed: it starts afresh)."""
        found = await self._entities.get(Table.ROTATIONS, connection, user_id)
        if found is None:
            return Versioned(RotationRow(), None)
        try:
            return Versioned(RotationRow.model_validate(found.data), found.etag)
        except ValidationError:
            log.warning("rotation row %s/%s is malformed; starting afresh", connection, user_id)
            return Versioned(RotationRow(), found.etag)

    async def rows(self, connection: str) -> dict[str, RotationRow]:
        """Every well-formed row of the connection, per user id."""
        rows: dict[str, RotationRow] = {}
        async for found in self._entities.query(Table.ROTATIONS, connection):
            try:
                rows[found.row_key] = RotationRow.model_validate(found.data)
            except ValidationError:
                continue
        return rows

    async def claim(self, connection: str, user_id: str, seen: Versioned[RotationRow], rotation_id: str, *,
                    now: dt.datetime, until: dt.datetime) -> Versioned[RotationRow]:
        """Take the lease for `rotation_id`; Conflict when another rotation holds it or the row moved."""
        row = seen.value
        if row.leased_to_other(rotation_id, now) and row.lease_until is not None:
            raise Conflict(f"another rotation of user {user_id} holds the lease until {row.lease_until:%H:%M:%S}")
        claimed = row.model_copy(update={"lease_owner": rotation_id, "lease_until": until,
                                         "last_rotation_id": rotation_id, "status": Status.IN_PROGRESS})
        return await self._write(connection, user_id, Versioned(claimed, seen.version))

    async def finish(self, connection: str, user_id: str, claimed: Versioned[RotationRow],
                     changes: Mapping[str, Any]) -> None:
        """Record the outcome and let the lease go; Conflict when the row changed since it was claimed."""
        await self._write(connection, user_id,
                          Versioned(claimed.value.model_copy(update={**changes, **_RELEASED}), claimed.version))

    async def fail(self, connection: str, user_id: str, rotation_id: str, reason: str, *, now: dt.datetime) -> bool:
        """Record `rotation_id` as failed; False when another rotation holds the lease."""
        seen = await self.get(connection, user_id)
        if seen.value.leased_to_other(rotation_id, now):
            return False
        failed = seen.value.model_copy(update={"status": Status.FAILED, "reason": reason,
                                               "last_rotation_id": rotation_id, **_RELEASED})
        await self._write(connection, user_id, Versioned(failed, seen.version))
        return True

    async def _write(self, connection: str, user_id: str, row: Versioned[RotationRow]) -> Versioned[RotationRow]:
        entity = Entity(connection, user_id, row.value.model_dump(mode="json", exclude_none=True), row.version)
        saved = await (self._entities.update(Table.ROTATIONS, entity) if row.version
                       else self._entities.insert(Table.ROTATIONS, entity))
        return Versioned(row.value, saved.etag)
