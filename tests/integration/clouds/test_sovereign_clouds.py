"""US Government and China end to end in configuration: every URL the bridge sends to Graph, and every
reference it binds, is on the connection's cloud, and storage endpoints carry the cloud's suffix.

The Entra simulator is served in-process under the cloud's Graph host (it answers on whatever host it
is reached at, and refuses references to another cloud's Graph); the bridge is built by the
composition root from app settings, with only its HTTP client pointed at the simulator and its
credential issuing the simulator's tokens.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from azure.core.credentials import AccessToken
from msgraph_core import GraphClientFactory

from local.entra.demo import IDENTITY_CLIENT_ID
from shared import bootstrap
from shared.adapters import identity
from shared.adapters.graph import gateway as graph_adapter
from shared.config import Cloud, Connection, Settings, cloud_profile, load_settings
from shared.errors import Configuration
from tests.fakes import FakeClock, FakeSecretStore
from tests.fixtures.entra import InProcessEntra

CLOUDS = [Cloud.USGOV, Cloud.CHINA]


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the in-process simulator and keeps every request the bridge sent."""

    inner: httpx.AsyncBaseTransport
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, str(request.url), body))
        return await self.inner.handle_async_request(request)


class SimulatorToken:
    """A credential that asks for the cloud's Graph scope and gets the simulator's token."""

    def __init__(self, entra: InProcessEntra) -> None:
        self._entra = entra
        self.scopes: set[str] = set()

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.update(scopes)
        return AccessToken(self._entra.token(IDENTITY_CLIENT_ID), 2**31)

    async def close(self) -> None:
        return None


def _references(body: Any) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if key.endswith("@odata.bind"):
                yield from value if isinstance(value, list) else [value]
            elif key == "@odata.id":
                yield value
            else:
                yield from _references(value)
    elif isinstance(body, list):
        for item in body:
            yield from _references(item)


def _connection(entra: InProcessEntra, cloud: Cloud) -> dict[str, Any]:
    return {"name": f"gov{uuid.uuid4().hex[:6]}", "tenantId": entra.sim.tenant.tenantId, "cloud": cloud.value,
            "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                         "rotation": {"enabled": True, "group": "Bridge Rotation"},
                         "passkeys": {"enabled": True}}}


