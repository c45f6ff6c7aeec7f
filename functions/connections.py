"""Connection checks: test a connection, validate a certificate credential."""

from __future__ import annotations

from typing import Annotated

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from functions.http import ADMIN, Plain, Reply, route
from shared import logs
from shared.bootstrap import bridge
from shared.config import CertificateAuth
from shared.domain import certificates
from shared.errors import InvalidInput
from shared.services.connections import ConnectionTester

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@route(bp, "connections/{c}/test", "POST", roles=[ADMIN])
async def test_connection(call: Plain) -> Reply:
    """Token, one read, and the per-feature permission and role report with remediation."""
    app = bridge()
    conn = app.connection(call.params["c"])
    gateway = await app.graph(conn)
    report = await ConnectionTester(gateway, gateway.token_claims).test(conn)
    return Reply(200, report.as_json())


class CertificateBody(BaseModel):
    """Optional body of certificate/validate: a PEM to check instead of the configured secret."""

    model_config = ConfigDict(extra="forbid")

    pem: Annotated[str | None, Field(max_length=32768)] = None


@route(bp, "connections/{c}/certificate/validate", "POST", roles=[ADMIN])
async def validate_certificate(call: Plain) -> Reply:
    """Check the configured (or a supplied) PEM certificate and key: match, validity, key type, thumbprints."""
    app = bridge()
    conn = app.connection(call.params["c"])
    raw = call.request.get_body() or b""
    if raw.strip():
        try:
            pem = CertificateBody.model_validate_json(raw).pem
        except ValueError as exc:
            raise InvalidInput(f"body must be {{\"pem\": \"-----BEGIN CERTIFICATE-----...\"}}: {exc}",
                               field="pem") from None
    else:
        pem = None
    if pem is None:
        if not isinstance(conn.auth, CertificateAuth):
            raise InvalidInput(f"connection {conn.name!r} does not use certificate auth; send {{\"pem\": ...}}",
                               field="pem")
        pem = (await app.secrets.get(conn.auth.certificate_secret_name)).value or ""
    logs.register_secret(pem)
    report = certificates.validate(pem, now=app.clock.now())
    body = {"ok": report.ok, "subject": report.subject, "thumbprintSha1": report.thumbprint_sha1,
            "thumbprintSha256": report.thumbprint_sha256, "x5t": report.x5t, "notBefore": report.not_before,
            "notAfter": report.not_after,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in report.checks]}
    return Reply(200 if report.ok else 422, body)


