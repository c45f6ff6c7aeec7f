"""A simulator per module with the bridge's app allowed to change the FIDO2 policy, and a Graph client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, GRAPH_PERMISSIONS
from local.entra.process import RunningEntra, running
from local.tls import TlsFiles
from tests.conformance.entra_fido2.graph_calls import POLICY, POLICY_TYPE


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest, tls_files: TlsFiles, run_dir: Path) -> Iterator[RunningEntra]:
    """A simulator of this module's own."""
    name = request.module.__name__.rpartition(".")[2]
    with running(data_dir=run_dir / f"entra-fido2-{name}", log_path=run_dir / f"entra-fido2-{name}.log",
                 limits=False) as found:
        # The policy PATCH needs Policy.ReadWrite.AuthenticationMethod, which the bridge never asks for.
        found.admin("PATCH", f"/_sim/apps/{BRIDGE_CLIENT_ID}",
                    {"graphRoles": [*GRAPH_PERMISSIONS, "Policy.ReadWrite.AuthenticationMethod"]})
        yield found


@pytest.fixture(scope="module")
def graph(sim: RunningEntra, tls_files: TlsFiles) -> Iterator[httpx.Client]:
    token = httpx.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=tls_files.client_context(), data={
        "grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID, "client_secret": BRIDGE_CLIENT_SECRET,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    with httpx.Client(base_url=sim.url, verify=tls_files.client_context(),
                      headers={"authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture(scope="module")
def users(graph: httpx.Client) -> list[str]:
    return [u["id"] for u in graph.get("/v1.0/users", params={"$top": "3", "$select": "id"}).json()["value"]]


@pytest.fixture
def policy(graph: httpx.Client) -> Iterator[dict[str, Any]]:
    """The policy as the test found it; restored afterwards."""
    before = graph.get(f"/v1.0{POLICY}").json()
    yield before
    restore = {k: before[k] for k in ("state", "isSelfServiceRegistrationAllowed", "isAttestationEnforced",
                                      "keyRestrictions", "includeTargets", "excludeTargets")}
    assert graph.patch(f"/v1.0{POLICY}", json={"@odata.type": POLICY_TYPE, **restore}).status_code == 204
