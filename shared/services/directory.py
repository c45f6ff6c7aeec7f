"""The bridge directory as the features see it: users by id or UPN, and the view rotation takes of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence

from shared.domain.directory import UserRow
from shared.domain.rotation import RotationSubject
from shared.services.ports import UserRepository


class Directory:
    """Every connection's users (a UserRepository), with the look-ups features make of them."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users
        self.batch_rows = users.batch_rows

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        return await self._users.get(connection, user_id)

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        """Some users by object id (absent ones left out)."""
        return await self._users.get_many(connection, user_ids)

    async def is_empty(self, connection: str) -> bool:
        """Whether the connection has no user."""
        return await self._users.is_empty(connection)

    async def lay_out(self, connection: str, expected_users: int | None) -> int:
        """Fix how the connection's rows are spread (UserRepository.lay_out), before a sync writes."""
        return await self._users.lay_out(connection, expected_users)

    async def count(self, connection: str) -> int:
        """How many users the connection has."""
        return await self._users.count(connection)

    def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of the connection, holding only a part of them at a time."""
        return self._users.scan(connection)

    def all(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of a connection, once, in a stable order."""
        return self._users.scan(connection)

    async def find(self, connection: str, user: str) -> UserRow | None:
        """One user by object id or UPN (case-insensitive)."""
        if "@" not in user:
            return await self.get(connection, user)
        wanted = user.lower()
        async for row in self.all(connection):
            if row.upn.lower() == wanted:
                return row
        return None

    def batch_key(self, connection: str, user_id: str) -> str:
        """Which write group a user's row belongs to."""
        return self._users.batch_key(connection, user_id)

    def batches(self, connection: str, rows: Iterable[UserRow]) -> list[list[UserRow]]:
        """`rows` in groups that `put_many` writes all or nothing."""
        groups: dict[str, list[UserRow]] = {}
        for row in rows:
            groups.setdefault(self._users.batch_key(connection, row.id), []).append(row)
        size = self._users.batch_rows
        return [group[start:start + size] for group in groups.values() for start in range(0, len(group), size)]

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        await self._users.put(connection, row)

    async def put_many(self, connection: str, rows: Sequence[UserRow], *, new: Collection[str] | None = None) -> None:
        """Create or replace many rows; give it one of `batches` to make it all or nothing. `new`: the ids known
        not to be stored yet, every other row being known to be stored (UserRepository.put_many)."""
        await self._users.put_many(connection, rows, new=new)

    async def delete(self, connection: str, user_id: str) -> None:
        """Forget a user."""
        await self._users.delete(connection, user_id)


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
