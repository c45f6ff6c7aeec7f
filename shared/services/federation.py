"""Federate and defederate a custom domain after the compatibility checks; watch signing certificates."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from shared.config import Connection
from shared.domain import federation as rules
from shared.domain.metadata import IdpMetadata, MetadataError, certificate_key, parse_metadata
from shared.errors import BridgeError, Conflict, InvalidInput, NotFound
from shared.services.audit_context import AuditContext
from shared.services.ports import AuditSink, Clock, DomainDirectory, FederationWatch, JsonObject

log = logging.getLogger(__name__)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
COMPARED = ("issuerUri", "passiveSignInUri", "signingCertificate", "nextSigningCertificate")


class MetadataSource(Protocol):
    """Fetches an IdP's metadata document."""

    async def fetch(self, url: str) -> bytes:
        """The document at an https URL."""
        ...


@dataclass(frozen=True)
class IdpRequest:
    """What the caller gave: explicit values (IdpInputs field names) and/or metadata by URL or XML."""

    given: Mapping[str, Any] = field(default_factory=dict)
    metadata_url: str | None = None
    metadata_xml: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing about the IdP was given."""
        return not (self.metadata_url or self.metadata_xml or any(v for v in self.given.values()))


@dataclass(frozen=True)
class Resolved:
    """The IdP inputs with the metadata they came from or were checked against."""

    inputs: rules.IdpInputs | None
    metadata: IdpMetadata | None
    error: str | None


class FederationService:
    """Compatibility reports, federation, defederation and the certificate watch of a connection's domains."""

    def __init__(self, *, audit: AuditSink, clock: Clock, watched: FederationWatch, metadata: MetadataSource) -> None:
        self._audit = audit
        self._clock = clock
        self._watched = watched
        self._metadata = metadata

    # ------------------------------------------------------------------ inputs

    async def resolve(self, request: IdpRequest) -> Resolved:
        """Read the metadata (if any) and merge it with the explicit values; explicit values win."""
        meta: IdpMetadata | None = None
        error: str | None = None
        if request.metadata_url or request.metadata_xml:
            try:
                document = (request.metadata_xml.encode() if request.metadata_xml
                            else await self._metadata.fetch(str(request.metadata_url)))
                meta = parse_metadata(document, issuer_hint=request.given.get("issuer_uri") or None)
            except (MetadataError, BridgeError) as err:
                error = err.detail if isinstance(err, BridgeError) else str(err)
        given = {k: v for k, v in request.given.items() if v not in (None, "")}
        if meta is not None:
            return Resolved(rules.inputs_from_metadata(meta, now=self._clock.now(), given=given), meta, error)
        if {"issuer_uri", "passive_sign_in_uri", "signing_certificate"} <= set(given):
            return Resolved(rules.IdpInputs(**given), None, error)
        if given and error is None:
            missing = sorted({"issuer_uri", "passive_sign_in_uri", "signing_certificate"} - set(given))
            error = f"without metadata, issuerUri, passiveSignInUri and signingCertificate are all needed " \
                    f"(missing: {', '.join(missing)})"
        return Resolved(None, None, error)

    # ------------------------------------------------------------------ checks, federate, defederate

    async def compatibility(self, conn: Connection, directory: DomainDirectory, domain: str,
                            request: IdpRequest | None = None) -> tuple[list[rules.Check], Resolved]:
        """Every check for federating `domain`, each pass, warn or fail with remediation."""
        self._enabled(conn)
        domain = self._name(domain)
        resolved = await self.resolve(request) if request and not request.empty else Resolved(None, None, None)
        found = await directory.domain(domain)
        current = await directory.federation(domain) if found else None
        admins, synced = await directory.people_on_domain(domain) if found else ([], 0)
        access = await directory.app_access() if found else None
        checks = rules.compatibility(domain, found, current, admins_on_domain=admins, synced_on_domain=synced,
                                     inputs=resolved.inputs, now=self._clock.now(), metadata=resolved.metadata,
                                     metadata_error=resolved.error, access=access)
        return checks, resolved

    async def compatibility_report(self, conn: Connection, directory: DomainDirectory, domain: str,
                                   request: IdpRequest | None = None) -> JsonObject:
        """The checks as GET .../federation/compatibility answers them, with the proposed configuration."""
        checks, resolved = await self.compatibility(conn, directory, domain, request)
        body: dict[str, Any] = {"domain": domain.lower(), "compatible": not rules.failures(checks),
                                "checks": [asdict(c) for c in checks]}
        if resolved.inputs is not None:
            proposed = resolved.inputs.graph_body()
            # Certificates are long and public; the caller sees that they were read, not the blobs again.
            for key in ("signingCertificate", "nextSigningCertificate"):
                if key in proposed:
                    proposed[key] = f"({len(proposed[key])} base64 characters)"
            body["proposed"] = proposed
        return body

    async def federate(self, conn: Connection, directory: DomainDirectory, domain: str, request: IdpRequest, *,
                       force_reason: str | None, actor: str, correlation_id: str) -> JsonObject:
        """Create or update the federation configuration, read it back, and audit it."""
        domain = self._name(domain)
        if request.empty:
            raise InvalidInput("give the IdP's metadataUrl or metadataXml, or issuerUri, passiveSignInUri and "
                               "signingCertificate", field="body")
        checks, resolved = await self.compatibility(conn, directory, domain, request)
        if resolved.inputs is None:
            raise InvalidInput(f"the IdP's values cannot be determined: {resolved.error}", field="body")
        inputs = resolved.inputs
        blocking = rules.failures(checks)
        if blocking and not force_reason:
            raise Conflict(f"federating {domain} is refused: " + "; ".join(f"{c.name}: {c.detail}" for c in blocking)
                           + " (fix them, or send force with a reason)")
        if any(c.name == "domain exists" for c in blocking):
            raise NotFound(f"{domain} is not a domain of this tenant")
        current = await directory.federation(domain)
        body = inputs.graph_body()
        if current is None:
            response = await directory.create_federation(domain, body)
        else:
            response = await directory.update_federation(domain, str(current["id"]), body)
        found, after = await directory.domain(domain), await directory.federation(domain)
        mismatched = [k for k in COMPARED if k in body and (after is None or not _same(k, after.get(k), body[k]))]
        outcome = "federated" if not mismatched else "mismatch"
        detail: dict[str, Any] = {"domain": domain, "issuerUri": inputs.issuer_uri, "updated": current is not None,
                                  "signingCertificate": _thumb(inputs.signing_certificate),
                                  "metadataUrl": request.metadata_url, "readBackMismatch": mismatched}
        if force_reason:
            detail["forcedPast"] = [c.name for c in blocking]
            detail["forceReason"] = force_reason
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("federation.set", domain, outcome, graph_request_id=response.request_id, **detail)
        await self._save_watch(conn.name, domain, {"metadataUrl": request.metadata_url or "",
                                                   "issuerUri": inputs.issuer_uri})
        if mismatched:
            raise Conflict(f"Graph accepted the federation of {domain} but reads back different {mismatched}")
        return {"domain": domain, "authenticationType": (found or {}).get("authenticationType"),
                "federationConfiguration": after, "checks": [_check(c) for c in checks if c.status != "pass"],
                "note": "the switch can take up to two hours to reach every sign-in"}

    async def defederate(self, conn: Connection, directory: DomainDirectory, domain: str, *, actor: str,
                         correlation_id: str) -> JsonObject:
        """Remove the federation configuration, read back, audit."""
        self._enabled(conn)
        domain = self._name(domain)
        if await directory.domain(domain) is None:
            raise NotFound(f"{domain} is not a domain of this tenant")
        current = await directory.federation(domain)
        if current is None:
            raise Conflict(f"{domain} is not federated")
        response = await directory.delete_federation(domain, str(current["id"]))
        after, still = await directory.domain(domain), await directory.federation(domain)
        audit = AuditContext(self._audit, connection=conn.name, actor=actor, correlation_id=correlation_id)
        await audit.record("federation.removed", domain, "managed" if still is None else "still-federated",
                           graph_request_id=response.request_id, domain=domain, issuerUri=current.get("issuerUri"))
        await self._watched.forget(conn.name, domain)
        if still is not None:
            raise Conflict(f"Graph accepted the removal of {domain}'s federation but still reads it back")
        return {"domain": domain, "authenticationType": (after or {}).get("authenticationType"),
                "note": "users on this domain now sign in with Entra: they need a password or a passkey"}

    # ------------------------------------------------------------------ certificate watch

    async def watch(self, conn: Connection, directory: DomainDirectory, *, correlation_id: str) -> list[JsonObject]:
        """For each federated domain: take up the IdP's new certificates and alert before expiry."""
        results = []
        for found in await directory.domains():
            if str(found.get("authenticationType")) != "Federated":
                continue
            domain = str(found["id"]).lower()
            try:
                results.append(await self._watch_one(conn, directory, domain, correlation_id))
            except BridgeError as err:
                log.warning("federation watch of %s failed: %s", domain, err.detail)
                await self._save_watch(conn.name, domain, {"problem": err.detail,
                                                           "checkedAt": self._clock.now().isoformat()})
                results.append({"domain": domain, "problem": err.detail})
        return results

    async def _watch_one(self, conn: Connection, directory: DomainDirectory, domain: str,
                         correlation_id: str) -> JsonObject:
        now = self._clock.now()
        config = await directory.federation(domain)
        if config is None:
            return {"domain": domain, "problem": "federated but without a federation configuration"}
        state: dict[str, Any] = await self._watched.get(conn.name, domain) or {}
        state.pop("problem", None)
        problems: list[str] = []
        url = str(state.get("metadataUrl") or "")
        if url:
            try:
                meta = parse_metadata(await self._metadata.fetch(url), issuer_hint=str(config.get("issuerUri") or ""))
                plan = rules.plan_rollover(config, meta.signing_certificates, now)
                if plan is not None:
                    await self._apply_rollover(conn, directory, domain, config, plan, correlation_id)
                    config = await directory.federation(domain) or config
            except (MetadataError, BridgeError) as err:
                problems.append(f"IdP metadata: {err.detail if isinstance(err, BridgeError) else err}")
        signing = str(config.get("signingCertificate") or "")
        try:
            expiry = rules.certificate_expiry(signing)
        except ValueError as err:
            problems.append(f"signing certificate: {err}")
            expiry = None
        audit = AuditContext(self._audit, connection=conn.name, actor="federation_monitor",
                             correlation_id=correlation_id)
        if expiry is not None:
            thumb = _thumb(signing)
            # 30, 7 and 1 days before expiry, and once more (threshold 0) when it has expired.
            threshold = 0 if expiry <= now else rules.alert_threshold(expiry, now)
            alerted = state.get("alertedThreshold") if state.get("alertedThumbprint") == thumb else None
            if threshold is not None and (alerted is None or threshold < int(alerted)):
                days = (expiry - now).total_seconds() / 86400
                next_thumb = _thumb(config.get("nextSigningCertificate"))
                await audit.record("federation.certificate.expiring", domain,
                                   "expired" if days <= 0 else f"{threshold}d", domain=domain, signingCertificate=thumb,
                                   expiresOn=expiry.isoformat(), daysLeft=round(days, 1), threshold=threshold,
                                   nextSigningCertificate=next_thumb)
                state.update(alertedThreshold=threshold, alertedThumbprint=thumb)
            if threshold is not None:
                problems.append(f"the signing certificate {'expired' if expiry <= now else 'expires'} on "
                                f"{expiry:%Y-%m-%d}" + ("" if config.get("nextSigningCertificate") else
                                                        " and no next certificate is known"))
            state.update(signingCertificate=thumb, expiresOn=expiry.isoformat(),
                         nextSigningCertificate=_thumb(config.get("nextSigningCertificate")) or "")
        state.update(checkedAt=now.isoformat(), issuerUri=str(config.get("issuerUri") or ""))
        if problems:
            state["problem"] = "; ".join(problems)
        await self._save_watch(conn.name, domain, state, replace=True)
        return {"domain": domain, **state}

    async def _apply_rollover(self, conn: Connection, directory: DomainDirectory, domain: str, config: JsonObject,
                              plan: rules.Rollover, correlation_id: str) -> None:
        response = await directory.update_federation(domain, str(config["id"]), plan.patch())
        after = await directory.federation(domain) or {}
        ok = _same("signingCertificate", after.get("signingCertificate"), plan.signing_certificate) and _same(
            "nextSigningCertificate", after.get("nextSigningCertificate"), plan.next_signing_certificate)
        audit = AuditContext(self._audit, connection=conn.name, actor="federation_monitor",
                             correlation_id=correlation_id)
        await audit.record("federation.certificate.rollover", domain, "updated" if ok else "mismatch",
                           graph_request_id=response.request_id, domain=domain, reason=plan.reason,
                           signingCertificate=_thumb(plan.signing_certificate),
                           nextSigningCertificate=_thumb(plan.next_signing_certificate),
                           previousSigningCertificate=_thumb(config.get("signingCertificate")))
        if not ok:
            raise Conflict(f"Graph accepted the certificate rollover of {domain} but reads back other certificates")

    async def watch_status(self, connection: str) -> list[JsonObject]:
        """The watch rows of a connection's federated domains (for the status route)."""
        return await self._watched.rows(connection)

    async def _save_watch(self, connection: str, domain: str, data: Mapping[str, Any], *,
                          replace: bool = False) -> None:
        found = None if replace else await self._watched.get(connection, domain)
        await self._watched.put(connection, domain, {**(found or {}), **data, "domain": domain})

    # ------------------------------------------------------------------ guards

    @staticmethod
    def _name(domain: str) -> str:
        name = domain.strip().lower()
        if not _DOMAIN.match(name):
            raise InvalidInput(f"{domain!r} is not a domain name", field="domain")
        return name

    @staticmethod
    def _enabled(conn: Connection) -> None:
        if not conn.features.federation.enabled:
            raise Conflict(f"federation is not enabled for connection {conn.name!r} (features.federation.enabled)")


def _same(key: str, have: Any, want: Any) -> bool:
    if key.endswith("Certificate"):
        return (not have and not want) or rules.same_certificate(have, want)
    return bool(have == want)


def _thumb(certificate: Any) -> str | None:
    """A certificate's SHA-256 identity: audit records name certificates, never carry them."""
    return certificate_key(rules.der_base64(str(certificate)))[:40] if certificate else None


def _check(check: rules.Check) -> JsonObject:
    return {"name": check.name, "status": check.status, "detail": check.detail, "remediation": check.remediation}
