"""In-memory stand-ins for the directory and sync repositories of shared.services.ports."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Sequence

from shared.domain.directory import UserRow
from shared.errors import Conflict, NotFound
from shared.services.ports import (
    Clock,
    DeltaState,
    EnrollmentDelta,
    JsonObject,
    Lease,
)

_versions = itertools.count(1)


class FakeUsers:
    """Implements UserRepository in a dict; `batch_key` spreads users over `groups` keys."""

    batch_rows = 100

    def __init__(self, *, groups: int = 16) -> None:
        self.rows: dict[str, dict[str, UserRow]] = {}
        self.groups = groups

    def batch_key(self, connection: str, user_id: str) -> str:
        return f"{connection}:{zlib.crc32(user_id.encode()) % self.groups}"

    async def get(self, connection: str, user_id: str) -> UserRow | None:
        return self.rows.get(connection, {}).get(user_id)

    async def get_many(self, connection: str, user_ids: Iterable[str]) -> dict[str, UserRow]:
        stored = self.rows.get(connection, {})
        return {u: stored[u] for u in dict.fromkeys(user_ids) if u in stored}

    async def scan(self, connection: str) -> AsyncIterator[UserRow]:
        for user_id in sorted(self.rows.get(connection, {})):
            row = self.rows.get(connection, {}).get(user_id)
            if row is not None:
                yield row

    async def is_empty(self, connection: str) -> bool:
        return not self.rows.get(connection)

    async def lay_out(self, connection: str, expected_users: int | None) -> int:
        return self.groups

    async def count(self, connection: str) -> int:
        return len(self.rows.get(connection, {}))

    async def put(self, connection: str, row: UserRow) -> None:
        self.rows.setdefault(connection, {})[row.id] = row

    async def put_many(self, connection: str, rows: Sequence[UserRow], *, new: Collection[str] | None = None) -> None:
        stored = self.rows.get(connection, {})
        for row in rows if new is not None else ():
            if (row.id in new) == (row.id in stored):
                raise (Conflict if row.id in stored else NotFound)(f"user {row.id} is not as the writer knew it")
        for row in rows:
            await self.put(connection, row)

    async def delete(self, connection: str, user_id: str) -> None:
        self.rows.get(connection, {}).pop(user_id, None)


class FakeSyncState:
    """Implements SyncStateRepository in dicts (the stored tree is a copy, as a store's would be)."""

    def __init__(self) -> None:
        self.deltas: dict[str, DeltaState] = {}
        self.runs: dict[tuple[str, bool], JsonObject] = {}
        self.enrollment: dict[str, EnrollmentDelta] = {}
        self.pending: dict[str, str] = {}

    async def delta(self, connection: str) -> DeltaState | None:
        found = self.deltas.get(connection)
        return copy.deepcopy(found) if found else None

    async def save_delta(self, connection: str, state: DeltaState, *, changed: Collection[str],
                         gone: Collection[str], full: bool) -> None:
        state.version = str(next(_versions))
        self.deltas[connection] = copy.deepcopy(state)

    async def forget_delta(self, connection: str) -> None:
        self.deltas.pop(connection, None)

    async def last_run(self, connection: str, *, dry_run: bool = False) -> JsonObject | None:
        found = self.runs.get((connection, dry_run))
        return copy.deepcopy(found) if found else None

    async def put_run(self, connection: str, report: JsonObject, *, dry_run: bool = False) -> None:
        self.runs[(connection, dry_run)] = copy.deepcopy({k: v for k, v in report.items() if v is not None})

    async def enrollment_delta(self, connection: str) -> EnrollmentDelta | None:
        return self.enrollment.get(connection)

    async def put_enrollment_delta(self, connection: str, delta: EnrollmentDelta) -> None:
        self.enrollment[connection] = delta

    async def enrollment_pending(self, connection: str) -> bool:
        return connection in self.pending

    async def set_enrollment_pending(self, connection: str, run_id: str | None) -> None:
        if run_id is None:
            self.pending.pop(connection, None)
        else:
            self.pending[connection] = run_id


class FakeFederationWatch:
    """Implements FederationWatch in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, JsonObject]] = {}

    async def rows(self, connection: str) -> list[JsonObject]:
        return [dict(r) for _, r in sorted(self.records.get(connection, {}).items())]

    async def get(self, connection: str, domain: str) -> JsonObject | None:
        found = self.records.get(connection, {}).get(domain)
        return dict(found) if found is not None else None

    async def put(self, connection: str, domain: str, record: JsonObject) -> None:
        self.records.setdefault(connection, {})[domain] = dict(record)

    async def forget(self, connection: str, domain: str) -> None:
        self.records.get(connection, {}).pop(domain, None)


class FakeLeases:
    """Implements Leases in a dict, with a version per write as an ETag."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.held: dict[tuple[str, str], Lease] = {}

    async def take(self, scope: str, key: str, owner: str, seconds: float) -> Lease | None:
        now = self._clock.now()
        found = self.held.get((scope, key))
        if found is not None and found.owner not in ("", owner) and found.until > now:
            return None
        lease = Lease(scope, key, owner, now + dt.timedelta(seconds=seconds), str(next(_versions)))
        self.held[(scope, key)] = lease
        return lease

    async def holder(self, scope: str, key: str) -> Lease | None:
        found = self.held.get((scope, key))
        return found if found is not None and found.owner and found.until > self._clock.now() else None

    async def renew(self, lease: Lease, seconds: float) -> Lease:
        found = self.held.get((lease.scope, lease.key))
        if found is None or found.etag != lease.etag:
            raise Conflict(f"the {lease.scope} lease of {lease.key!r} was taken over")
        renewed = Lease(lease.scope, lease.key, lease.owner, self._clock.now() + dt.timedelta(seconds=seconds),
                        str(next(_versions)))
        self.held[(lease.scope, lease.key)] = renewed
        return renewed

    async def release(self, lease: Lease) -> None:
        found = self.held.get((lease.scope, lease.key))
        if found is not None and found.etag == lease.etag:
            del self.held[(lease.scope, lease.key)]


class FakeSubscriptionRecords:
    """Implements SubscriptionRecords in a dict."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], JsonObject] = {}

    async def get(self, connection: str, key: str) -> JsonObject | None:
        found = self.records.get((connection, key))
        return dict(found) if found is not None else None

    async def put(self, connection: str, key: str, record: JsonObject) -> None:
        self.records[(connection, key)] = dict(record)

    async def forget(self, connection: str, key: str) -> None:
        self.records.pop((connection, key), None)
