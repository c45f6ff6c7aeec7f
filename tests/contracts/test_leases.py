"""The Leases contract, on the in-memory stand-in and on the Table adapter over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.leases import TableLeases
from shared.errors import Conflict
from shared.services.ports import Leases
from tests.fake_repositories import FakeLeases
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "table"])
def leases(request: pytest.FixtureRequest, clock: FakeClock) -> Leases:
    if request.param == "memory":
        return FakeLeases(clock)
    return TableLeases(request.getfixturevalue("store"), clock)


@pytest.fixture
def key() -> str:
    return f"conn{uuid.uuid4().hex[:8]}"


async def test_a_free_lease_is_taken_and_then_refused_to_another_owner(leases: Leases, key: str) -> None:
    taken = await leases.take("sync", key, "run-1", 60)
    assert taken is not None
    assert taken.owner == "run-1"
    assert await leases.take("sync", key, "run-2", 60) is None
    holder = await leases.holder("sync", key)
    assert holder is not None
    assert holder.owner == "run-1"
    # Another scope of the same key is another lease.
    assert await leases.take("events", key, "publisher", 60) is not None


async def test_the_owner_extends_its_lease_by_taking_it_again(leases: Leases, key: str, clock: FakeClock) -> None:
    first = await leases.take("sync", key, "run-1", 60)
    clock.advance(seconds=50)
    again = await leases.take("sync", key, "run-1", 60)
    assert first is not None
    assert again is not None
    assert again.until > first.until
    clock.advance(seconds=50)
    assert await leases.take("sync", key, "run-2", 60) is None


async def test_an_expired_lease_is_free(leases: Leases, key: str, clock: FakeClock) -> None:
    await leases.take("sync", key, "run-1", 60)
    clock.advance(seconds=61)
    assert await leases.holder("sync", key) is None
    taken = await leases.take("sync", key, "run-2", 60)
    assert taken is not None
    assert taken.owner == "run-2"


async def test_renew_keeps_a_lease_and_fails_once_it_was_taken_over(leases: Leases, key: str,
                                                                    clock: FakeClock) -> None:
    lease = await leases.take("sync", key, "run-1", 60)
    assert lease is not None
    clock.advance(seconds=30)
    renewed = await leases.renew(lease, 60)
    assert renewed.until > lease.until
    with pytest.raises(Conflict):
        await leases.renew(lease, 60)  # the version it was written with is gone
    clock.advance(seconds=61)
    assert await leases.take("sync", key, "thief", 60) is not None
    with pytest.raises(Conflict):
        await leases.renew(renewed, 60)


async def test_release_frees_the_lease_but_never_anothers(leases: Leases, key: str, clock: FakeClock) -> None:
    lease = await leases.take("sync", key, "run-1", 60)
    assert lease is not None
    await leases.release(lease)
    assert await leases.holder("sync", key) is None
    other = await leases.take("sync", key, "run-2", 60)
    assert other is not None
    await leases.release(lease)  # an old lease changes nothing
    holder = await leases.holder("sync", key)
    assert holder is not None
    assert holder.owner == "run-2"
