"""Federation against the simulator through the gateway: checks, refusal, forced federation, update,
defederation, each audited."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.entra.demo import DEMO_DOMAIN
from shared.adapters.graph import GraphGateway
from shared.config import Connection
from shared.domain.federation import IdpInputs
from shared.errors import Conflict
from shared.services.federation import FederationService
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


async def test_check_refuse_force_update_and_defederate(entra: EntraFixture, tls_files: Any) -> None:
    conn = Connection.model_validate({"name": "demo", "tenantId": entra.tenant_id, "cloud": "local",
                                      "features": {"federation": {"enabled": True}}})
    credential = ClientSecretCredential(entra.tenant_id, entra.client_id, entra.client_secret, authority=entra.url,
                                        connection_verify=str(tls_files.ca))
    graph = GraphGateway(connection="demo", tenant_id=entra.tenant_id, credential=credential, graph_base=entra.url,
                         scope="https://graph.microsoft.com/.default", verify=tls_files.client_context())
    audit = FakeAuditSink()
    service = FederationService(audit=audit, clock=FakeClock(dt.datetime.now(dt.UTC)))
    inputs = IdpInputs("https://idp.example/entity", "https://idp.example/sso", idp_certificate(), "Example IdP")
    try:
        initial = {c.name: c.status for c in await service.compatibility(
            conn, graph, "contosodemo.onmicrosoft.com", None)}
        assert initial["not the initial domain"] == "fail"
        checks = {c.name: c for c in await service.compatibility(conn, graph, DEMO_DOMAIN, inputs)}
        assert checks["no admins on the domain"].status == "fail"
        assert "ben.lee1" in checks["no admins on the domain"].detail
        assert checks["not the default domain"].status == "warn"
        assert checks["synced users"].status == "warn"
        assert checks["signing certificate"].status == "pass"
        with pytest.raises(Conflict, match="no admins on the domain"):
            await service.federate(conn, graph, DEMO_DOMAIN, inputs, force_reason=None, actor="t",
                                   correlation_id="c")
        done = await service.federate(conn, graph, DEMO_DOMAIN, inputs, force_reason="admins have cloud accounts",
                                      actor="t", correlation_id="c")
        assert done["authenticationType"] == "Federated"
        assert done["federationConfiguration"]["issuerUri"] == inputs.issuer_uri
        assert audit.records[-1].detail["forcedPast"] == ["no admins on the domain"]
        newer = IdpInputs(inputs.issuer_uri, inputs.passive_sign_in_uri, idp_certificate(20), "Example IdP")
        await service.federate(conn, graph, DEMO_DOMAIN, newer, force_reason="certificate rollover test",
                               actor="t", correlation_id="c")
        assert audit.records[-1].detail["updated"] is True
        removed = await service.defederate(conn, graph, DEMO_DOMAIN, actor="t", correlation_id="c")
        assert removed["authenticationType"] == "Managed"
        assert "password or a passkey" in removed["note"]
        assert [r.action for r in audit.records] == ["federation.set", "federation.set", "federation.removed"]
    finally:
        await graph.close()
