"""The Graph gateway against the simulator: throttling shared across instances, faults, paging, dry-run,
the certificate credential, and the connection report."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from azure.identity import CertificateCredential as SyncCertificateCredential
from azure.identity.aio import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.entra.demo import GRAPH_PERMISSIONS
from local.servers import ROOT
from shared.adapters.graph import GraphGateway, ThrottleGovernor
from shared.adapters.graph.organization import GraphOrganization
from shared.adapters.tables import TableEntityStore
from shared.config import Connection
from shared.errors import Stop
from shared.services.connections import ConnectionTester
from shared.services.ports import BatchItem
from tests.fixtures.entra import EntraFixture

GRAPH = "https://graph.microsoft.com/.default"


def make_gateway(entra: EntraFixture, tls: Any, credential: Any = None, **options: Any) -> GraphGateway:
    credential = credential or ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret,
                                                      authority=entra.url, connection_verify=str(tls.ca))
    return GraphGateway(connection="demo", tenant_id=entra.tenant_id, credential=credential, graph_base=entra.url,
                        scope=GRAPH, verify=tls.client_context(), **options)


@pytest.fixture
def faults(entra: EntraFixture) -> Iterator[Any]:
    def set_faults(**values: float) -> None:
        entra.admin("PUT", "/_sim/faults", {"seed": 3, **values})
    yield set_faults
    entra.admin("PUT", "/_sim/faults", {"errorRate": 0, "throttleRate": 0, "dropRate": 0, "ambiguousRate": 0,
                                        "latencyMs": 0, "routes": []})


async def test_retries_429_503_and_drops_while_paging_and_still_reads_everything(
        entra: EntraFixture, tls_files: Any, faults: Any) -> None:
    gateway = make_gateway(entra, tls_files)
    try:
        faults(errorRate=0.15, throttleRate=0.3, dropRate=0.1)
        seen = 0
        async for page in gateway.pages("/users", params={"$select": "id", "$top": "25"}):
            seen += len(page["value"])
        assert seen == 300
        assert gateway.throttled > 0
    finally:
        await gateway.close()


async def test_a_page_that_keeps_failing_stops_the_read(entra: EntraFixture, tls_files: Any, faults: Any) -> None:
    gateway = make_gateway(entra, tls_files, max_attempts=2)
    try:
        faults(errorRate=1.0)
        with pytest.raises(Stop, match="failed page"):
            async for _ in gateway.pages("/users"):
                pass
    finally:
        await gateway.close()


async def test_the_token_is_never_sent_to_another_host(entra: EntraFixture, tls_files: Any) -> None:
    # A nextLink (or any absolute address) outside Graph's base is refused before a token is fetched.
    gateway = make_gateway(entra, tls_files)
    try:
        with pytest.raises(Stop, match=r"refusing to send Graph's token to 'elsewhere\.example'"):
            await gateway.get("https://elsewhere.example/v1.0/users")
        assert gateway.sent == 0
    finally:
        await gateway.close()


OTHER_INSTANCE = """
import asyncio, sys
from azure.identity.aio import ClientSecretCredential
from local.tls import ensure_tls
from shared.adapters.graph import GraphGateway, ThrottleGovernor
from shared.adapters.tables import TableEntityStore
from shared.errors import Throttled

async def main(url, tenant, client, secret, storage, principal):
    tls = ensure_tls()
    tables = TableEntityStore.from_connection_string(storage)
    credential = ClientSecretCredential(tenant, client, secret, authority=url, connection_verify=str(tls.ca))
    gateway = GraphGateway(connection="demo", tenant_id=tenant, credential=credential, graph_base=url,
                           scope="https://graph.microsoft.com/.default", verify=tls.client_context(),
                           governor=ThrottleGovernor(tables), max_attempts=8)
    try:
        await gateway.send("PATCH", f"/users/{principal}", body={"accountEnabled": True})
    except Throttled:
        print("throttled", gateway.throttled)
    finally:
        await gateway.close()
        await tables.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_one_processs_429_pauses_writes_in_another(entra: EntraFixture, tls_files: Any,
                                                         store: TableEntityStore, faults: Any,
                                                         azurite_connection_string: str) -> None:
    users = (await entra_users(entra, tls_files))[:2]
    # Another process (another Functions instance) keeps getting 429 on its writes to one user...
    faults(routes=[{"path": f"^/users/{users[0]}$", "method": "PATCH", "throttleRate": 1.0}])
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OTHER_INSTANCE, entra.url, entra.tenant_id, entra.client_id, entra.client_secret,
        azurite_connection_string, users[0], stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    gateway = make_gateway(entra, tls_files, governor=ThrottleGovernor(store), sleep=record_sleep)
    try:
        # ...so once its pause is in the shared table, this process waits before its own write to the
        # tenant, although Graph would have accepted that write (the other user is not throttled).
        deadline = asyncio.get_running_loop().time() + 60
        while not sleeps and asyncio.get_running_loop().time() < deadline:
            until = await ThrottleGovernor(store).pause_until(entra.tenant_id)
            if until is not None and until > dt.datetime.now(dt.UTC):
                await gateway.send("PATCH", f"/users/{users[1]}", body={"accountEnabled": True})
            else:
                await asyncio.sleep(0.1)
        out, _ = await other.communicate()
        assert out.decode().split()[0] == "throttled"
        assert sleeps
        assert 0 < sleeps[0] <= 1.5  # the simulator answers Retry-After: 1
        assert gateway.throttled == 0
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
        await gateway.close()


