"""The SCIM service's resources, links and pending changes in Table storage (implements ScimRepository).

Table `scim`, partitions per connection:
- `{c}|Users`, `{c}|Groups`: one row per resource (row key = its id), the attributes as JSON in
  `resource` (a string property holds 64 KiB: docs/export.md, Limits), `version`, `created`, `modified`;
  the row's ETag guards each replace.
- `{c}|userName`: one row per userName (row key = SHA-256 of the lower-cased name, since a name may hold
  characters a key may not), so two users never share one; inserted before the resource, dropped after it.
- `{c}|links`: row `{kind}.{scim id}`: the Entra object id, whether the bridge created it, problems.
- `{c}|changes`: received changes not yet applied, keyed by time so they read oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.export import Link
from shared.domain.scim import Kind, Stored
from shared.errors import Conflict
from shared.services.ports import Entity, EntityStore, ExportChange
from shared.topology import Table


class _ResourceRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resource: str
    version: int
    created: str
    modified: str


class _LinkRow(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    entra_id: Annotated[str | None, Field(alias="entraId")] = None
    created: bool = False
    problems: str = "[]"
    applied_version: Annotated[int, Field(alias="appliedVersion")] = 0


class _ChangeRow(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    kind: Kind
    scim_id: Annotated[str, Field(alias="scimId")]
    operation: str
    request_id: Annotated[str, Field(alias="requestId")]
    received: str


def _name_key(unique: str) -> str:
    return hashlib.sha256(unique.encode()).hexdigest()


class TableScimRepository:
    """ScimRepository on the `scim` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities
        self._etags: dict[tuple[str, str, str], str | None] = {}

    async def get(self, connection: str, kind: Kind, resource_id: str) -> Stored | None:
        """One resource, or None."""
        row = await self._entities.get(Table.SCIM, f"{connection}|{kind}", resource_id)
        if row is None:
            return None
        self._etags[(connection, kind, resource_id)] = row.etag
        return self._stored(kind, row)

    async def all(self, connection: str, kind: Kind) -> AsyncIterator[Stored]:
        """Every resource of a kind."""
        async for row in self._entities.query(Table.SCIM, f"{connection}|{kind}"):
            yield self._stored(kind, row)

    @staticmethod
    def _stored(kind: Kind, row: Entity) -> Stored:
        data = _ResourceRow.model_validate(row.data)
        return Stored(kind, row.row_key, json.loads(data.resource), data.version, data.created, data.modified)

    @staticmethod
    def _row(connection: str, stored: Stored, etag: str | None = None) -> Entity:
        data = _ResourceRow(resource=json.dumps(stored.attributes, separators=(",", ":")), version=stored.version,
                            created=stored.created, modified=stored.modified)
        return Entity(f"{connection}|{stored.kind}", stored.id, data.model_dump(), etag)

    async def _claim(self, connection: str, unique: str, resource_id: str) -> None:
        if unique:
            await self._entities.insert(Table.SCIM, Entity(f"{connection}|userName", _name_key(unique),
                                                           {"id": resource_id}))

    async def _release(self, connection: str, unique: str) -> None:
        if unique:
            await self._entities.delete(Table.SCIM, f"{connection}|userName", _name_key(unique))

    async def create(self, connection: str, stored: Stored, unique: str) -> None:
        """Claim the unique name, then insert the resource (the claim is released if that fails)."""
        await self._claim(connection, unique, stored.id)
        try:
            await self._entities.insert(Table.SCIM, self._row(connection, stored))
        except Exception:
            await self._release(connection, unique)
            raise

    async def replace(self, connection: str, stored: Stored, *, old_unique: str, unique: str) -> None:
        """Replace under the ETag read by `get`; a new unique name is claimed first, the old one released after."""
        if unique != old_unique:
            await self._claim(connection, unique, stored.id)
        etag = self._etags.get((connection, stored.kind, stored.id))
        try:
            if etag is None:
                current = await self._entities.get(Table.SCIM, f"{connection}|{stored.kind}", stored.id)
                if current is None or _ResourceRow.model_validate(current.data).version != stored.version - 1:
                    raise Conflict(f"{stored.kind} {stored.id} changed meanwhile")
                etag = current.etag
            written = await self._entities.update(Table.SCIM, self._row(connection, stored, etag))
            self._etags[(connection, stored.kind, stored.id)] = written.etag
        except Exception:
            if unique != old_unique:
                await self._release(connection, unique)
            raise
        if unique != old_unique:
            await self._release(connection, old_unique)

    async def delete(self, connection: str, kind: Kind, resource_id: str, unique: str) -> None:
        """Delete the resource, then release its name."""
        await self._entities.delete(Table.SCIM, f"{connection}|{kind}", resource_id)
        self._etags.pop((connection, kind, resource_id), None)
        await self._release(connection, unique)

    async def link(self, connection: str, kind: Kind, scim_id: str) -> Link | None:
        """The resource's link, or None."""
        row = await self._entities.get(Table.SCIM, f"{connection}|links", f"{kind}.{scim_id}")
        return None if row is None else self._link(row)

    @staticmethod
    def _link(row: Entity) -> Link:
        kind, _, scim_id = row.row_key.partition(".")
        data = _LinkRow.model_validate(row.data)
        return Link("Groups" if kind == "Groups" else "Users", scim_id, data.entra_id, data.created,
                    tuple(json.loads(data.problems)), data.applied_version)

    async def put_link(self, connection: str, link: Link) -> None:
        """Keep a link."""
        data = _LinkRow(entra_id=link.entra_id, created=link.created, problems=json.dumps(list(link.problems)),
                        applied_version=link.applied_version)
        await self._entities.upsert(Table.SCIM, Entity(f"{connection}|links", f"{link.kind}.{link.scim_id}",
                                                       data.model_dump(by_alias=True)))

    async def links(self, connection: str) -> list[Link]:
        """Every link of the connection."""
        return [self._link(row) async for row in self._entities.query(Table.SCIM, f"{connection}|links")]

    async def add_change(self, connection: str, change: ExportChange) -> None:
        """Keep a received change."""
        data = _ChangeRow(kind=change.kind, scim_id=change.scim_id, operation=change.operation,
                          request_id=change.request_id, received=change.received)
        await self._entities.upsert(Table.SCIM, Entity(f"{connection}|changes", change.id,
                                                       data.model_dump(by_alias=True)))

    async def changes(self, connection: str) -> list[ExportChange]:
        """Pending changes, oldest first."""
        found = []
        async for row in self._entities.query(Table.SCIM, f"{connection}|changes"):
            data = _ChangeRow.model_validate(row.data)
            found.append(ExportChange(row.row_key, data.kind, data.scim_id, data.operation, data.request_id,
                                      data.received))
        return found

    async def drop_change(self, connection: str, change_id: str) -> None:
        """Forget an applied change."""
        with contextlib.suppress(Conflict):
            await self._entities.delete(Table.SCIM, f"{connection}|changes", change_id)
