"""Reading and writing the bridge directory (`users` table), and the views other features take of it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pydantic import ValidationError

from shared.domain.directory import UserRow
from shared.domain.rotation import RotationSubject
from shared.services.ports import Entity, EntityStore
from shared.topology import Table

log = logging.getLogger(__name__)


class Directory:
    """The `users` table of every connection."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        found = await self._entities.get(Table.USERS, connection, user_id)
        return self._parse(found) if found else None

    async def find(self, connection: str, user: str) -> UserRow | None:
        """One user by object id or UPN (case-insensitive)."""
        if "@" not in user:
            return await self.get(connection, user)
        wanted = user.lower()
        async for row in self.all(connection):
            if row.upn.lower() == wanted:
                return row
        return None

    async def all(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of a connection, in object-id order."""
        async for found in self._entities.query(Table.USERS, connection):
            row = self._parse(found)
            if row is not None:
                yield row

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        await self._entities.upsert(Table.USERS, Entity(connection, row.id, row.to_row()))

    @staticmethod
    def _parse(found: Entity) -> UserRow | None:
        try:
            return UserRow.model_validate({"id": found.row_key, **found.data})
        except ValidationError:
            log.warning("users row %s/%s is malformed; skipped", found.partition_key, found.row_key)
            return None


def rotation_subject(row: UserRow) -> RotationSubject:
    """What rotation needs of a directory row."""
    return RotationSubject(user_id=row.id, upn=row.upn, display_name=row.display_name, active=row.active,
                           in_rotation_group=row.in_rotation_group, on_premises_sync=row.on_premises_sync)


class RotationSubjects:
    """Implements shared.services.rotation.SubjectSource on the bridge directory."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    async def get(self, connection: str, user_id: str) -> RotationSubject | None:
        """One user as rotation sees it."""
        row = await self._directory.get(connection, user_id)
        return rotation_subject(row) if row else None

    async def all(self, connection: str) -> AsyncIterator[RotationSubject]:
        """Every user as rotation sees it."""
        async for row in self._directory.all(connection):
            yield rotation_subject(row)
