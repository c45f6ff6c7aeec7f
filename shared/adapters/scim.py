"""The SCIM service's resources, links and pending changes in Table storage (implements ScimRepository).

Table `scim`, partitions per connection:
- `{c}|Users`, `{c}|Groups`: one row per resource (row key = its id), the attributes as JSON in
  `resource` (a string property holds 64 KiB: docs/export.md, Limits), `version`, `created`, `modified`;
  the row's ETag guards each replace. A group's members are not in `resource`: `memberRows` lists the keys of
  its member rows, in order.
- `{c}|members`: a group's members in rows of at most MEMBERS_PER_ROW (and MEMBER_ROW_CHARS of JSON), row key
  `{group id}.{digest of the row's members}`. A write puts the rows it needs (rows equal to ones kept are the
  same row), then replaces the group row under its ETag, then deletes the rows only the old version listed: a
  reader sees the old members or the new ones, never a mix, and a 50,000-member PATCH writes the rows that
  changed. A write that loses the ETag race leaves its new rows unlisted (never read).
- `{c}|userName`: one row per userName (row key = SHA-256 of the lower-cased name, since a name may hold
  characters a key may not), so two users never share one; inserted before the resource, dropped after it.
- `{c}|links`: row `{kind}.{scim id}`: the Entra object id, whether the bridge created it, problems.
- `{c}|changes`: received changes not yet applied, keyed by time so they read oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.export import Link
from shared.domain.scim import Kind, Stored
from shared.errors import Conflict
from shared.services.ports import BatchEntityStore, Entity, EntityStore, ExportChange
from shared.topology import Table

#: Members per member row, and the most JSON characters one holds (a string property takes 64 KiB of UTF-16).
MEMBERS_PER_ROW = 200
MEMBER_ROW_CHARS = 30_000
#: Reads of a group retried when a writer deleted the member rows it listed meanwhile.
READ_ATTEMPTS = 5


class _ResourceRow(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    resource: str
    version: int
    created: str
    modified: str
    #: JSON list of a group's member row keys (absent: members, if any, are in `resource`).
    member_rows: Annotated[str | None, Field(alias="memberRows")] = None


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


def member_chunks(members: Sequence[Any]) -> list[str]:
    """The members as JSON texts of at most MEMBERS_PER_ROW members and MEMBER_ROW_CHARS characters each."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for member in members:
        text = json.dumps(member, separators=(",", ":"))
        if current and (len(current) >= MEMBERS_PER_ROW or size + len(text) + 1 > MEMBER_ROW_CHARS):
            chunks.append("[" + ",".join(current) + "]")
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        chunks.append("[" + ",".join(current) + "]")
    return chunks


