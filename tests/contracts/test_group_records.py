"""The GroupRecords contract, over the in-memory store and over Azurite."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.domain.directory import Enrollment
from shared.domain.enrollment import GroupRecord, Ownership
from shared.services.ports import GroupRecords


def connection() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def record(group_id: str, state: Enrollment, name: str = "Enrolled") -> GroupRecord:
    return GroupRecord(id=group_id, name=name, state=state, ownership=Ownership.OWNED,
                       recorded_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC), run_id="run-1")


async def test_records_are_kept_per_connection_and_replaced_by_id(group_records: GroupRecords) -> None:
    mine, other = connection(), connection()
    assert await group_records.records(mine) == []
    states = list(Enrollment)
    first = record(str(uuid.uuid4()), states[0])
    second = record(str(uuid.uuid4()), states[-1])
    await group_records.put(mine, first)
    await group_records.put(mine, second)
    await group_records.put(other, first)
    assert {r.id: r for r in await group_records.records(mine)} == {first.id: first, second.id: second}
    renamed = record(first.id, states[0], name="Renamed")
    await group_records.put(mine, renamed)
    assert {r.id: r.name for r in await group_records.records(mine)} == {first.id: "Renamed", second.id: "Enrolled"}
    assert await group_records.records(other) == [first]


async def test_forget_drops_one_record_and_absent_counts_as_dropped(group_records: GroupRecords) -> None:
    mine = connection()
    kept = record(str(uuid.uuid4()), Enrollment.PAIRED_WITH_ENTRA)
    dropped = record(str(uuid.uuid4()), Enrollment.PAIRED_WITH_ENTRA)
    await group_records.put(mine, kept)
    await group_records.put(mine, dropped)
    await group_records.forget(mine, dropped.id)
    await group_records.forget(mine, dropped.id)
    await group_records.forget(mine, str(uuid.uuid4()))
    assert await group_records.records(mine) == [kept]
