"""The simulator's injected faults, globally and per route, in-process."""

from __future__ import annotations

from typing import Any

import pytest

from local.entra.core import Faults, GraphError
from tests.fixtures.entra import InProcessEntra


def test_bad_fault_settings_are_refused_whole() -> None:
    faults = Faults()
    cases: list[tuple[dict[str, Any], str]] = [({"errorRate": 2}, "between 0 and 1"), ({"latencyMs": -1}, "negative"),
                         ({"nope": 1}, "unknown fault setting 'nope'"), ({"errorRate": "x"}, "must be a number"),
                         ({"routes": [{"method": "GET"}]}, "needs a 'path'"),
                         ({"routes": [{"path": "("}]}, "bad path pattern"),
                         ({"errorRate": 0.5, "routes": [{"path": "/users", "dropRate": 3}]}, "rule 0")]
    for bad, problem in cases:
        with pytest.raises(GraphError, match=problem):
            faults.update(bad)
    assert faults.describe()["errorRate"] == 0  # nothing half-applied


def test_route_rules_override_the_global_settings() -> None:
    faults = Faults()
    faults.update({"latencyMs": 5, "routes": [{"path": r"^/users/[^/]+$", "method": "patch", "errorRate": 1}]})
    assert faults.settings_for("PATCH", "/v1.0/users/abc")["error_rate"] == 1
    assert faults.settings_for("PATCH", "/v1.0/users/abc")["latency_ms"] == 5
    assert faults.settings_for("GET", "/v1.0/users/abc")["error_rate"] == 0
    assert faults.settings_for("PATCH", "/beta/users/abc/authentication")["error_rate"] == 0
    assert faults.describe()["routes"] == [{"path": r"^/users/[^/]+$", "method": "PATCH", "errorRate": 1.0}]


async def test_a_route_rule_fails_only_its_route(entra_inprocess: InProcessEntra) -> None:
    client, headers = entra_inprocess.client, entra_inprocess.headers()
    answer = await client.put("/_sim/faults", json={"routes": [{"path": "^/organization$", "throttleRate": 1}]})
    assert answer.status_code == 200
    refused = await client.get("/v1.0/organization", headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await client.get("/v1.0/users?$top=1", headers=headers)).status_code == 200
    bad = await client.put("/_sim/faults", json={"routes": [{"path": "[", "errorRate": 1}]})
    assert bad.status_code == 400


async def test_an_ambiguous_write_is_applied_and_its_answer_lost(entra_inprocess: InProcessEntra) -> None:
    sim, client, headers = entra_inprocess.sim, entra_inprocess.client, entra_inprocess.headers()
    user = next(u for u in sim.tenant.users.values() if not sim.tenant.roles_of(u.id))
    sim.faults.update({"routes": [{"path": "^/users/", "method": "PATCH", "ambiguousRate": 1}]})
    with pytest.raises(ConnectionAbortedError):
        await client.patch(f"/v1.0/users/{user.id}", headers=headers, json={"accountEnabled": False})
    assert sim.tenant.users[user.id].accountEnabled is False
    # Reads on the same path are untouched by a PATCH-only rule.
    assert (await client.get(f"/v1.0/users/{user.id}", headers=headers)).json()["accountEnabled"] is False


async def test_dropped_connections_and_503s_do_no_work(entra_inprocess: InProcessEntra) -> None:
    sim, client, headers = entra_inprocess.sim, entra_inprocess.client, entra_inprocess.headers()
    user = next(iter(sim.tenant.users.values()))
    sim.faults.update({"dropRate": 1})
    with pytest.raises(ConnectionAbortedError):
        await client.patch(f"/v1.0/users/{user.id}", headers=headers, json={"accountEnabled": False})
    sim.faults.update({"dropRate": 0, "errorRate": 1})
    failed = await client.patch(f"/v1.0/users/{user.id}", headers=headers, json={"accountEnabled": False})
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "serviceNotAvailable"
    assert sim.tenant.users[user.id].accountEnabled is True