class TableScimRepository:
    """ScimRepository on the `scim` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities
        self._etags: dict[tuple[str, str, str], str | None] = {}

    async def get(self, connection: str, kind: Kind, resource_id: str) -> Stored | None:
        """One resource, or None."""
        for _ in range(READ_ATTEMPTS):
            row = await self._entities.get(Table.SCIM, f"{connection}|{kind}", resource_id)
            if row is None:
                return None
            stored = await self._stored(connection, kind, row)
            if stored is not None:
                self._etags[(connection, kind, resource_id)] = row.etag
                return stored
        raise Conflict(f"{kind} {resource_id} is being rewritten; try again")

    async def all(self, connection: str, kind: Kind) -> AsyncIterator[Stored]:
        """Every resource of a kind."""
        async for row in self._entities.query(Table.SCIM, f"{connection}|{kind}"):
            stored = await self._stored(connection, kind, row)
            if stored is None:
                stored = await self.get(connection, kind, row.row_key)
            if stored is not None:
                yield stored

    async def _stored(self, connection: str, kind: Kind, row: Entity) -> Stored | None:
        """The resource of a row with its members (None: a member row it lists is gone, rewritten meanwhile)."""
        data = _ResourceRow.model_validate(row.data)
        attributes = json.loads(data.resource)
        if data.member_rows is not None:
            keys: list[str] = json.loads(data.member_rows)
            if keys:
                found = {r.row_key: r async for r in self._entities.query(
                    Table.SCIM, f"{connection}|members", row_key_from=f"{row.row_key}.",
                    row_key_to=f"{row.row_key}/")}
                if any(k not in found for k in keys):
                    return None
                attributes["members"] = [m for k in keys for m in json.loads(str(found[k].data["members"]))]
        return Stored(kind, row.row_key, attributes, data.version, data.created, data.modified)

    async def _put_members(self, connection: str, stored: Stored) -> tuple[dict[str, Any], list[str] | None]:
        """Write a group's member rows; the attributes without members and the row keys (None: not a group)."""
        if stored.kind != "Groups":
            return stored.attributes, None
        attributes = {k: v for k, v in stored.attributes.items() if k != "members"}
        chunks = member_chunks(stored.attributes.get("members") or [])
        keys = [f"{stored.id}.{hashlib.sha256(c.encode()).hexdigest()[:32]}" for c in chunks]
        rows = [Entity(f"{connection}|members", k, {"members": c}) for k, c in zip(keys, chunks, strict=True)]
        if isinstance(self._entities, BatchEntityStore):
            await self._entities.upsert_many(Table.SCIM, rows)
        else:
            for row in rows:
                await self._entities.upsert(Table.SCIM, row)
        return attributes, keys

    async def _drop_members(self, connection: str, old: list[str], kept: list[str] | None) -> None:
        """Delete the member rows only the old version listed."""
        for key in sorted(set(old) - set(kept or [])):
            await self._entities.delete(Table.SCIM, f"{connection}|members", key)

    async def _listed(self, connection: str, kind: Kind, resource_id: str) -> list[str]:
        """The member row keys the stored group row lists now."""
        if kind != "Groups":
            return []
        row = await self._entities.get(Table.SCIM, f"{connection}|{kind}", resource_id)
        if row is None:
            return []
        listed = _ResourceRow.model_validate(row.data).member_rows
        return list(json.loads(listed)) if listed else []

    @staticmethod
    def _row(connection: str, stored: Stored, attributes: dict[str, Any], member_rows: list[str] | None,
             etag: str | None = None) -> Entity:
        data = _ResourceRow(resource=json.dumps(attributes, separators=(",", ":")), version=stored.version,
                            created=stored.created, modified=stored.modified,
                            member_rows=None if member_rows is None else json.dumps(member_rows))
        return Entity(f"{connection}|{stored.kind}", stored.id, data.model_dump(by_alias=True, exclude_none=True),
                      etag)

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
            attributes, member_rows = await self._put_members(connection, stored)
            await self._entities.insert(Table.SCIM, self._row(connection, stored, attributes, member_rows))
        except Exception:
            await self._release(connection, unique)
            raise

    async def replace(self, connection: str, stored: Stored, *, old_unique: str, unique: str) -> None:
        """Replace under the ETag read by `get`; a new unique name is claimed first, the old one released after."""
        if unique != old_unique:
            await self._claim(connection, unique, stored.id)
        etag = self._etags.get((connection, stored.kind, stored.id))
        try:
            old_rows: list[str] = []
            if etag is None or stored.kind == "Groups":
                # A group's replace needs the member rows its current version lists, to drop those it no longer does.
                current = await self._entities.get(Table.SCIM, f"{connection}|{stored.kind}", stored.id)
                if current is None or _ResourceRow.model_validate(current.data).version != stored.version - 1:
                    raise Conflict(f"{stored.kind} {stored.id} changed meanwhile")
                etag = etag or current.etag
                listed = _ResourceRow.model_validate(current.data).member_rows
                old_rows = json.loads(listed) if listed else []
            attributes, member_rows = await self._put_members(connection, stored)
            written = await self._entities.update(Table.SCIM, self._row(connection, stored, attributes, member_rows,
                                                                        etag))
            self._etags[(connection, stored.kind, stored.id)] = written.etag
        except Exception:
            if unique != old_unique:
                await self._release(connection, unique)
            raise
        await self._drop_members(connection, old_rows, member_rows)
        if unique != old_unique:
            await self._release(connection, old_unique)

    async def delete(self, connection: str, kind: Kind, resource_id: str, unique: str) -> None:
        """Delete the resource and its member rows, then release its name."""
        old_rows = await self._listed(connection, kind, resource_id)
        await self._entities.delete(Table.SCIM, f"{connection}|{kind}", resource_id)
        self._etags.pop((connection, kind, resource_id), None)
        await self._drop_members(connection, old_rows, None)
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
