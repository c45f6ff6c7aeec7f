"""Two tenants on one simulator, served side by side: one tenant's throttling and failures never slow
or block the other's work.

Tenant A (the demo tenant) answers every Graph request with a slow 429; tenant B (the second demo
tenant) has neither. Both connections run in one process on the same storage account and the same
throttle table, as two connections of one deployment do. B's sync completes while A's is still being
throttled; B's requests see no 429, A's write pause is recorded for A alone, and B's password writes
go through at once while A's are paused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

import httpx
import pytest

from bench.rotation import Stack, _connection
from local.entra.demo import SECOND_TENANT_ID
from shared.adapters.graph import ThrottleGovernor
from shared.adapters.graph.users import GraphDirectoryReader
from shared.adapters.tables import TableEntityStore
from shared.errors import BridgeError
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture

#: Every Graph request of tenant A: a second and a half, then 429 with Retry-After.
THROTTLED = {"throttleRate": 1.0, "latencyMs": 1500}


def test_the_simulator_serves_each_tenant_its_own_data_and_sign_in(entra: EntraFixture) -> None:
    tenants = entra.admin("GET", "/_sim/tenants")["value"]
    assert [t["tenantId"] for t in tenants] == [entra.tenant_id, SECOND_TENANT_ID]
    assert entra.admin("GET", f"/_sim/tenants/{SECOND_TENANT_ID}/tenant")["tenantId"] == SECOND_TENANT_ID
    assert entra.admin("GET", "/_sim/tenant")["tenantId"] == entra.tenant_id


async def test_one_tenants_throttling_never_slows_or_blocks_the_others_runs(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any) -> None:
    vault.grant(entra.principal_id, "Key Vault Secrets Officer")
    suffix = random.randrange(10**6)
    stack_a = Stack(entra.tenant_id, entra.url, vault.url, azurite_connection_string, str(tls_files.ca))
    stack_b = Stack(SECOND_TENANT_ID, entra.url, vault.url, azurite_connection_string, str(tls_files.ca),
                    vault_tenant=entra.tenant_id)
    conn_a = _connection(entra.tenant_id).model_copy(update={"name": f"ta{suffix}"})
    conn_b = _connection(SECOND_TENANT_ID).model_copy(update={"name": f"tb{suffix}"})
    b_before = entra.admin("GET", f"/_sim/tenants/{SECOND_TENANT_ID}/tenant")["counters"]
    tables = TableEntityStore.from_connection_string(azurite_connection_string)
    governor = ThrottleGovernor(tables)
    entra.admin("PUT", "/_sim/faults", THROTTLED)
    try:
        async with stack_a.open(8) as a, stack_b.open(8) as b:
            run_a = asyncio.ensure_future(a.sync.run(conn_a, GraphDirectoryReader(a.graph), run_id=f"a-{suffix}",
                                                     correlation_id="tenants"))
            await asyncio.sleep(0.5)  # A is under way (and being throttled) before B starts
            report_b = await b.sync.run(conn_b, GraphDirectoryReader(b.graph), run_id=f"b-{suffix}",
                                        correlation_id="tenants")
            assert report_b.outcome == "completed"
            assert report_b.added > 0
            assert not run_a.done(), "A's throttled run ended before B's: nothing was shown"
            assert b.graph.throttled == 0
            # A's writes are paused, as a 429 on one of A's writes records it for every instance; B's password
            # writes go through meanwhile.
            await governor.pause(entra.tenant_id, 2)
            rotated = [row.id async for row in b.directory.all(conn_b.name) if row.in_rotation_group][:3]
            for user in rotated:
                outcome = await b.rotation.rotate(conn_b, b.passwords, user, rotation_id=f"r-{user[:8]}",
                                                  correlation_id="tenants")
                assert outcome.status.value in ("rotated", "refused")
            assert b.graph.throttled == 0
            with pytest.raises(BridgeError):
                await run_a
            assert a.graph.throttled > 0
        shared = ThrottleGovernor(tables)  # what every instance reads from the throttle table
        assert await shared.pause_until(entra.tenant_id) is not None
        assert await shared.pause_until(SECOND_TENANT_ID) is None
    finally:
        entra.admin("PUT", "/_sim/faults", {})
        await tables.close()
    b_after = entra.admin("GET", f"/_sim/tenants/{SECOND_TENANT_ID}/tenant")["counters"]
    assert b_after["throttled"] == b_before["throttled"]
    assert b_after["requests"] > b_before["requests"]


def test_graph_serves_the_tenant_of_the_token_and_a_forged_tid_gains_nothing(
        entra: EntraFixture, tls_files: Any) -> None:
    with httpx.Client(verify=tls_files.client_context(), base_url=entra.url) as client:
        def token(tenant: str) -> str:
            answer = client.post(f"/{tenant}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": entra.client_id,
                "client_secret": entra.client_secret, "scope": "https://graph.microsoft.com/.default"})
            answer.raise_for_status()
            return str(answer.json()["access_token"])

        for tenant in (entra.tenant_id, SECOND_TENANT_ID):
            org = client.get("/v1.0/organization", headers={"authorization": f"Bearer {token(tenant)}"})
            assert org.status_code == 200
            assert org.json()["value"][0]["id"] == tenant
        # A's token with its tid changed to B's: routed to B, whose verification refuses it.
        header, payload, signature = token(entra.tenant_id).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "tid": SECOND_TENANT_ID}).encode())
        forged = f"{header}.{forged_payload.decode().rstrip('=')}.{signature}"
        refused = client.get("/v1.0/organization", headers={"authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
