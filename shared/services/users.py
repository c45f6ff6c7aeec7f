"""Imported users as operators read them: a filtered page of the directory, or one user with its
rotation status (never a password). GET connections/{c}/users[/{id}] and `shared.cli users` answer
from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.config import Connection
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.errors import NotFound
from shared.services.directory import Directory
from shared.services.ports import JsonObject
from shared.services.rotation import RotationService

PAGE_DEFAULT = 100
PAGE_MAX = 500


@dataclass(frozen=True)
class UserFilter:
    """Which users a listing shows; None (or an empty prefix) does not filter."""

    state: UserState | None = None
    enrollment: Enrollment | None = None
    in_rotation_group: bool | None = None
    prefix: str = ""

    def matches(self, row: UserRow) -> bool:
        """Whether `row` passes every filter given."""
        return ((self.state is None or row.state is self.state)
                and (self.enrollment is None or row.enrollment is self.enrollment)
                and (self.in_rotation_group is None or row.in_rotation_group == self.in_rotation_group)
                and row.upn.lower().startswith(self.prefix.lower()))


def user_view(row: UserRow) -> JsonObject:
    """A user as the API and the command line show it: its row with its id."""
    view: dict[str, Any] = row.to_row()
    view["id"] = row.id
    return view


class UserQueries:
    """Reads of the imported users."""

    def __init__(self, directory: Directory, rotation: Callable[[], RotationService]) -> None:
        self._directory = directory
        self._rotation = rotation

    async def page(self, connection: str, flt: UserFilter, *, top: int | None = None, skip: int | None = None,
                   most: int = PAGE_MAX) -> JsonObject:
        """`value` (at most `top`, capped at `most`, after `skip`), `count` of all matches, and `nextSkip`
        while more follow."""
        first = skip or 0
        size = min(top or PAGE_DEFAULT, most)
        matched = [row async for row in self._directory.all(connection) if flt.matches(row)]
        body: dict[str, Any] = {"value": [user_view(r) for r in matched[first:first + size]], "count": len(matched)}
        if first + size < len(matched):
            body["nextSkip"] = first + size
        return body

    async def user(self, conn: Connection, user: str, *, rotation: bool = True) -> JsonObject:
        """One user by id or user principal name, with its rotation status when `rotation`."""
        row = await self._directory.find(conn.name, user)
        if row is None:
            raise NotFound(f"user {user!r} is not imported in connection {conn.name!r}")
        view = user_view(row)
        if rotation:
            status, _ = await self._rotation().status_row(conn.name, row.id)
            view["rotation"] = status.model_dump(mode="json", exclude_none=True, exclude={"lease_owner", "lease_until"})
        return view
