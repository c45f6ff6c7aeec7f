"""The bridge directory as the features see it: users by id or UPN, and the view rotation takes of it.

The directory keeps how many users are in each state (`counts`, one read for status) as it writes them:
each write knows the state it replaces from the rows this process read or wrote lately (a sync reads the
rows it plans before writing them), else from the last complete scan (a full sync's first scan, or
having found the connection empty), else by reading those rows; a user whose state changes moves from
one count to the other. A process stopped between writing rows and their counts leaves the counts
behind; every complete scan during which this directory wrote nothing (a full sync's sweep, rotation's
scan) counts the rows again and keeps what it counted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from array import array
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

from shared.domain.directory import UserRow, UserState
from shared.domain.rotation import RotationSubject
from shared.errors import BridgeError, Conflict
from shared.services.ports import UserRepository, Versioned

log = logging.getLogger(__name__)

#: The count of every user of a connection, beside one per state.
TOTAL = "total"
#: Row states remembered per connection, oldest forgotten first (a forgotten one is read again when written).
SEEN_STATES = 50_000
_STATES = list(UserState)
_AMBIGUOUS = 255


def _key(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")


class StateSnapshot:
    """Each row's id (a 64-bit digest) and state as one complete scan saw them: 9 bytes a row, sorted once."""

    def __init__(self) -> None:
        self._keys = array("Q")
        self._states = bytearray()
        self._sorted = True

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, user_id: str, state: UserState) -> None:
        """Remember one row."""
        self._keys.append(_key(user_id))
        self._states.append(_STATES.index(state))
        self._sorted = False

    def get(self, user_id: str) -> tuple[bool, UserState | None]:
        """Whether the scan tells, and the row's state then (None: no row)."""
        if not self._sorted:
            order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
            self._keys = array("Q", (self._keys[i] for i in order))
            self._states = bytearray(self._states[i] for i in order)
            for at in range(1, len(self._keys)):
                if self._keys[at] == self._keys[at - 1]:  # two ids, one digest: read them
                    self._states[at] = self._states[at - 1] = _AMBIGUOUS
            self._sorted = True
        key = _key(user_id)
        at = bisect_left(self._keys, key)
        if at == len(self._keys) or self._keys[at] != key:
            return True, None
        code = self._states[at]
        return (False, None) if code == _AMBIGUOUS else (True, _STATES[code])
#: Tries of one counts update against other writers of the same counts.
COUNT_TRIES = 20


