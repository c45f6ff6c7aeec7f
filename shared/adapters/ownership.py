"""Which enrollment-state groups a connection uses, owned or adopted, in Table storage.

Implements shared.services.ports.GroupRecords. Rows: `syncstate` table, partition = connection, row
`enrollmentGroup.{object id}`, one per group, written as soon as the group is created or adopted.
Earlier versions kept one row `enrollmentGroups` (state -> id, name, created); it is turned into
records the first time they are read, `created` meaning owned.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from shared.domain.directory import Enrollment
from shared.domain.enrollment import GroupRecord, Ownership
from shared.errors import Conflict
from shared.services.ports import Entity, EntityStore
from shared.topology import Table

log = logging.getLogger(__name__)

PREFIX = "enrollmentGroup."
#: The row of earlier versions.
LEGACY_ROW = "enrollmentGroups"


def _row_key(group_id: str) -> str:
    return PREFIX + group_id


class TableGroupRecords:
    """Group records of every connection on the `syncstate` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def records(self, connection: str) -> list[GroupRecord]:
        """Every recorded group of the connection (a malformed row is logged and skipped)."""
        await self._migrate(connection)
        found: list[GroupRecord] = []
        # Row keys after the prefix are object ids; "enrollmentGroup/" is the next key after every one.
        async for row in self._entities.query(Table.SYNCSTATE, connection, row_key_from=PREFIX,
                                              row_key_to=PREFIX[:-1] + "/"):
            try:
                found.append(GroupRecord.model_validate({**row.data, "id": row.row_key[len(PREFIX):]}))
            except ValidationError:
                log.warning("group record %s/%s is malformed; skipped", connection, row.row_key)
        return found

    async def put(self, connection: str, record: GroupRecord) -> None:
        """Record a group (replacing the record of the same object id)."""
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, _row_key(record.id), record.to_row()))

    async def forget(self, connection: str, group_id: str) -> None:
        """Drop a group's record; absent counts as dropped."""
        await self._entities.delete(Table.SYNCSTATE, connection, _row_key(group_id))

    async def _migrate(self, connection: str) -> None:
        legacy = await self._entities.get(Table.SYNCSTATE, connection, LEGACY_ROW)
        if legacy is None:
            return
        states = {s.value for s in Enrollment}
        for state, value in legacy.data.items():
            if state not in states or not isinstance(value, dict) or not value.get("id"):
                continue
            record = GroupRecord(id=str(value["id"]), name=str(value.get("name") or ""), state=Enrollment(state),
                                 ownership=Ownership.OWNED if value.get("created") else Ownership.ADOPTED)
            # A record written since (by id) is newer than the old row and wins.
            if await self._entities.get(Table.SYNCSTATE, connection, _row_key(record.id)) is None:
                await self.put(connection, record)
        try:
            await self._entities.delete(Table.SYNCSTATE, connection, LEGACY_ROW, etag=legacy.etag)
        except Conflict:
            return  # another process moved it (or an older version rewrote it): read again next time
        log.info("enrollment-state groups of %s moved to one record per group", connection)
