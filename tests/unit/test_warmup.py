"""Warm-up is best effort: a connection that cannot sign in is reported, never raised."""

from __future__ import annotations

import json

import pytest

from shared.bootstrap import Bridge
from shared.config import load_settings
from tests.unit.test_config import CLIENT, TENANT, aliases


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in aliases():
        monkeypatch.delenv(name, raising=False)


async def test_a_connection_that_cannot_sign_in_is_named_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    connections = [
        {"name": "vaultless", "tenantId": TENANT, "auth": {"kind": "clientSecret", "clientId": CLIENT,
                                                           "secretName": "bridge-secret"},
         "features": {"sync": {"enabled": True, "groups": ["Sync"]}}},
        {"name": "idle", "tenantId": TENANT},  # no feature on: nothing to warm
    ]
    monkeypatch.setenv("CONNECTIONS", json.dumps(connections))
    results = await Bridge(load_settings()).warm_up()
    assert list(results) == ["vaultless"]
    assert results["vaultless"].startswith("not ready: Configuration")
    assert "KEY_VAULT_URL" in results["vaultless"]


async def test_broken_settings_skip_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTIONS", "[{")
    assert await Bridge(load_settings()).warm_up() == {}