class Directory:
    """Every connection's users (a UserRepository), with the look-ups features make of them."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users
        self.batch_rows = users.batch_rows
        #: Per connection, the state of rows read or written lately (None: no such row), newest last.
        self._seen: dict[str, OrderedDict[str, UserState | None]] = {}
        #: Per connection, the rows of the last complete scan with no write in between (or none: found empty).
        self._snapshots: dict[str, StateSnapshot] = {}
        #: Writes begun per connection, so a scan knows whether one came in between; and those under way.
        self._writes: Counter[str] = Counter()
        self._active: Counter[str] = Counter()
        #: Count changes not kept yet, per connection; one writer at a time keeps them all.
        self._pending: dict[str, Counter[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: The counts this directory kept last, per connection: written back at their version without a read
        #: (read again when another writer kept others meanwhile).
        self._kept: dict[str, Versioned[dict[str, int]]] = {}

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        """One user by object id, or None."""
        row = await self._users.get(connection, user_id)
        self._remember(connection, user_id, row.state if row else None)
        return row

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        """Some users by object id (absent ones left out)."""
        wanted = list(user_ids)
        rows = await self._users.get_many(connection, wanted)
        for user_id in wanted:
            self._remember(connection, user_id, rows[user_id].state if user_id in rows else None)
        return rows

    async def is_empty(self, connection: str) -> bool:
        """Whether the connection has no user."""
        writes = self._writes[connection]
        empty = await self._users.is_empty(connection)
        if empty and not self._active[connection] and self._writes[connection] == writes:
            self._snapshots[connection] = StateSnapshot()
            self._seen.pop(connection, None)
        elif not empty and not len(self._snapshots.get(connection, ())):
            self._snapshots.pop(connection, None)  # no longer empty: rows were written since
        return empty

    async def count(self, connection: str) -> int:
        """How many users the connection has."""
        return await self._users.count(connection)

    async def counts(self, connection: str) -> dict[str, int] | None:
        """The kept number of users per state and in all (`total`), one read; None when never counted."""
        kept = await self._users.state_counts(connection)
        return None if kept is None else dict(kept.value)

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of the connection, holding only a part of them at a time. A scan that ends, with no
        write of this directory in between, keeps the counts it saw."""
        writes = self._writes[connection]
        busy = self._active[connection] > 0  # a write under way may land before or after the scan passes it
        kept = await self._users.state_counts(connection)
        tally: Counter[str] = Counter()
        snapshot = StateSnapshot()
        async for row in self._users.scan(connection):
            tally[TOTAL] += 1
            tally[row.state.value] += 1
            snapshot.add(row.id, row.state)
            yield row
        if not busy and self._writes[connection] == writes:
            self._snapshots[connection] = snapshot
            self._seen.pop(connection, None)  # older than the scan
            await self._recounted(connection, kept, {TOTAL: 0, **tally}, writes)

    def all(self, connection: str) -> AsyncIterator[UserRow]:
        """Every user of a connection, once, in a stable order."""
        return self.scan(connection)

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
        await self._write(connection, [row], lambda: self._users.put(connection, row))

    async def put_many(self, connection: str, rows: Sequence[UserRow]) -> None:
        """Create or replace many rows; give it one of `batches` to make it all or nothing."""
        for batch in self.batches(connection, rows):
            await self._write(connection, batch, functools.partial(self._users.put_many, connection, batch))

    async def delete(self, connection: str, user_id: str) -> None:
        """Forget a user."""
        self._writes[connection] += 1
        self._active[connection] += 1
        try:
            before = await self._before(connection, [user_id])
            await self._users.delete(connection, user_id)
        finally:
            self._active[connection] -= 1
        self._remember(connection, user_id, None)
        gone = before[user_id]
        if gone is not None:
            await self._add(connection, Counter({TOTAL: -1, gone.value: -1}))

    # ------------------------------------------------------------------ the kept counts

    async def _write(self, connection: str, rows: Sequence[UserRow], write: Callable[[], Awaitable[None]]) -> None:
        """Write rows, then move each whose state changed from one count to the other."""
        self._writes[connection] += 1
        self._active[connection] += 1
        try:
            states = await self._before(connection, [row.id for row in rows])
            await write()
        finally:
            self._active[connection] -= 1
        change: Counter[str] = Counter()
        for row in rows:
            old = states.get(row.id)
            if old is None:
                change[TOTAL] += 1
            if old is not row.state:
                if old is not None:
                    change[old.value] -= 1
                change[row.state.value] += 1
            states[row.id] = row.state  # the same id twice: the second replaces the first
            self._remember(connection, row.id, row.state)
        await self._add(connection, change)

    def _remember(self, connection: str, user_id: str, state: UserState | None) -> None:
        seen = self._seen.setdefault(connection, OrderedDict())
        seen[user_id] = state
        seen.move_to_end(user_id)
        while len(seen) > SEEN_STATES:
            seen.popitem(last=False)

    async def _before(self, connection: str, user_ids: Sequence[str]) -> dict[str, UserState | None]:
        """The state each row has before a write (None: no row): remembered, or read."""
        before: dict[str, UserState | None] = {}
        unknown: list[str] = []
        seen: Mapping[str, UserState | None] = self._seen.get(connection, {})
        snapshot = self._snapshots.get(connection)
        for user_id in user_ids:
            if user_id in seen:
                before[user_id] = seen[user_id]
                continue
            known, state = snapshot.get(user_id) if snapshot is not None else (False, None)
            if known:
                before[user_id] = state
            else:
                unknown.append(user_id)
        if unknown:
            found = await self._users.get_many(connection, unknown)
            before.update({u: found[u].state if u in found else None for u in unknown})
        return before

    def _lock(self, connection: str) -> asyncio.Lock:
        return self._locks.setdefault(connection, asyncio.Lock())

    async def _add(self, connection: str, change: Counter[str]) -> None:
        """Keep a change of the counts; the changes of writers waiting meanwhile are kept together."""
        if not any(change.values()):
            return
        self._pending.setdefault(connection, Counter()).update(change)
        async with self._lock(connection):
            taken = self._pending.pop(connection, None)
            if not taken or not any(taken.values()):
                return  # kept by the writer before
            try:
                if await self._keep(connection, taken):
                    return
            except BridgeError as err:
                log.warning("the user counts of %s were not kept (%s): kept with the next write", connection,
                            err.detail)
            # The rows are written: their change waits for the next write, or the next complete scan.
            self._pending.setdefault(connection, Counter()).update(taken)

    async def _keep(self, connection: str, change: Counter[str]) -> bool:
        """Add `change` to the kept counts; False when they cannot be kept now."""
        for _ in range(COUNT_TRIES):
            kept = self._kept.pop(connection, None) or await self._users.state_counts(connection)
            snapshot = self._snapshots.get(connection)
            if kept is None and (snapshot is None or len(snapshot)):
                # Never counted, and not found empty before these writes: count the rows once, when no other
                # write is under way (the scan then sees every write made, this one's too).
                if self._active[connection]:
                    return False
                counted = await self._tally(connection)
                self._kept[connection] = await self._users.put_state_counts(connection, Versioned(counted, None))
                return True
            counts: Counter[str] = Counter({TOTAL: 0, **(kept.value if kept else {})})
            counts.update(change)
            try:
                self._kept[connection] = await self._users.put_state_counts(connection, Versioned(
                    {k: v for k, v in counts.items() if v or k == TOTAL}, kept.version if kept else None))
                return True
            except Conflict:
                continue  # another writer kept counts meanwhile: read them
        raise Conflict(f"the user counts of {connection} are contended")

    async def _tally(self, connection: str) -> dict[str, int]:
        tally: Counter[str] = Counter({TOTAL: 0})
        async for row in self._users.scan(connection):
            tally[TOTAL] += 1
            tally[row.state.value] += 1
        return dict(tally)

    async def _recounted(self, connection: str, kept: Versioned[dict[str, int]] | None, counted: dict[str, int],
                         writes: int) -> None:
        """Keep the counts a complete scan saw, unless a write of this directory came in between, or other
        counts were kept meanwhile (then the next complete scan counts again)."""
        async with self._lock(connection):
            if self._writes[connection] != writes or (kept is not None and kept.value == counted):
                return
            self._kept.pop(connection, None)
            try:
                self._kept[connection] = await self._users.put_state_counts(
                    connection, Versioned(counted, kept.version if kept else None))
            except Conflict:
                return
            self._pending.pop(connection, None)  # changes of writes made before the scan, which it saw
            if kept is not None:
                log.info("user counts of %s recounted: %s (kept were %s)", connection, counted, kept.value)


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
