"""Which enrollment-state groups a connection uses, owned or adopted, in Table storage.

Implements shared.services.ports.GroupRecords. Rows: `syncstate` table, partition = connection, row
`enrollmentGroup.{object id}`, one per group, written as soon as the group is created or adopted.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from shared.domain.enrollment import GroupRecord
from shared.services.ports import Entity, EntityStore
from shared.topology import Table

log = logging.getLogger(__name__)

PREFIX = "enrollmentGroup."


def _row_key(group_id: str) -> str:
    return PREFIX + group_id


class TableGroupRecords:
    """Group records of every connection on the `syncstate` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def records(self, connection: str) -> list[GroupRecord]:
        """Every recorded group of the connection (a malformed row is logged and skipped)."""
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
