"""Contract of CeremonyRepository: the in-memory fake and the Table adapter on Azurite answer alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from shared.domain.devices import Ceremony
from shared.errors import Conflict

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ceremony(ceremony_id: str = "cer-1", expires: dt.datetime = NOW + dt.timedelta(minutes=5)) -> Ceremony:
    return Ceremony(id=ceremony_id, challenge="Y2hhbGxlbmdl", expires_at=expires, user_id="u1", device_id="dev-1",
                    excluded=("cred-a", "cred-b"))


async def test_a_ceremony_is_added_once_and_read_back(make_repository: Callable[[str], Any], connection: str) -> None:
    ceremonies = make_repository("ceremonies")
    assert await ceremonies.get(connection, "cer-1") is None
    await ceremonies.add(connection, ceremony())
    found = await ceremonies.get(connection, "cer-1")
    assert found.value == ceremony()
    assert not found.value.used
    with pytest.raises(Conflict):
        await ceremonies.add(connection, ceremony())


async def test_a_ceremony_is_consumed_by_one_request_only(make_repository: Callable[[str], Any],
                                                          connection: str) -> None:
    ceremonies = make_repository("ceremonies")
    await ceremonies.add(connection, ceremony())
    first = await ceremonies.get(connection, "cer-1")
    second = await ceremonies.get(connection, "cer-1")
    await ceremonies.consume(connection, first)
    with pytest.raises(Conflict):
        await ceremonies.consume(connection, second)
    assert (await ceremonies.get(connection, "cer-1")).value.used


async def test_an_id_that_cannot_be_a_ceremony_finds_none(make_repository: Callable[[str], Any],
                                                          connection: str) -> None:
    assert await make_repository("ceremonies").get(connection, "cer/1") is None


async def test_expired_ceremonies_are_purged_and_current_ones_kept(make_repository: Callable[[str], Any],
                                                                   connection: str) -> None:
    ceremonies = make_repository("ceremonies")
    await ceremonies.add(connection, ceremony("cer-old", NOW - dt.timedelta(days=2)))
    await ceremonies.add(connection, ceremony("cer-new", NOW + dt.timedelta(minutes=5)))
    old = await ceremonies.get(connection, "cer-old")
    await ceremonies.consume(connection, old)
    assert await ceremonies.purge(connection, NOW - dt.timedelta(days=1)) == 1
    assert await ceremonies.get(connection, "cer-old") is None
    assert await ceremonies.get(connection, "cer-new") is not None
    assert await ceremonies.purge(connection, NOW - dt.timedelta(days=1)) == 0
