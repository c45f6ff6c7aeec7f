"""The bridge directory (`users` table), the views other features take of it, and the enrollment-state groups."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Sequence

from pydantic import ValidationError

from shared.domain.directory import UserRow
from shared.domain.rotation import RotationSubject
from shared.services.ports import (
    TRANSACTION_ROWS,
    BatchEntityStore,
    Entity,
    EntityStore,
)
from shared.topology import Table

log = logging.getLogger(__name__)


#: Partitions of one connection's users. A Table storage partition serves about 2,000 entities per
#: second (https://learn.microsoft.com/azure/storage/tables/storage-performance-checklist#partitions),
#: so a 100,000-user import in one partition would take 50 s of writes at best; spread over 256 it is
#: bound by the account's 20,000 entities/s instead. Azurite looks a row up by scanning its partition,
#: so its cost per write grows with the partition: 256 partitions of a 100,000-user connection write
#: about four times as fast there as 16 did.
SHARDS = 256
#: Partitions read (and old rows deleted) side by side.
READ_CONCURRENCY = 16
#: Rows of the first page of a range query; a connection that fits is read by that one query.
RANGE_PAGE = 1000
#: Point reads in flight at once (a sync reads only the rows of the users that changed).
POINT_READ_CONCURRENCY = 32
#: Partitions read side by side by `scan`, which holds only those partitions' rows.
SCAN_CONCURRENCY = 4
#: The layout before this one: 16 partitions named with two digits.
_OLD_SHARDS = 16


def partition_of(connection: str, user_id: str) -> str:
    """The partition of a user's row: the connection name and a shard from the object id's CRC-32.

    Connection names are slugs without dots, so one connection's partitions never meet another's.
    """
    return _shard(connection, zlib.crc32(user_id.encode()) % SHARDS)


def _shard(connection: str, number: int) -> str:
    return f"{connection}.{number:03d}"


def _earlier_partitions(connection: str, user_id: str | None = None) -> list[str]:
    """Where earlier layouts kept users (of one user, when given): first one partition per connection,
    then 16 shards named with two digits. Their rows are still read until a sync moves them."""
    if user_id is not None:
        return [connection, f"{connection}.{zlib.crc32(user_id.encode()) % _OLD_SHARDS:02d}"]
    return [connection, *(f"{connection}.{n:02d}" for n in range(_OLD_SHARDS))]


class Directory:
    """The `users` table of every connection, spread over SHARDS partitions per connection."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        found = await self._entities.get(Table.USERS, partition_of(connection, user_id), user_id)
        if found is None:
            # A row of an earlier layout, not yet moved by a sync.
            earlier = await asyncio.gather(*(self._entities.get(Table.USERS, partition, user_id)
                                             for partition in _earlier_partitions(connection, user_id)))
            found = next((row for row in earlier if row is not None), None)
        return self._parse(found) if found else None

    async def get_many(self, connection: str, user_ids: Iterable[str], *, earlier: bool = False) -> dict[str, UserRow]:
        """The rows of some users by object id (absent ones left out), by point reads side by side.

        Only the current layout is read unless `earlier` (rows of an earlier layout not yet moved).
        """
        semaphore = asyncio.Semaphore(POINT_READ_CONCURRENCY)

        async def one(user_id: str) -> UserRow | None:
            async with semaphore:
                if earlier:
                    return await self.get(connection, user_id)
                found = await self._entities.get(Table.USERS, partition_of(connection, user_id), user_id)
                return self._parse(found) if found else None

        rows = await asyncio.gather(*(one(u) for u in dict.fromkeys(user_ids)))
        return {row.id: row for row in rows if row is not None}

    async def is_empty(self, connection: str) -> bool:
        """Whether the connection has no row in its partitions (one query of one row)."""
        async for _ in self._entities.query_partitions(Table.USERS, f"{connection}.", f"{connection}/", limit=1):
            return False
        return True

    async def has_earlier_rows(self, connection: str) -> bool:
        """Whether rows of an earlier layout wait to be moved (17 small queries)."""
        for partition in _earlier_partitions(connection):
            async for _ in self._entities.query(Table.USERS, partition, limit=1):
                return True
        return False

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Every row of the connection's current partitions, holding only the partitions being read
        (SCAN_CONCURRENCY of SHARDS), not the directory: what a full run sweeps for removals."""
        first = [found async for found in self._entities.query_partitions(
            Table.USERS, f"{connection}.", f"{connection}/", limit=RANGE_PAGE)]
        if len(first) < RANGE_PAGE:
            partitions: list[str] = []
        else:
            first, partitions = [], [_shard(connection, n) for n in range(SHARDS)]
        for found in first:
            if (row := self._parse(found)) is not None:
                yield row
        for start in range(0, len(partitions), SCAN_CONCURRENCY):
            for rows in await asyncio.gather(*(self._partition(p) for p in
                                               partitions[start:start + SCAN_CONCURRENCY])):
                for found in rows:
                    if (row := self._parse(found)) is not None:
                        yield row

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
        """Every user of a connection, once, in a stable order.

        A row of an earlier layout comes last, and only if it was not moved yet.
        """
        unsharded = [row async for row in self._rows(connection)]
        seen: set[str] = set()
        earlier: list[UserRow] = []
        async for found in self._sharded(connection):
            row = self._parse(found)
            if row is None:
                continue
            if found.partition_key != partition_of(connection, row.id):
                earlier.append(row)
                continue
            seen.add(row.id)
            yield row
        for row in [*earlier, *unsharded]:
            if row.id not in seen:
                seen.add(row.id)
                yield row

    async def _sharded(self, connection: str) -> AsyncIterator[Entity]:
        """The rows of the connection's partitions, `{connection}.*` (names are slugs without dots).

        A connection that fits in one page is read by one range query. A bigger one is read partition
        by partition, READ_CONCURRENCY at a time: Azure serves partitions in parallel, and Azurite
        scans its whole table for a range query but finds one partition through its index.
        """
        first = [found async for found in self._entities.query_partitions(
            Table.USERS, f"{connection}.", f"{connection}/", limit=RANGE_PAGE)]
        if len(first) < RANGE_PAGE:
            for found in first:
                yield found
            return
        partitions = [_shard(connection, n) for n in range(SHARDS)] + _earlier_partitions(connection)[1:]
        for start in range(0, len(partitions), READ_CONCURRENCY):
            for rows in await asyncio.gather(*(self._partition(p) for p in
                                               partitions[start:start + READ_CONCURRENCY])):
                for found in rows:
                    yield found

    async def _partition(self, partition: str) -> list[Entity]:
        return [found async for found in self._entities.query(Table.USERS, partition)]

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        await self._entities.upsert(Table.USERS, Entity(partition_of(connection, row.id), row.id, row.to_row()))

    @staticmethod
    def batches(connection: str, rows: Iterable[UserRow]) -> list[list[UserRow]]:
        """`rows` in groups of one partition and at most TRANSACTION_ROWS rows: one storage transaction each."""
        by_partition: dict[str, list[UserRow]] = {}
        for row in rows:
            by_partition.setdefault(partition_of(connection, row.id), []).append(row)
        return [group[start:start + TRANSACTION_ROWS] for group in by_partition.values()
                for start in range(0, len(group), TRANSACTION_ROWS)]

    async def put_many(self, connection: str, rows: Sequence[UserRow], *, new: Collection[str] | None = None) -> None:
        """Create or replace many rows: in transactions of up to 100 rows of a partition when the store has
        them, else one by one. Give it one of `batches` to make it a single transaction.

        With `new` (the ids of the rows known not to be stored yet), the others are known to be stored:
        each row is then inserted or replaced as such, not looked up by the store first (Azurite scans the
        row's partition for every lookup). A row that turns out otherwise fails its transaction.
        A failure raises; rows of earlier transactions stay written.
        """
        entities = [Entity(partition_of(connection, row.id), row.id, row.to_row()) for row in rows]
        if isinstance(self._entities, BatchEntityStore):
            exists = None if new is None else {row.id: row.id not in new for row in rows}
            await self._entities.upsert_many(Table.USERS, entities, exists=exists)
            return
        for entity in entities:
            await self._entities.upsert(Table.USERS, entity)

    async def move_earlier_rows(self, connection: str) -> int:
        """Move rows of earlier layouts to their partitions; returns how many were moved.

        A row already in its partition (moved before a failed delete) keeps that version. Each row is
        written in its place before its old copy is deleted.
        """
        partitions = _earlier_partitions(connection)
        earlier = [found for rows in await asyncio.gather(*(self._partition(p) for p in partitions))
                   for found in rows]
        if not earlier:
            return 0
        placed = await self._placed(connection)
        moving = [row for found in earlier if (row := self._parse(found)) is not None and row.id not in placed]
        for batch in self.batches(connection, moving):
            await self.put_many(connection, batch)
        for start in range(0, len(earlier), READ_CONCURRENCY):
            await asyncio.gather(*(self._entities.delete(Table.USERS, found.partition_key, found.row_key)
                                   for found in earlier[start:start + READ_CONCURRENCY]))
        log.info("moved %d users of connection %s to their partitions", len(earlier), connection)
        return len(earlier)

    async def _placed(self, connection: str) -> set[str]:
        """Object ids of the rows already in their partitions."""
        return {found.row_key async for found in self._sharded(connection)
                if found.partition_key == partition_of(connection, found.row_key)}

    async def _rows(self, partition: str) -> AsyncIterator[UserRow]:
        async for found in self._entities.query(Table.USERS, partition):
            row = self._parse(found)
            if row is not None:
                yield row

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
