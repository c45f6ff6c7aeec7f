"""Connection checks: test a connection, validate a certificate credential."""

from __future__ import annotations

from typing import Annotated

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions import answers
from functions.http import ADMIN, Plain, Reply, route, validation_errors
from shared import logs
from shared.adapters.graph.organization import GraphOrganization
from shared.bootstrap import bridge
from shared.errors import InvalidInput
from shared.services.connections import CertificateRequest, ConnectionTester

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@route(bp, "connections/{c}/test", "POST", roles=[ADMIN], answers={200: answers.ConnectionReport})
async def test_connection(call: Plain) -> Reply:
    """Token, one read, and the per-feature permission and role report with remediation."""
    app = bridge()
    conn = app.connection(call.params["c"])
    gateway = await app.graph(conn)
    report = await ConnectionTester(GraphOrganization(gateway), gateway.token_claims).test(conn)
    return Reply(200, report.as_json())


class CertificateBody(BaseModel):
    """Optional body of certificate/validate: a PEM to check instead of the configured secret."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pem: Annotated[str | None, Field(max_length=32768)] = None
    client_id: Annotated[str | None, Field(alias="clientId", max_length=64)] = None
    obtain_token: Annotated[bool, Field(alias="obtainToken")] = False


def _body(call: Plain) -> CertificateBody:
    raw = call.request.get_body() or b""
    if not raw.strip():
        return CertificateBody()
    try:
        return CertificateBody.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise InvalidInput(f"{errors[0]['field']}: {errors[0]['message']} (body: {{\"pem\": \"-----BEGIN "
                           "CERTIFICATE-----...\", \"clientId\": \"...\", \"obtainToken\": true}, all optional)",
                           field=str(errors[0]["field"]), errors=errors) from None


@route(bp, "connections/{c}/certificate/validate", "POST", roles=[ADMIN], optional_body=CertificateBody,
       answers={200: answers.CertificateReport, 422: answers.CertificateReport})
async def validate_certificate(call: Plain) -> Reply:
    """Check the configured (or a supplied) PEM certificate and key: match, validity, key, thumbprints, token."""
    app = bridge()
    conn = app.connection(call.params["c"])
    body = _body(call)
    if body.pem:
        logs.register_secret(body.pem)
    ok, report = await app.certificate_validator.validate(conn, CertificateRequest(
        pem=body.pem, client_id=body.client_id, obtain_token=body.obtain_token))
    return Reply(200 if ok else 422, report)
