"""The FederationWatch contract, on the in-memory stand-in and on the Table adapter over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.federation_watch import TableFederationWatch
from shared.services.ports import FederationWatch
from tests.fake_repositories import FakeFederationWatch


@pytest.fixture(params=["memory", "table"])
def watch(request: pytest.FixtureRequest) -> FederationWatch:
    if request.param == "memory":
        return FakeFederationWatch()
    return TableFederationWatch(request.getfixturevalue("store"))


@pytest.fixture
def conn() -> str:
    return f"conn{uuid.uuid4().hex[:8]}"


async def test_records_per_domain(watch: FederationWatch, conn: str) -> None:
    assert await watch.rows(conn) == []
    assert await watch.get(conn, "contoso.example") is None
    await watch.put(conn, "contoso.example", {"domain": "contoso.example", "daysLeft": 30})
    await watch.put(conn, "fabrikam.example", {"domain": "fabrikam.example", "problem": "no metadata"})
    await watch.put(conn, "contoso.example", {"domain": "contoso.example", "daysLeft": 7})
    assert await watch.get(conn, "contoso.example") == {"domain": "contoso.example", "daysLeft": 7}
    assert [r["domain"] for r in await watch.rows(conn)] == ["contoso.example", "fabrikam.example"]
    assert await watch.rows(f"{conn}x") == []
    await watch.forget(conn, "contoso.example")
    await watch.forget(conn, "contoso.example")  # absent counts as dropped
    assert [r["domain"] for r in await watch.rows(conn)] == ["fabrikam.example"]
