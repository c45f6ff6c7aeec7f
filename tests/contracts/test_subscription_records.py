"""The SubscriptionRecords contract, on the in-memory stand-in and on the Table adapter over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.subscription_records import TableSubscriptionRecords
from shared.services.ports import SubscriptionRecords
from tests.fake_repositories import FakeSubscriptionRecords


@pytest.fixture(params=["memory", "table"])
def records(request: pytest.FixtureRequest) -> SubscriptionRecords:
    if request.param == "memory":
        return FakeSubscriptionRecords()
    return TableSubscriptionRecords(request.getfixturevalue("store"))


async def test_a_record_per_connection_and_key(records: SubscriptionRecords) -> None:
    conn = f"conn{uuid.uuid4().hex[:8]}"
    assert await records.get(conn, "groups") is None
    await records.put(conn, "groups", {"subscriptionId": "s1", "expires": "2026-01-01T00:00:00+00:00"})
    await records.put(conn, "users", {"problem": "not granted"})
    await records.put(conn, "groups", {"subscriptionId": "s2"})
    assert await records.get(conn, "groups") == {"subscriptionId": "s2"}
    assert await records.get(f"{conn}x", "groups") is None
    await records.forget(conn, "groups")
    await records.forget(conn, "groups")  # absent counts as dropped
    assert await records.get(conn, "groups") is None
    assert await records.get(conn, "users") == {"problem": "not granted"}
