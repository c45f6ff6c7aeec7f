"""The simulator's command line: `generate` writes deterministic tenants, `serve --tenant FILE --faults JSON`
serves one with faults from the start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import running
from local.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[3]


def generate(out: Path, *, users: int, seed: int) -> str:
    done = subprocess.run([sys.executable, "-m", "local.entra", "generate", "--users", str(users), "--groups", "3",
                           "--depth", "2", "--seed", str(seed), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout


def test_generate_is_deterministic_and_serve_takes_the_file_and_faults(tmp_path: Path, tls_files: TlsFiles) -> None:
    first, again, other = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert f"wrote {first}: 120 users" in generate(first, users=120, seed=5)
    generate(again, users=120, seed=5)
    generate(other, users=120, seed=6)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    tenant = json.loads(first.read_text())
    assert len(tenant["users"]) == 120
    # three sync trees of two levels, the root sync group and the rotation group
    assert len(tenant["groups"]) == 3 * 2 + 2
    faults = {"routes": [{"path": "^/organization$", "errorRate": 1}], "seed": 1}
    with running(data_dir=tmp_path / "data", log_path=tmp_path / "entra.log", tenant=str(first),
                 faults=faults) as sim:
        assert sim.tenant_id == tenant["tenantId"]
        shown = sim.admin("GET", "/_sim/faults")
        assert shown["routes"] == [{"path": "^/organization$", "method": None, "errorRate": 1.0}]
        context = tls_files.client_context()
        token = httpx.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=context, data={
            "grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID, "client_secret": BRIDGE_CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        headers = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{sim.url}/v1.0/organization", headers=headers, verify=context).status_code == 503
        users = httpx.get(f"{sim.url}/v1.0/users", params={"$top": "999"}, headers=headers, verify=context).json()
        assert len(users["value"]) == 120
