"""Sync writes users in storage transactions of up to 100 rows of a partition when the store offers them:
a dropped transaction is tried once more, a refused one falls back to row-by-row writes so one bad row
costs one error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shared.errors import Conflict, InvalidInput, NotFound, Transient
from shared.services.directory import SHARDS, Directory, partition_of
from shared.services.ports import Entity
from shared.services.sync import SyncService
from shared.topology import Table
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.unit.test_sync_service import SYNC, FakeEntra, conn, user


class BatchingStore(FakeEntityStore):
    """The fake store with transactions; the first `drops` transactions fail as a dropped connection would."""

    def __init__(self, *, drops: int = 0, refuse: str | None = None) -> None:
        super().__init__()
        self.drops = drops
        self.refuse = refuse
        self.transactions: list[int] = []
        #: Users rows written by kind: "insert" (known new), "update" (known stored), "upsert" (either).
        self.kinds: dict[str, list[str]] = {"insert": [], "update": [], "upsert": []}

    async def upsert_many(self, table: Table, entities: Sequence[Entity], *,
                          exists: Mapping[str, bool] | None = None) -> None:
        assert len(entities) <= 100
        if self.drops:
            self.drops -= 1
            raise Transient("storage could not be reached: ServiceRequestError")
        if self.refuse and any(e.row_key == self.refuse for e in entities):
            raise InvalidInput("storage rejected a row")
        known = exists or {}
        for entity in entities:  # all or nothing, as Table storage answers a transaction
            stored = await self.get(table, entity.partition_key, entity.row_key) is not None
            if known.get(entity.row_key) is True and not stored:
                raise NotFound(f"{entity.row_key} does not exist")
            if known.get(entity.row_key) is False and stored:
                raise Conflict(f"{entity.row_key} already exists")
        if table is Table.USERS:
            self.transactions.append(len(entities))
            for entity in entities:
                kind = {True: "update", False: "insert"}.get(known.get(entity.row_key), "upsert")  # type: ignore[arg-type]
                self.kinds[kind].append(entity.row_key)
        for entity in entities:
            await self.upsert(table, entity)


def _tenant(count: int) -> FakeEntra:
    entra = FakeEntra()
    for n in range(count):
        entra.add_user(user(n), SYNC)
    return entra


async def test_users_are_written_in_transactions_and_a_dropped_one_is_tried_again() -> None:
    store = BatchingStore(drops=1)
    directory = Directory(store)
    service = SyncService(directory=directory, entities=store, audit=FakeAuditSink(), queue=FakeWorkQueue(),
                          clock=FakeClock())
    report = await service.run(conn(), _tenant(250), run_id="r1", correlation_id="c1")
    assert (report.outcome, report.added, report.errors) == ("completed", 250, 0)
    # One transaction per partition of the directory (250 users over 16 partitions), none lost to the drop.
    assert sum(store.transactions) == 250
    assert len(store.transactions) == len({partition_of("demo", r.id) async for r in directory.all("demo")}) <= SHARDS
    assert len([r async for r in directory.all("demo")]) == 250


async def test_a_refused_transaction_falls_back_to_single_rows() -> None:
    store = BatchingStore(refuse="u0007")
    directory = Directory(store)
    service = SyncService(directory=directory, entities=store, audit=FakeAuditSink(), queue=FakeWorkQueue(),
                          clock=FakeClock())
    report = await service.run(conn(), _tenant(150), run_id="r1", correlation_id="c1")
    # The fake accepts the row on its own: every user is stored, none counted as an error.
    assert (report.outcome, report.added, report.errors) == ("completed", 150, 0)
    assert len([r async for r in directory.all("demo")]) == 150


async def test_additions_are_inserted_and_the_rows_read_are_updated_without_a_lookup() -> None:
    store = BatchingStore()
    directory = Directory(store)
    service = SyncService(directory=directory, entities=store, audit=FakeAuditSink(), queue=FakeWorkQueue(),
                          clock=FakeClock())
    entra = _tenant(40)
    # A first import into an empty directory knows every row is new.
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    assert (len(store.kinds["insert"]), store.kinds["update"], store.kinds["upsert"]) == (40, [], [])
    store.kinds = {"insert": [], "update": [], "upsert": []}
    entra.add_user(user(100), SYNC)
    entra.update_user("u0003", displayName="Changed")
    entra.delete_user("u0005")
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert (report.mode, report.added, report.updated, report.removed, report.errors) == (
        "incremental", 1, 1, 1, 0)
    assert (store.kinds["insert"], sorted(store.kinds["update"]), store.kinds["upsert"]) == (
        ["u0100"], ["u0003", "u0005"], [])


async def test_a_row_written_by_another_process_meanwhile_is_written_row_by_row() -> None:
    store = BatchingStore()
    directory = Directory(store)
    service = SyncService(directory=directory, entities=store, audit=FakeAuditSink(), queue=FakeWorkQueue(),
                          clock=FakeClock())
    entra = _tenant(10)
    await service.run(conn(), entra, run_id="r1", correlation_id="c1")
    added = user(100)
    entra.add_user(added, SYNC)
    real_get_many = directory.get_many

    async def get_many_then_race(connection: str, ids: object, *, earlier: bool = False) -> object:
        wanted = list(ids)  # type: ignore[call-overload]
        rows = await real_get_many(connection, wanted, earlier=earlier)
        if added["id"] in wanted:  # another writer stores the new user's row after the run read it
            await store.upsert(Table.USERS, Entity(partition_of("demo", added["id"]), added["id"], {"upn": "x@y"}))
        return rows

    directory.get_many = get_many_then_race  # type: ignore[method-assign, assignment]
    report = await service.run(conn(), entra, run_id="r2", correlation_id="c2")
    assert (report.outcome, report.added, report.errors) == ("completed", 1, 0)
    assert sorted(store.kinds["insert"]) == [f"u{n:04d}" for n in range(10)]  # the import's; not the refused one
    stored = await directory.get("demo", added["id"])
    assert stored is not None
    assert stored.upn == added["userPrincipalName"]
