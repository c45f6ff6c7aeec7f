"""Domain federation: compatibility report, federate, defederate."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from functions.http import ADMIN, Call, Plain, Reply, route
from shared.bootstrap import bridge
from shared.domain.federation import IdpInputs, failures
from shared.services.federation import FederationService

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class Force(BaseModel):
    """Federate despite failed checks, for a stated reason (audited)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=10, max_length=500)]


class FederationBody(BaseModel):
    """Body of PUT .../federation: the IdP's values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    issuer_uri: Annotated[str, Field(alias="issuerUri", min_length=1, max_length=1000)]
    passive_sign_in_uri: Annotated[str, Field(alias="passiveSignInUri", min_length=1, max_length=1000)]
    signing_certificate: Annotated[str, Field(alias="signingCertificate", min_length=1, max_length=20000)]
    display_name: Annotated[str, Field(alias="displayName", max_length=256)] = ""
    sign_out_uri: Annotated[str | None, Field(alias="signOutUri", max_length=1000)] = None
    preferred_authentication_protocol: Annotated[str, Field(alias="preferredAuthenticationProtocol",
                                                            pattern="^(wsFed|saml)$")] = "wsFed"
    force: Force | None = None

    def inputs(self) -> IdpInputs:
        """The IdP inputs of the domain rules."""
        return IdpInputs(self.issuer_uri, self.passive_sign_in_uri, self.signing_certificate, self.display_name,
                         self.sign_out_uri, self.preferred_authentication_protocol)


def _service() -> FederationService:
    app = bridge()
    return FederationService(audit=app.audit, clock=app.clock)


@route(bp, "connections/{c}/domains/{domain}/federation/compatibility", "GET", roles=[ADMIN])
async def federation_compatibility(call: Plain) -> Reply:
    """Checks for federating the domain; pass issuerUri, passiveSignInUri and signingCertificate to check them."""
    app = bridge()
    conn = app.connection(call.params["c"])
    inputs = None
    if call.query.get("issuerUri") or call.query.get("signingCertificate"):
        inputs = IdpInputs(call.query.get("issuerUri", ""), call.query.get("passiveSignInUri", ""),
                           call.query.get("signingCertificate", ""))
    checks = await _service().compatibility(conn, await app.graph(conn), call.params["domain"].lower(), inputs)
    return Reply(200, {"domain": call.params["domain"].lower(), "compatible": not failures(checks),
                       "checks": [asdict(c) for c in checks]})


@route(bp, "connections/{c}/domains/{domain}/federation", "PUT", roles=[ADMIN], body=FederationBody)
async def federate_domain(call: Call[FederationBody]) -> Reply:
    """Federate (or update the federation of) a domain, refused while checks fail unless forced."""
    app = bridge()
    conn = app.connection(call.params["c"])
    body = call.parsed
    result = await _service().federate(conn, await app.graph(conn), call.params["domain"].lower(), body.inputs(),
                                       force_reason=body.force.reason if body.force else None, actor=call.actor,
                                       correlation_id=call.correlation_id)
    return Reply(200, result)


@route(bp, "connections/{c}/domains/{domain}/federation", "DELETE", roles=[ADMIN])
async def defederate_domain(call: Plain) -> Reply:
    """Defederate a domain: its users sign in with Entra again."""
    app = bridge()
    conn = app.connection(call.params["c"])
    return Reply(200, await _service().defederate(conn, await app.graph(conn), call.params["domain"].lower(),
                                                  actor=call.actor, correlation_id=call.correlation_id))
