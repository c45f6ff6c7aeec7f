"""Contract of RotationRepository, the per-user lease included: the in-memory fake and the Table adapter on
Azurite answer alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from shared.domain.rotation import RotationRow, Status
from shared.errors import Conflict

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=5)


async def test_an_unknown_user_has_an_empty_state(make_repository: Callable[[str], Any], connection: str) -> None:
    rotations = make_repository("rotations")
    seen = await rotations.get(connection, "u1")
    assert seen.value == RotationRow()
    assert seen.version is None
    assert await rotations.rows(connection) == {}


async def test_a_claim_takes_the_lease_and_finish_records_the_outcome(make_repository: Callable[[str], Any],
                                                                      connection: str) -> None:
    rotations = make_repository("rotations")
    claimed = await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r1", now=NOW,
                                    until=NOW + LEASE)
    stored = await rotations.get(connection, "u1")
    assert (stored.value.status, stored.value.lease_owner, stored.value.lease_until) == (
        Status.IN_PROGRESS, "r1", NOW + LEASE)
    assert stored.version == claimed.version
    await rotations.finish(connection, "u1", claimed, {"status": Status.ROTATED, "last_version": "v1",
                                                       "last_rotated_at": NOW, "attempts": 0})
    done = (await rotations.get(connection, "u1")).value
    assert (done.status, done.last_version, done.last_rotation_id) == (Status.ROTATED, "v1", "r1")
    assert (done.lease_owner, done.lease_until) == (None, None)
    assert (await rotations.rows(connection)) == {"u1": done}


async def test_a_held_lease_stops_another_rotation_until_it_runs_out(make_repository: Callable[[str], Any],
                                                                     connection: str) -> None:
    rotations = make_repository("rotations")
    await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r1", now=NOW, until=NOW + LEASE)
    with pytest.raises(Conflict, match="lease"):
        await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r2", now=NOW,
                              until=NOW + LEASE)
    again = await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r1", now=NOW,
                                  until=NOW + LEASE)  # the holder may take it again
    later = NOW + LEASE + dt.timedelta(seconds=1)
    taken = await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r2", now=later,
                                  until=later + LEASE)
    assert taken.value.lease_owner == "r2"
    with pytest.raises(Conflict):  # r1 lost the row: its outcome is not written over r2's lease
        await rotations.finish(connection, "u1", again, {"status": Status.ROTATED})


async def test_two_workers_claiming_the_same_row_one_wins(make_repository: Callable[[str], Any],
                                                          connection: str) -> None:
    rotations = make_repository("rotations")
    seen = await rotations.get(connection, "u1")
    await rotations.claim(connection, "u1", seen, "r1", now=NOW, until=NOW + LEASE)
    with pytest.raises(Conflict):
        await rotations.claim(connection, "u1", seen, "r1", now=NOW, until=NOW + LEASE)


async def test_a_failure_is_recorded_unless_another_rotation_holds_the_lease(make_repository: Callable[[str], Any],
                                                                             connection: str) -> None:
    rotations = make_repository("rotations")
    assert await rotations.fail(connection, "u1", "r1", "Transient: gone (not retryable)", now=NOW)
    failed = (await rotations.get(connection, "u1")).value
    assert (failed.status, failed.reason, failed.last_rotation_id) == (Status.FAILED,
                                                                       "Transient: gone (not retryable)", "r1")
    await rotations.claim(connection, "u1", await rotations.get(connection, "u1"), "r2", now=NOW, until=NOW + LEASE)
    assert not await rotations.fail(connection, "u1", "r1", "late", now=NOW)
    assert (await rotations.get(connection, "u1")).value.lease_owner == "r2"
    assert await rotations.fail(connection, "u1", "r2", "gave up", now=NOW)
    assert (await rotations.get(connection, "u1")).value.lease_owner is None
