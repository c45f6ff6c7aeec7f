"""Federation against the simulator through the gateway, with IdP metadata served over local HTTPS:
checks, refusal, forced federation, metadata input, update, the certificate watch, defederation."""

from __future__ import annotations

import base64
import datetime as dt
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.entra.demo import DEMO_DOMAIN
from local.servers import free_port
from local.tls import TlsFiles
from shared.adapters import metadata
from shared.adapters.graph import GraphGateway
from shared.adapters.graph.domains import GraphDomainDirectory
from shared.adapters.metadata import HttpsMetadataSource
from shared.config import Connection
from shared.domain.federation import IdpInputs
from shared.errors import Conflict, InvalidInput, Transient
from shared.services.federation import FederationService, IdpRequest
from tests.fake_repositories import FakeFederationWatch
from tests.fakes import FakeAuditSink, FakeClock
from tests.fixtures.entra import EntraFixture

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def idp_certificate(days: int = 365, *, starts: int = -1, now: dt.datetime | None = None) -> str:
    """A self-signed IdP signing certificate (base64 DER) valid from `starts` to `days` days from now."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = now or dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=starts))
            .not_valid_after(now + dt.timedelta(days=days)).sign(_KEY, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def as_dict(inputs: IdpInputs) -> dict[str, Any]:
    """Explicit values as the service takes them."""
    return {k: v for k, v in vars(inputs).items() if v is not None}


@dataclass
class MetadataServer:
    """An IdP's metadata endpoint on 127.0.0.1 over the local CA's certificate."""

    port: int
    documents: dict[str, bytes] = field(default_factory=dict)
    delay: float = 0.0
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def metadata_server(tls_files: TlsFiles) -> Iterator[MetadataServer]:
    server_state = MetadataServer(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(server_state.delay)
            server_state.hosts.append(str(self.headers.get("host")))
            if self.path.startswith("/redirect-to/"):
                self.send_response(302)
                self.send_header("location", self.path[len("/redirect-to/"):])
                self.end_headers()
                return
            if self.path == "/redirect-http":
                self.send_response(302)
                self.send_header("location", f"http://127.0.0.1:{server_state.port}/x")
                self.end_headers()
                return
            body = server_state.documents.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("content-type", "application/samlmetadata+xml")
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", server_state.port), Handler)
    context = tls_files.server_context()
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
async def graph(entra: EntraFixture, tls_files: TlsFiles) -> AsyncIterator[GraphGateway]:
    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    gateway = GraphGateway(connection="demo", tenant_id=entra.tenant_id, credential=credential, graph_base=entra.url,
                           scope="https://graph.microsoft.com/.default", verify=tls_files.client_context())
    try:
        yield gateway
    finally:
        await gateway.close()
        await credential.close()


CONN = Connection.model_validate({"name": "demo", "tenantId": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
                                  "cloud": "local", "features": {"federation": {"enabled": True}}})


def service_for(tls_files: TlsFiles, clock: FakeClock, audit: FakeAuditSink,
                watched: FakeFederationWatch | None = None) -> FederationService:
    return FederationService(audit=audit, clock=clock, watched=watched or FakeFederationWatch(),
                             metadata=HttpsMetadataSource(verify=tls_files.client_context(), timeout=2.0,
                                                                  private_addresses=True))


async def test_check_refuse_force_update_and_defederate(graph: GraphGateway, tls_files: TlsFiles) -> None:
    directory = GraphDomainDirectory(graph, claims=graph.token_claims)
    audit = FakeAuditSink()
    service = service_for(tls_files, FakeClock(dt.datetime.now(dt.UTC)), audit)
    inputs = IdpInputs("https://idp.example/entity", "https://idp.example/sso", idp_certificate(), "Example IdP")
    request = IdpRequest(given=as_dict(inputs))
    initial, _ = await service.compatibility(CONN, directory, "contosodemo.onmicrosoft.com")
    assert {c.name: c.status for c in initial}["not the initial domain"] == "fail"
    found, _ = await service.compatibility(CONN, directory, DEMO_DOMAIN, request)
    checks = {c.name: c for c in found}
    assert checks["no admins on the domain"].status == "fail"
    assert "ben.lee1" in checks["no admins on the domain"].detail
    assert checks["not the default domain"].status == "warn"
    assert checks["synced users"].status == "warn"
    assert checks["signing certificate"].status == "pass"
    assert checks["app permission"].status == "pass"
    assert checks["app-only limitation"].status == "warn"
    with pytest.raises(Conflict, match="no admins on the domain"):
        await service.federate(CONN, directory, DEMO_DOMAIN, request, force_reason=None, actor="t", correlation_id="c")
    done = await service.federate(CONN, directory, DEMO_DOMAIN, request, force_reason="admins have cloud accounts",
                                  actor="t", correlation_id="c")
    try:
        assert done["authenticationType"] == "Federated"
        assert done["federationConfiguration"]["issuerUri"] == inputs.issuer_uri
        assert audit.records[-1].detail["forcedPast"] == ["no admins on the domain"]
        assert inputs.signing_certificate not in str(audit.records[-1].detail)
        newer = IdpRequest(given=as_dict(IdpInputs(inputs.issuer_uri, inputs.passive_sign_in_uri,
                                                   idp_certificate(20), "Example IdP")))
        await service.federate(CONN, directory, DEMO_DOMAIN, newer, force_reason="certificate rollover test",
                               actor="t", correlation_id="c")
        assert audit.records[-1].detail["updated"] is True
    finally:
        removed = await service.defederate(CONN, directory, DEMO_DOMAIN, actor="t", correlation_id="c")
    assert removed["authenticationType"] == "Managed"
    assert "password or a passkey" in removed["note"]
    assert [r.action for r in audit.records] == ["federation.set", "federation.set", "federation.removed"]
    with pytest.raises(Conflict, match="not federated"):
        await service.defederate(CONN, directory, DEMO_DOMAIN, actor="t", correlation_id="c")


async def test_federate_from_metadata_then_watch_rollover_and_alerts(
        graph: GraphGateway, tls_files: TlsFiles, metadata_server: MetadataServer) -> None:
    from tests.unit.test_federation_metadata import metadata_xml

    now = dt.datetime.now(dt.UTC)
    directory = GraphDomainDirectory(graph, claims=graph.token_claims)
    audit, clock, watched = FakeAuditSink(), FakeClock(now), FakeFederationWatch()
    service = service_for(tls_files, clock, audit, watched)
    current, upcoming = idp_certificate(40), idp_certificate(400, starts=30)
    issuer = "http://idp.example/adfs/services/trust"
    metadata_server.documents["/FederationMetadata.xml"] = metadata_xml(issuer, [current]).encode()
    request = IdpRequest(given={"display_name": "Example"}, metadata_url=metadata_server.url("/FederationMetadata.xml"))
    checks, resolved = await service.compatibility(CONN, directory, DEMO_DOMAIN, request)
    assert resolved.inputs is not None
    assert resolved.inputs.issuer_uri == issuer
    assert {c.name: c.status for c in checks}["metadata signing certificate"] == "pass"
    await service.federate(CONN, directory, DEMO_DOMAIN, request, force_reason="the demo admin has a cloud account",
                           actor="t", correlation_id="c")
    try:
        # the IdP publishes its next certificate: it becomes nextSigningCertificate
        metadata_server.documents["/FederationMetadata.xml"] = metadata_xml(issuer, [current, upcoming]).encode()
        [watched] = await service.watch(CONN, directory, correlation_id="w")
        config = await directory.federation(DEMO_DOMAIN)
        assert config is not None
        assert config["nextSigningCertificate"] == upcoming
        assert audit.actions()[-1] == "federation.certificate.rollover"
        assert "problem" not in watched
        # 30 days before expiry: one alert, not repeated the next day
        clock.current = now + dt.timedelta(days=11)
        await service.watch(CONN, directory, correlation_id="w")
        clock.current = now + dt.timedelta(days=12)
        await service.watch(CONN, directory, correlation_id="w")
        alerts = [r for r in audit.records if r.action == "federation.certificate.expiring"]
        assert [a.outcome for a in alerts] == ["30d"]
        # the IdP switches: the next certificate is promoted and the alert state follows the new certificate
        metadata_server.documents["/FederationMetadata.xml"] = metadata_xml(issuer, [upcoming]).encode()
        clock.current = now + dt.timedelta(days=34)
        await service.watch(CONN, directory, correlation_id="w")
        config = await directory.federation(DEMO_DOMAIN)
        assert config is not None
        assert config["signingCertificate"] == upcoming
        assert not config.get("nextSigningCertificate")
        assert [r.action for r in audit.records].count("federation.certificate.expiring") == 1
        status = await service.watch_status("demo")
        assert status[0]["domain"] == DEMO_DOMAIN
        assert "problem" not in status[0]
        # the IdP is unreachable: the watch reports it and keeps going
        metadata_server.documents.clear()
        [watched] = await service.watch(CONN, directory, correlation_id="w")
        assert "404" in watched["problem"]
    finally:
        await service.defederate(CONN, directory, DEMO_DOMAIN, actor="t", correlation_id="c")
    assert await service.watch_status("demo") == []


async def test_metadata_fetch_limits(tls_files: TlsFiles, metadata_server: MetadataServer) -> None:
    source = HttpsMetadataSource(verify=tls_files.client_context(), max_bytes=1000, timeout=0.5,
                                 private_addresses=True)
    metadata_server.documents["/big"] = b"<x>" + b" " * 2000 + b"</x>"
    metadata_server.documents["/ok"] = b"<x/>"
    assert await source.fetch(metadata_server.url("/ok")) == b"<x/>"
    with pytest.raises(InvalidInput, match="at most 1000"):
        await source.fetch(metadata_server.url("/big"))
    with pytest.raises(InvalidInput, match="https"):
        await source.fetch(f"http://127.0.0.1:{metadata_server.port}/ok")
    with pytest.raises(InvalidInput, match="non-https"):
        await source.fetch(metadata_server.url("/redirect-http"))
    with pytest.raises(Transient, match="cannot be fetched"):
        await HttpsMetadataSource(verify=ssl.create_default_context(), private_addresses=True).fetch(
            metadata_server.url("/ok"))
    metadata_server.delay = 1.0
    with pytest.raises(Transient, match="did not arrive"):
        await source.fetch(metadata_server.url("/ok"))


async def test_outside_the_local_cloud_the_checked_address_is_fetched_with_the_name_kept_for_tls(
        tls_files: TlsFiles, metadata_server: MetadataServer, monkeypatch: pytest.MonkeyPatch) -> None:
    metadata_server.documents["/ok"] = b"<x/>"
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"localhost": ["127.0.0.1"], "inside.example": ["10.1.2.3"]}[host]

    # Loopback stands in for a public address here: the test's IdP can only listen on 127.0.0.1.
    checked = metadata.refusal
    monkeypatch.setattr(metadata, "refusal", lambda a: None if str(a) == "127.0.0.1" else checked(a))
    source = HttpsMetadataSource(verify=tls_files.client_context(), timeout=2.0, resolver=resolver)
    port = metadata_server.port
    # The certificate names localhost: TLS is verified against the name while the socket goes to the address.
    assert await source.fetch(f"https://localhost:{port}/ok") == b"<x/>"
    assert metadata_server.hosts[-1] == f"localhost:{port}"
    assert asked == ["localhost"]
    # A redirect is checked like the first hop: to a private address it is refused, before any request.
    served = len(metadata_server.hosts)
    with pytest.raises(InvalidInput, match=re.escape("10.1.2.3, a private address")) as refused:
        await source.fetch(f"https://localhost:{port}/redirect-to/https://inside.example/FederationMetadata.xml")
    assert refused.value.field == "metadataUrl"
    assert len(metadata_server.hosts) == served + 1
    # Without the local cloud, the test IdP's own address is refused.
    monkeypatch.setattr(metadata, "refusal", checked)
    with pytest.raises(InvalidInput, match="loopback"):
        await HttpsMetadataSource(verify=tls_files.client_context()).fetch(metadata_server.url("/ok"))
