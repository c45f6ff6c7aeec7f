"""The bridge directory on Table storage: implements shared.services.ports.UserRepository.

Rows: table `users` or `users01`..`users15` (below), partition `{connection}.{shard:03d}` where the shard
is the CRC-32 of the user's object id modulo the partition count, row key = object id, properties =
shared.domain.directory.UserRow.

A Table storage partition serves about 2,000 entities per second
(https://learn.microsoft.com/azure/storage/tables/storage-performance-checklist#partitions), so a
100,000-user import in one partition would take 50 s of writes at best; spread over 256 it is bound by
the account's 20,000 entities/s instead. Azurite looks a row up by scanning its partition, so its cost
per write grows with the partition: 256 partitions of a 100,000-user connection write about four times
as fast there as 16 did. Connection names are slugs without dots, so one connection's partitions
(`{connection}.` up to `{connection}/`) never meet another's.

The partitions are spread over `tables` tables (shared.topology.USERS_TABLES: `users`, `users01`..
`users15`): partition `n` of every connection lives wholly in table `n % tables`, so a transaction's rows
are still in one table. On Azure a row's cost does not depend on the table's size or on the number of
tables (https://learn.microsoft.com/azure/storage/tables/storage-performance-checklist), so the spread
costs nothing there. Azurite keeps each table as one in-memory collection whose indices over every row of
the table shift on each insert and replace (docs/sync.md, Benchmark), so its cost per row written grows
with the table: over sixteen tables a million users' rows are written into tables of 62,500 (the
million-user 1,000-change run's transactions took 1.7 s instead of 5.5 s).

How many partitions a connection has is chosen once, when its first import finds the directory empty, from
Entra's count of the users in scope (`layout`): 256, doubled while that leaves more than PARTITION_ROWS users
a partition, up to MAX_PARTITIONS, and kept in the row `{connection}`/`layout` of table `users` (outside the
connection's partition range). A connection without that row (laid out before it existed) has 256. Azurite
finds a row by comparing every row of its partition, so a million users in 256 partitions cost it about
1 ms per lookup, four times what they cost in 1,024 (docs/sync.md, Benchmark); on Azure a partition's size
does not change a lookup, and fewer, bigger partitions mean fewer transactions.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Sequence

from pydantic import ValidationError

from shared.domain.directory import UserRow
from shared.errors import Conflict, Stop
from shared.services.ports import TRANSACTION_ROWS, BatchEntityStore, Entity, EntityStore
from shared.topology import USERS_TABLES, Table

log = logging.getLogger(__name__)

#: Partitions of one connection's users unless its layout says more (see the module's docstring).
PARTITIONS = 256
#: A bigger directory gets more partitions at its first import, up to MAX_PARTITIONS, so that each holds about
#: this many users at most.
PARTITION_ROWS = 1000
MAX_PARTITIONS = 1024
#: The row that keeps a connection's partition count: partition = the connection's name, this row key.
LAYOUT = "layout"
#: Tables the partitions are spread over (see the module's docstring), at most len(USERS_TABLES).
TABLES = len(USERS_TABLES)
#: Rows of the first pages of range queries, over all the tables; a connection that fits is read by one
#: range query per table.
RANGE_PAGE = 1000
#: Point reads in flight at once (a sync reads only the rows of the users that changed).
POINT_READ_CONCURRENCY = 32
#: Partitions read side by side by `scan`, which holds only those partitions' rows.
SCAN_CONCURRENCY = 4


class TableUsers:
    """The bridge directory of every connection, spread over `partitions` partitions per connection and
    the partitions over `tables` tables."""

    #: One entity-group transaction: rows of one partition.
    batch_rows = TRANSACTION_ROWS

    def __init__(self, entities: EntityStore, *, partitions: int = PARTITIONS, tables: int = TABLES) -> None:
        if not 0 < tables <= len(USERS_TABLES):
            raise ValueError(f"the directory spreads over 1 to {len(USERS_TABLES)} tables, not {tables}")
        if partitions <= 0:
            raise ValueError(f"the directory needs at least one partition, not {partitions}")
        self._entities = entities
        #: Partitions of a connection laid out without a `layout` row.
        self.partitions = partitions
        #: The tables in use; one partition number's rows, of every connection, are all in one of them.
        self.tables = USERS_TABLES[:min(tables, partitions)]
        #: Partition counts read from `layout` rows (a row, once written, never changes).
        self._layouts: dict[str, int] = {}

    async def lay_out(self, connection: str, expected_users: int | None) -> int:
        """The connection's partition count, stored if it was not: chosen for `expected_users` when the
        directory is empty, else the default its rows were written with."""
        stored = await self._stored_layout(connection)
        if stored is not None:
            return stored
        empty = await self.is_empty(connection)
        chosen = partitions_for(expected_users or 0, self.partitions) if empty else self.partitions
        try:
            await self._entities.insert(Table.USERS, Entity(connection, LAYOUT, {"partitions": chosen}))
        except Conflict:  # another run stored one first: that one holds
            return await self.layout(connection)
        log.info("users of %s laid out in %d partitions%s", connection, chosen,
                 f" for about {expected_users} users" if empty and expected_users else "")
        self._layouts[connection] = chosen
        return chosen

    async def layout(self, connection: str) -> int:
        """The connection's partition count: its `layout` row's, else the default. The default is not kept:
        until a sync stores one (`lay_out`), an empty directory may still be laid out otherwise."""
        stored = await self._stored_layout(connection)
        return self.partitions if stored is None else stored

    async def _stored_layout(self, connection: str) -> int | None:
        """The count of the connection's `layout` row (kept once read: a row, once written, never changes)."""
        if connection in self._layouts:
            return self._layouts[connection]
        found = await self._entities.get(Table.USERS, connection, LAYOUT)
        if found is None:
            return None
        count = found.data.get("partitions")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_PARTITIONS:
            raise Stop(f"row {Table.USERS.value}/{connection}/{LAYOUT} says partitions={count!r:.40}, not a count "
                       f"from 1 to {MAX_PARTITIONS}: it was changed outside the bridge. Write back the count the rows "
                       f"are laid out in (one more than the highest NNN of the partitions '{connection}.NNN')")
        self._layouts[connection] = count
        return count

    def partition_of(self, connection: str, user_id: str) -> str:
        """The partition of a user's row: the connection name and a shard from the object id's CRC-32, in the
        layout last read for the connection (`layout`, `lay_out`; the default before)."""
        return self._shard(connection, self._number(self._layouts.get(connection, self.partitions), user_id))

    def table_of(self, connection: str, user_id: str) -> Table:
        """The table that holds a user's row (and its whole partition), in the layout last read."""
        return self._table_of_number(self._number(self._layouts.get(connection, self.partitions), user_id))

    def _where(self, connection: str, partitions: int, user_id: str) -> tuple[Table, str]:
        """The table and partition of a user's row in a layout of `partitions`."""
        number = self._number(partitions, user_id)
        return self._table_of_number(number), self._shard(connection, number)

    @staticmethod
    def _number(partitions: int, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % partitions

    def _table_of_number(self, number: int) -> Table:
        return self.tables[number % len(self.tables)]

    @staticmethod
    def _shard(connection: str, number: int) -> str:
        return f"{connection}.{number:03d}"

    def _table_of_partition(self, partition: str) -> Table:
        return self._table_of_number(int(partition.rsplit(".", 1)[1]))

    def batch_key(self, connection: str, user_id: str) -> str:
        """Rows of one partition go in one transaction (in the layout `lay_out` or a read fixed first)."""
        return self.partition_of(connection, user_id)

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        return await self._get(connection, await self.layout(connection), user_id)

    async def _get(self, connection: str, partitions: int, user_id: str) -> UserRow | None:
        table, partition = self._where(connection, partitions, user_id)
        found = await self._entities.get(table, partition, user_id)
        return self._parse(found) if found else None

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        """Point reads side by side, POINT_READ_CONCURRENCY at a time, in the layout read once."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        semaphore = asyncio.Semaphore(POINT_READ_CONCURRENCY)
        partitions = await self.layout(connection)

        async def one(user_id: str) -> UserRow | None:
            async with semaphore:
                return await self._get(connection, partitions, user_id)

        rows = await asyncio.gather(*(one(u) for u in wanted))
        return {row.id: row for row in rows if row is not None}

    async def is_empty(self, connection: str) -> bool:
        """A query of one row over the connection's partitions in each table, until one has a row: the
        first table holds a share of every connection bigger than the partition count."""
        for table in self.tables:
            async for _ in self._entities.query_partitions(table, f"{connection}.", f"{connection}/", limit=1):
                return False
        return True

    async def count(self, connection: str) -> int:
        """Counted by a scan."""
        return sum([1 async for _ in self.scan(connection)])

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Table by table, then partition by partition. A connection that fits in a page is read by one
        range query per table (each of its share of RANGE_PAGE), side by side; the tables where it does
        not fit are read partition by partition, SCAN_CONCURRENCY at a time: Azure serves partitions in
        parallel, and Azurite scans its whole table for a range query but finds one partition through its
        index."""
        share = max(1, RANGE_PAGE // len(self.tables))

        async def first_page(table: Table) -> list[Entity]:
            return [found async for found in self._entities.query_partitions(
                table, f"{connection}.", f"{connection}/", limit=share)]

        partitions = await self.layout(connection)
        pages = await asyncio.gather(*(first_page(table) for table in self.tables))
        overflowing = {table for table, page in zip(self.tables, pages, strict=True) if len(page) >= share}
        for table, page in zip(self.tables, pages, strict=True):
            if table not in overflowing:
                for found in page:
                    if (row := self._parse(found)) is not None:
                        yield row
        del pages
        names = [self._shard(connection, n) for n in range(partitions)
                 if self._table_of_number(n) in overflowing]
        for start in range(0, len(names), SCAN_CONCURRENCY):
            for rows in await asyncio.gather(*(self._partition(p) for p in names[start:start + SCAN_CONCURRENCY])):
                for found in rows:
                    if (row := self._parse(found)) is not None:
                        yield row

    async def _partition(self, partition: str) -> list[Entity]:
        return [found async for found in self._entities.query(self._table_of_partition(partition), partition)]

    async def put(self, connection: str, row: UserRow) -> None:
        """Create or replace a user's row."""
        table, partition = self._where(connection, await self.layout(connection), row.id)
        await self._entities.upsert(table, Entity(partition, row.id, row.to_row()))

    async def put_many(self, connection: str, rows: Sequence[UserRow], *, new: Collection[str] | None = None) -> None:
        """In transactions of up to 100 rows of a partition when the store has them, else one by one. With `new`,
        known-new rows are inserted and the others updated (`If-Match: *`) instead of inserted-or-replaced: one
        entity operation each on Azure as well, and one lookup instead of two on Azurite (docs/sync.md)."""
        partitions = await self.layout(connection)
        by_table: dict[Table, list[Entity]] = {}
        for row in rows:
            table, partition = self._where(connection, partitions, row.id)
            by_table.setdefault(table, []).append(Entity(partition, row.id, row.to_row()))
        for table, entities in by_table.items():
            if isinstance(self._entities, BatchEntityStore):
                exists = None if new is None else {e.row_key: e.row_key not in new for e in entities}
                await self._entities.upsert_many(table, entities, exists=exists)
                continue
            for entity in entities:
                await self._entities.upsert(table, entity)

    async def delete(self, connection: str, user_id: str) -> None:
        """Delete a user's row."""
        table, partition = self._where(connection, await self.layout(connection), user_id)
        await self._entities.delete(table, partition, user_id)


    @staticmethod
    def _parse(found: Entity) -> UserRow | None:
        try:
            return UserRow.model_validate({"id": found.row_key, **found.data})
        except ValidationError:
            log.warning("users row %s/%s is malformed; skipped", found.partition_key, found.row_key)
            return None


def partitions_for(expected_users: int, least: int = PARTITIONS) -> int:
    """The partition count of a directory laid out for about `expected_users` users: `least`, doubled while a
    partition would hold more than PARTITION_ROWS users, up to MAX_PARTITIONS."""
    count = least
    while count < MAX_PARTITIONS and expected_users > count * PARTITION_ROWS:
        count *= 2
    return count
