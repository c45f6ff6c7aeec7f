"""Sync writes users in storage transactions of up to 100 rows of a partition when the store offers them:
a dropped transaction is tried once more, a refused one falls back to row-by-row writes so one bad row
costs one error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.adapters.leases import TableLeases
from shared.adapters.syncstate import TableSyncState
from shared.adapters.users import TableUsers
from shared.errors import InvalidInput, Transient
from shared.services.directory import Directory
from shared.services.ports import Entity
from shared.services.sync import SyncService
from shared.topology import USERS_TABLES, Table
from tests.fakes import FakeAuditSink, FakeBatchEntityStore, FakeClock, FakeWorkQueue
from tests.unit.test_sync_service import SYNC, FakeEntra, conn, user


class BatchingStore(FakeBatchEntityStore):
    """The fake store with transactions; the first `drops` transactions fail as a dropped connection would."""

    def __init__(self, *, drops: int = 0, refuse: str | None = None) -> None:
        super().__init__()
        self.drops = drops
        self.refuse = refuse
        self.transactions: list[int] = []

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        assert len(entities) <= 100
        if self.drops:
            self.drops -= 1
            raise Transient("storage could not be reached: ServiceRequestError")
        if self.refuse and any(e.row_key == self.refuse for e in entities):
            raise InvalidInput("storage rejected a row")
        if table in USERS_TABLES:
            self.transactions.append(len(entities))
        await super().upsert_many(table, entities, exists=exists)


def _tenant(count: int) -> FakeEntra:
    entra = FakeEntra()
    for n in range(count):
        entra.add_user(user(n), SYNC)
    return entra


async def test_users_are_written_in_transactions_and_a_dropped_one_is_tried_again() -> None:
    store = BatchingStore(drops=1)
    users = TableUsers(store)
    directory = Directory(users)
    clock = FakeClock()
    service = SyncService(directory=directory, state=TableSyncState(store), leases=TableLeases(store, clock),
                          audit=FakeAuditSink(), queue=FakeWorkQueue(), clock=clock)
    report = await service.run(conn(), _tenant(250), run_id="r1", correlation_id="c1")
    assert (report.outcome, report.added, report.errors) == ("completed", 250, 0)
    # One transaction per partition of the directory (250 users over 16 partitions), none lost to the drop.
    assert sum(store.transactions) == 250
    partitions = {users.partition_of("demo", r.id) async for r in directory.all("demo")}
    assert len(store.transactions) == len(partitions) <= users.partitions
    assert len([r async for r in directory.all("demo")]) == 250


async def test_a_refused_transaction_falls_back_to_single_rows() -> None:
    store = BatchingStore(refuse="u0007")
    directory = Directory(TableUsers(store))
    clock = FakeClock()
    service = SyncService(directory=directory, state=TableSyncState(store), leases=TableLeases(store, clock),
                          audit=FakeAuditSink(), queue=FakeWorkQueue(), clock=clock)
    report = await service.run(conn(), _tenant(150), run_id="r1", correlation_id="c1")
    # The fake accepts the row on its own: every user is stored, none counted as an error.
    assert (report.outcome, report.added, report.errors) == ("completed", 150, 0)
    assert len([r async for r in directory.all("demo")]) == 150
