"""Domain federation: compatibility report, federate, defederate, and the certificate monitor."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from typing import Annotated, Any, Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, model_validator

from functions import answers
from functions.http import ADMIN, Call, Plain, Reply, route
from functions.work import job
from shared import logs
from shared.adapters.graph.domains import GraphDomainDirectory
from shared.adapters.identity import ssl_context
from shared.adapters.metadata import HttpsMetadataSource
from shared.bootstrap import Bridge, bridge
from shared.config import Cloud, Connection
from shared.domain.federation import failures
from shared.services.federation import FederationService, IdpRequest

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)

Uri = Annotated[str, Field(min_length=1, max_length=1000)]
Certificate = Annotated[str, Field(min_length=1, max_length=20000)]


class Force(BaseModel):
    """Federate despite failed checks, for a stated reason (audited)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=10, max_length=500)]


class FederationBody(BaseModel):
    """Body of PUT .../federation: internalDomainFederation's members, IdP metadata, or both."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metadata_url: Annotated[Uri | None, Field(alias="metadataUrl", pattern="^https://")] = None
    metadata_xml: Annotated[str | None, Field(alias="metadataXml", min_length=1, max_length=1024 * 1024)] = None
    issuer_uri: Annotated[Uri | None, Field(alias="issuerUri")] = None
    passive_sign_in_uri: Annotated[Uri | None, Field(alias="passiveSignInUri")] = None
    signing_certificate: Annotated[Certificate | None, Field(alias="signingCertificate")] = None
    next_signing_certificate: Annotated[Certificate | None, Field(alias="nextSigningCertificate")] = None
    display_name: Annotated[str | None, Field(alias="displayName", max_length=256)] = None
    sign_out_uri: Annotated[Uri | None, Field(alias="signOutUri")] = None
    active_sign_in_uri: Annotated[Uri | None, Field(alias="activeSignInUri")] = None
    metadata_exchange_uri: Annotated[Uri | None, Field(alias="metadataExchangeUri")] = None
    preferred_authentication_protocol: Annotated[Literal["wsFed", "saml"] | None,
                                                 Field(alias="preferredAuthenticationProtocol")] = None
    federated_idp_mfa_behavior: Annotated[Literal["acceptIfMfaDoneByFederatedIdp", "enforceMfaByFederatedIdp",
                                                  "rejectMfaByFederatedIdp"] | None,
                                          Field(alias="federatedIdpMfaBehavior")] = None
    prompt_login_behavior: Annotated[Literal["translateToFreshPasswordAuthentication", "nativeSupport",
                                             "disabled"] | None, Field(alias="promptLoginBehavior")] = None
    is_signed_authentication_request_required: Annotated[bool | None, Field(
        alias="isSignedAuthenticationRequestRequired")] = None
    force: Force | None = None

    @model_validator(mode="after")
    def _one_metadata(self) -> FederationBody:
        if self.metadata_url and self.metadata_xml:
            raise ValueError("give metadataUrl or metadataXml, not both")
        return self

    def request(self) -> IdpRequest:
        """The IdP request of the service."""
        given = self.model_dump(exclude={"metadata_url", "metadata_xml", "force"}, exclude_none=True)
        return IdpRequest(given=given, metadata_url=self.metadata_url, metadata_xml=self.metadata_xml)


_QUERY = {"issuerUri": "issuer_uri", "passiveSignInUri": "passive_sign_in_uri",
          "signingCertificate": "signing_certificate", "nextSigningCertificate": "next_signing_certificate"}


def _service(app: Bridge, conn: Connection) -> FederationService:
    # Metadata from private or loopback addresses only for the local stand-ins (SSRF, docs/federation.md).
    metadata = HttpsMetadataSource(verify=ssl_context(app.settings), private_addresses=conn.cloud is Cloud.LOCAL)
    return FederationService(audit=app.audit, clock=app.clock, entities=app.entities, metadata=metadata)


async def _directory(app: Bridge, conn: Connection) -> GraphDomainDirectory:
    gateway = await app.graph(conn)
    return GraphDomainDirectory(gateway, claims=gateway.token_claims)


@route(bp, "connections/{c}/domains/{domain}/federation/compatibility", "GET", roles=[ADMIN],
       query=answers.CompatibilityQuery, answers={200: answers.Compatibility})
async def federation_compatibility(call: Plain) -> Reply:
    """Checks for federating the domain; IdP values or metadataUrl in the query are checked too."""
    app = bridge()
    conn = app.connection(call.params["c"])
    given = {field: call.query[name] for name, field in _QUERY.items() if call.query.get(name)}
    request = IdpRequest(given=given, metadata_url=call.query.get("metadataUrl") or None)
    checks, resolved = await _service(app, conn).compatibility(conn, await _directory(app, conn), call.params["domain"],
                                                         request)
    body: dict[str, Any] = {"domain": call.params["domain"].lower(), "compatible": not failures(checks),
                            "checks": [asdict(c) for c in checks]}
    if resolved.inputs is not None:
        proposed = resolved.inputs.graph_body()
        # Certificates are long and public; the caller sees that they were read, not the blobs again.
        for key in ("signingCertificate", "nextSigningCertificate"):
            if key in proposed:
                proposed[key] = f"({len(proposed[key])} base64 characters)"
        body["proposed"] = proposed
    return Reply(200, body)


@route(bp, "connections/{c}/domains/{domain}/federation", "PUT", roles=[ADMIN], body=FederationBody,
       answers={200: answers.Federated})
async def federate_domain(call: Call[FederationBody]) -> Reply:
    """Federate (or update the federation of) a domain, refused while checks fail unless forced."""
    app = bridge()
    conn = app.connection(call.params["c"])
    body = call.parsed
    service = _service(app, conn)
    result = await service.federate(conn, await _directory(app, conn), call.params["domain"], body.request(),
                                    force_reason=body.force.reason if body.force else None, actor=call.actor,
                                    correlation_id=call.correlation_id)
    return Reply(200, result)


@route(bp, "connections/{c}/domains/{domain}/federation", "DELETE", roles=[ADMIN],
       answers={200: answers.Defederated})
async def defederate_domain(call: Plain) -> Reply:
    """Defederate a domain: its users sign in with Entra again."""
    app = bridge()
    conn = app.connection(call.params["c"])
    return Reply(200, await _service(app, conn).defederate(conn, await _directory(app, conn), call.params["domain"],
                                                     actor=call.actor, correlation_id=call.correlation_id))


@bp.function_name("federation_monitor")
@bp.timer_trigger(arg_name="timer", schedule="%FEDERATION_SCHEDULE%", run_on_startup=False)
async def federation_monitor(timer: func.TimerRequest) -> None:
    """For each federated domain of each connection: new IdP certificates and expiry alerts."""
    app = bridge()
    correlation_id = str(uuid.uuid4())
    with logs.correlation(correlation_id):
        for conn in app.connections():
            if not conn.features.federation.enabled:
                continue
            async with job("federation_monitor", conn.name, correlation_id):
                results = await _service(app, conn).watch(conn, await _directory(app, conn),
                                                          correlation_id=correlation_id)
                for result in results:
                    if result.get("problem"):
                        log.warning("federation of %s (%s): %s", result["domain"], conn.name, result["problem"])
                log.info("federation monitor: %d federated domains of %s checked%s", len(results), conn.name,
                         " (timer past due)" if timer.past_due else "")