async def entra_users(entra: EntraFixture, tls: Any) -> list[str]:
    """Ids of some demo users."""
    gateway = make_gateway(entra, tls)
    try:
        return [u["id"] for u in (await gateway.get("/users", params={"$top": "10", "$select": "id"}))["value"]][-3:]
    finally:
        await gateway.close()


async def test_dry_run_sends_no_write(entra: EntraFixture, tls_files: Any) -> None:
    gateway = make_gateway(entra, tls_files, dry_run=True)
    try:
        user = (await gateway.get("/users", params={"$top": "1"}))["value"][0]
        response = await gateway.send("PATCH", f"/users/{user['id']}", body={"displayName": "Changed"})
        assert response.status == 202
        assert (await gateway.get(f"/users/{user['id']}"))["displayName"] != "Changed"
    finally:
        await gateway.close()


def certificate_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=90)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, cert_pem + key_pem


async def test_certificate_credential_end_to_end(entra: EntraFixture, tls_files: Any) -> None:
    cert_pem, bundle = certificate_pem()
    entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"certificates": [cert_pem]})
    credential = CertificateCredential(entra.tenant_id, entra.client_id, certificate_data=bundle.encode(),
                                       authority=entra.url, connection_verify=str(tls_files.ca))
    gateway = make_gateway(entra, tls_files, credential=credential)
    try:
        assert (await gateway.get("/organization"))["value"][0]["displayName"] == "Contoso Demo"
    finally:
        await gateway.close()
    # The sync client signs differently (RS256, x5t); both forms are accepted.
    sync = SyncCertificateCredential(entra.tenant_id, entra.client_id, certificate_data=bundle.encode(),
                                     authority=entra.url, disable_instance_discovery=True,
                                     connection_verify=str(tls_files.ca))
    assert sync.get_token(GRAPH).token


async def test_connection_report_names_missing_permissions_and_roles(entra: EntraFixture, tls_files: Any) -> None:
    conn = Connection.model_validate({"name": "demo", "tenantId": entra.tenant_id, "cloud": "local",
                                      "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                                                   "rotation": {"enabled": True, "group": "Bridge Rotation"},
                                                   "passkeys": {"enabled": True}}})
    reduced = [p for p in GRAPH_PERMISSIONS if p != "User-PasswordProfile.ReadWrite.All"]
    entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"graphRoles": reduced, "directoryRoles": []})
    try:
        gateway = make_gateway(entra, tls_files)
        report = await ConnectionTester(GraphOrganization(gateway), gateway.token_claims).test(conn)
        await gateway.close()
    finally:
        entra.admin("PATCH", f"/_sim/apps/{entra.client_id}", {"graphRoles": GRAPH_PERMISSIONS,
                                                               "directoryRoles": ["User Administrator"]})
    assert not report.ok
    rotation = next(f for f in report.features if f["feature"] == "rotation")
    assert rotation["missing"] == ("User-PasswordProfile.ReadWrite.All",)
    assert rotation["roles_missing"] == ("User Administrator",)
    assert report.read["ok"]
    assert report.tenant_settings["passkeys"]["state"] == "enabled"
    sync = next(f for f in report.features if f["feature"] == "sync")
    assert sync["ok"]


async def test_warm_up_signs_in_and_opens_the_connection_with_one_read(entra: EntraFixture, tls_files: Any) -> None:
    gateway = make_gateway(entra, tls_files)
    try:
        seconds = await gateway.warm_up()
        assert gateway.sent == 1
        assert 0 < seconds < 10
        await gateway.get("/organization")  # the token and the connection are reused
        assert gateway.sent == 2
    finally:
        await gateway.close()


async def test_batch_retries_throttled_items_on_their_own(entra: EntraFixture, tls_files: Any, faults: Any) -> None:
    gateway = make_gateway(entra, tls_files)
    try:
        users = (await gateway.get("/users", params={"$top": "25", "$select": "id"}))["value"]
        faults(throttleRate=0.3)
        items = [BatchItem(id=f"u{n}", method="GET", url=f"/users/{u['id']}?$select=id") for n, u in enumerate(users)]
        results = await gateway.batch(items)
        assert [r.id for r in results] == [i.id for i in items]
        assert {r.status for r in results} == {200}
        assert gateway.throttled > 0
        faults(throttleRate=0.0)
        missing = [BatchItem(id="a", method="GET", url="/users/00000000-0000-0000-0000-000000000000"),
                   BatchItem(id="b", method="GET", url=f"/users/{users[0]['id']}", depends_on="a")]
        a, b = await gateway.batch(missing)
        assert (a.status, b.status) == (404, 424)
    finally:
        await gateway.close()
