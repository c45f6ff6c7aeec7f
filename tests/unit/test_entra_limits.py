"""The simulator's throttling: Microsoft's budgets, costs and headers, in-process.

Figures from https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits:
3,500 / 5,000 / 8,000 resource units per app and tenant per 10 s by tenant size, 3,000 writes per
150 s per app and tenant, 18,000 writes per 5 minutes per tenant; 429 with Retry-After,
x-ms-throttle-scope `<Scope>/<Limit>/<ApplicationId>/<TenantId>`, x-ms-throttle-information, and
x-ms-throttle-limit-percentage (0.8-1.8) once more than 0.8 of a budget is spent.
"""

from __future__ import annotations

import pytest

from local.entra.core import Bucket, Caller, GraphError, ru_limit
from local.entra.demo import BRIDGE_CLIENT_ID
from tests.fixtures.entra import InProcessEntra


def caller(app_id: str) -> Caller:
    return Caller({"appid": app_id, "roles": []}, None)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the buckets refilling, so budgets can be spent exactly."""
    monkeypatch.setattr("local.entra.core.time.monotonic", lambda: 1000.0)


def test_tenant_size_tiers() -> None:
    assert [ru_limit(n) for n in (0, 49, 50, 500, 501, 100_000)] == [3500, 3500, 5000, 5000, 8000, 8000]


def test_a_bucket_refuses_without_spending_and_time_scale_shortens_the_wait() -> None:
    bucket = Bucket(10, 10, time_scale=1)
    assert bucket.take(10) == 0
    wait = bucket.take(5)
    assert 4.9 < wait <= 5.0
    assert bucket.used == 10
    fast = Bucket(10, 10, time_scale=100)
    fast.take(10)
    assert fast.take(5) <= 0.05


async def test_resource_units_cost_and_429_shape(entra_inprocess: InProcessEntra, frozen: None) -> None:
    sim, client = entra_inprocess.sim, entra_inprocess.client
    headers = entra_inprocess.headers()
    answer = await client.get("/v1.0/users", headers=headers)
    assert answer.headers["x-ms-resource-unit"] == "2"
    assert (await client.get("/v1.0/users?$select=id", headers=headers)).headers["x-ms-resource-unit"] == "1"
    group = next(g for g in sim.tenant.groups.values() if g.displayName == "Bridge Sync")
    transitive = await client.get(f"/v1.0/groups/{group.id}/transitiveMembers/microsoft.graph.user", headers=headers)
    assert transitive.headers["x-ms-resource-unit"] == "5"
    # The demo tenant has 300 users: 5,000 units per 10 s. Spend most of them directly.
    app = BRIDGE_CLIENT_ID
    sim.charge(caller(app), cost=4000, write=False)
    warned = await client.get("/v1.0/organization", headers=headers)
    assert warned.status_code == 200
    assert 0.8 <= float(warned.headers["x-ms-throttle-limit-percentage"]) <= 1.8
    sim.charge(caller(app), cost=5000 - 4009 - 1, write=False)  # one unit left; GET /users costs 2
    refused = await client.get("/v1.0/users", headers=headers)
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["code"] == "TooManyRequests"
    assert body["innerError"]["request-id"] == refused.headers["request-id"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ms-throttle-scope"] == f"Tenant_Application/ReadWrite/{app}/{sim.tenant.tenantId}"
    assert refused.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert sim.counters["throttled"] == 1
    assert sim.app_counters[app]["throttled"] == 1


def test_writes_per_app_then_per_tenant(entra_inprocess: InProcessEntra, frozen: None) -> None:
    sim = entra_inprocess.sim
    for _ in range(3000):
        sim.charge(caller("app-0"), cost=1, write=True)
    with pytest.raises(GraphError) as refused:
        sim.charge(caller("app-0"), cost=1, write=True)
    assert refused.value.status == 429
    assert refused.value.headers["x-ms-throttle-scope"].startswith("Tenant_Application/Write/app-0/")
    assert refused.value.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    # Five more apps use up the tenant's 18,000 writes; the seventh app is refused on the tenant's budget.
    for n in range(1, 6):
        for _ in range(3000):
            sim.charge(caller(f"app-{n}"), cost=1, write=True)
    with pytest.raises(GraphError) as tenant_wide:
        sim.charge(caller("app-6"), cost=1, write=True)
    assert tenant_wide.value.headers["x-ms-throttle-scope"] == f"Tenant/Write/app-6/{sim.tenant.tenantId}"
    assert sim.counters["writes"] == 18000


def test_limits_off_counts_but_never_refuses(entra_inprocess: InProcessEntra) -> None:
    sim = entra_inprocess.sim
    sim.limits = False
    for _ in range(5):
        sim.charge(caller("app-x"), cost=5000, write=True)
    assert sim.app_counters["app-x"] == {"requests": 5, "throttled": 0, "writes": 5, "resourceUnits": 25000}