@pytest.mark.parametrize("cloud", CLOUDS)
async def test_every_graph_url_and_reference_stays_in_the_connections_cloud(
        cloud: Cloud, entra_inprocess: InProcessEntra, azurite_connection_string: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    profile = cloud_profile(cloud)
    host = urlsplit(profile.graph).hostname
    recorder = Recorder(httpx.ASGITransport(app=entra_inprocess.sim.app))
    credential = SimulatorToken(entra_inprocess)

    def http_client(verify: Any = True, *, timeout: float = 60.0) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=recorder, timeout=timeout)
        return GraphClientFactory.create_with_default_middleware(client=client)  # type: ignore[no-any-return]

    async def connection_credential(conn: Connection, settings: Settings, secrets: Any) -> SimulatorToken:
        return credential

    monkeypatch.setattr(graph_adapter, "graph_http_client", http_client)
    monkeypatch.setattr(identity, "connection_credential", connection_credential)
    document = _connection(entra_inprocess, cloud)
    monkeypatch.setenv("CONNECTIONS", json.dumps([document]))
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    for name in ("KEY_VAULT_URL", "CONNECTIONS_FILE", "DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    # The audit trail's key and anchors: a vault in memory (this test is about Graph's URLs).
    vault = FakeSecretStore(FakeClock())
    monkeypatch.setattr(bootstrap.Bridge, "secrets", property(lambda self: vault))
    bridge = bootstrap.Bridge(load_settings())
    conn = bridge.connection(document["name"])
    try:
        # Sync: transitive reads, delta links followed, enrollment groups created and filled by reference.
        report = await bridge.sync.run(conn, await bridge.directory_reader(conn), run_id="gov",
                                       correlation_id="gov")
        assert report.outcome == "completed", report.alert
        assert report.added > 0
        # Rotation's and passkeys' Graph side, on the same gateway.
        rotation_group = await (await bridge.directory_reader(conn)).group_id("Bridge Rotation")
        members = await (await bridge.directory_reader(conn)).member_ids(rotation_group)
        user = sorted(members)[0]
        passwords = await bridge.password_directory(conn)
        await passwords.admin_roles(user)
        await passwords.reset(user, "Aa1!" + uuid.uuid4().hex)
        passkeys = await bridge.passkey_directory(conn)
        await passkeys.policy()
        await passkeys.creation_options(user)
    finally:
        await bridge.close()

    urls = [url for _, url, _ in recorder.sent]
    assert urls, "the bridge sent nothing"
    assert {(urlsplit(u).scheme, urlsplit(u).hostname) for u in urls} == {("https", host)}
    assert any("deltatoken" in u or "skiptoken" in u for u in urls), "no delta link was followed"
    paths = {urlsplit(u).path for u in urls}
    assert f"/v1.0/users/{user}" in paths  # the password reset
    # msgraph-sdk writes the function call with its parentheses.
    assert any(p.endswith(("/fido2Methods/creationOptions", "/fido2Methods/creationOptions()")) for p in paths), paths
    references = [ref for _, _, body in recorder.sent for ref in _references(body)]
    assert references, "no members were bound by reference"
    assert all(ref.startswith(f"https://{host}/v1.0/directoryObjects/") for ref in references), references
    assert credential.scopes == {profile.graph_scope}


async def test_the_simulator_refuses_a_reference_to_another_clouds_graph(entra_inprocess: InProcessEntra) -> None:
    sim = entra_inprocess.sim
    group = next(g for g in sim.tenant.groups.values() if g.displayName == "Marketing")
    user = next(iter(sim.tenant.users))
    headers = {**entra_inprocess.headers(IDENTITY_CLIENT_ID), "content-type": "application/json"}
    for own, foreign in (("graph.microsoft.us", "graph.microsoft.com"),
                         ("microsoftgraph.chinacloudapi.cn", "graph.microsoft.us")):
        body = {"members@odata.bind": [f"https://{foreign}/v1.0/directoryObjects/{user}"]}
        answer = await entra_inprocess.client.patch(f"https://{own}/v1.0/groups/{group.id}", json=body,
                                                    headers=headers)
        assert answer.status_code == 400, answer.text
    body = {"members@odata.bind": [f"https://graph.microsoft.us/v1.0/directoryObjects/{user}"]}
    answer = await entra_inprocess.client.patch(f"https://graph.microsoft.us/v1.0/groups/{group.id}", json=body,
                                                headers=headers)
    assert answer.status_code == 204, answer.text


@pytest.mark.parametrize(("cloud", "suffix"), [(Cloud.GLOBAL, "core.windows.net"),
                                               (Cloud.USGOV, "core.usgovcloudapi.net"),
                                               (Cloud.CHINA, "core.chinacloudapi.cn")])
def test_storage_endpoints_carry_the_clouds_suffix(monkeypatch: pytest.MonkeyPatch, cloud: Cloud,
                                                   suffix: str) -> None:
    tenant = "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri",
                 "CONNECTIONS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "stbridge")
    monkeypatch.setenv("CONNECTIONS", json.dumps([{"name": "main", "tenantId": tenant, "cloud": cloud.value}]))
    bridge = bootstrap.Bridge(load_settings())
    assert bridge.storage_url("table") == f"https://stbridge.table.{suffix}"
    assert bridge.storage_url("queue") == f"https://stbridge.queue.{suffix}"

    # The deployment's identity-based settings win: they come from the account itself.
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", f"https://stbridge.table.{suffix}/")
    monkeypatch.setenv("AzureWebJobsStorage__queueServiceUri", "https://queues.contoso.example/")
    bridge = bootstrap.Bridge(load_settings())
    assert bridge.storage_url("table") == f"https://stbridge.table.{suffix}"
    assert bridge.storage_url("queue") == "https://queues.contoso.example"


def test_connections_in_two_clouds_need_the_storage_endpoints_named(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
    for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri",
                 "CONNECTIONS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "stbridge")
    monkeypatch.setenv("CONNECTIONS", json.dumps([{"name": "a", "tenantId": tenant, "cloud": "usgov"},
                                                  {"name": "b", "tenantId": tenant, "cloud": "global"}]))
    with pytest.raises(Configuration) as caught:
        bootstrap.Bridge(load_settings()).storage_url("table")
    assert caught.value.setting == "AzureWebJobsStorage__tableServiceUri"


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("kind", ["clientSecret", "certificate"])
async def test_app_registrations_sign_in_at_the_clouds_authority(monkeypatch: pytest.MonkeyPatch, cloud: Cloud,
                                                                 kind: str) -> None:
    made: dict[str, Any] = {}

    def recorder(*args: Any, **kwargs: Any) -> str:
        made.update(kwargs)
        return "credential"

    class Vault:
        async def get(self, name: str) -> Any:
            return type("Secret", (), {"value": "not-a-real-secret"})()

    monkeypatch.setattr(identity, "ClientSecretCredential", recorder)
    monkeypatch.setattr(identity, "CertificateCredential", recorder)
    auth = ({"kind": "clientSecret", "clientId": "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d", "secretName": "app-secret"}
            if kind == "clientSecret" else
            {"kind": "certificate", "clientId": "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d", "certificateSecretName": "pem"})
    conn = Connection.model_validate({"name": "gov", "tenantId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
                                      "cloud": cloud.value, "auth": auth})
    assert await identity.connection_credential(conn, load_settings(), Vault()) == "credential"  # type: ignore[arg-type]
    assert made["authority"] == cloud_profile(cloud).authority
