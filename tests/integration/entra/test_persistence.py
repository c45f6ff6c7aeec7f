"""The simulator keeps its tenant across restarts: a password set and a membership change survive."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import running
from local.tls import TlsFiles


def test_state_survives_a_restart(tmp_path: Path, tls_files: TlsFiles) -> None:
    data = tmp_path / "entra"
    with running(data_dir=data, log_path=tmp_path / "entra.log") as sim:
        context = tls_files.client_context()
        token = httpx.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=context, data={
            "grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID,
            "client_secret": BRIDGE_CLIENT_SECRET, "scope": "https://graph.microsoft.com/.default"}).json()
        headers = {"authorization": f"Bearer {token['access_token']}"}
        user = httpx.get(f"{sim.url}/v1.0/users", params={"$top": "1"}, headers=headers,
                         verify=context).json()["value"][0]["id"]
        httpx.patch(f"{sim.url}/v1.0/users/{user}", headers=headers, verify=context,
                    json={"passwordProfile": {"password": "Kp4#Wz8!Qm2$Rt6v"}}).raise_for_status()
        time.sleep(1.0)  # the tenant is written within half a second of a change
    with running(data_dir=data, log_path=tmp_path / "entra2.log") as again:
        assert again.admin("GET", f"/_sim/users/{user}/password")["password"] == "Kp4#Wz8!Qm2$Rt6v"
