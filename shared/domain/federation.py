"""Domain federation: compatibility checks (pass, warn or fail, with what to do), IdP inputs taken from
explicit values or metadata, signing-certificate rollover and expiry alerts. Pure.

Sources: https://learn.microsoft.com/graph/api/resources/internaldomainfederation,
https://learn.microsoft.com/graph/api/domain-post-federationconfiguration (permissions, the known
issue 21445, the delegated roles) and docs/architecture.md, "Facts the code relies on" (initial domain, lockout).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shared.domain.metadata import IdpMetadata, certificate_key

Status = Literal["pass", "warn", "fail"]
CERT_WARN = dt.timedelta(days=30)
#: Days before the signing certificate's expiry at which the monitor alerts (once each).
ALERT_DAYS = (30, 7, 1)
#: Application permissions that allow writing internalDomainFederation, least privileged first.
WRITE_PERMISSIONS = ("Domain-InternalFederation.ReadWrite.All", "Domain.ReadWrite.All")
#: Roles Microsoft lists for delegated calls (rbac-domainfederation-apis-write).
DELEGATED_ROLES = ("Domain Name Administrator", "External Identity Provider Administrator",
                   "Hybrid Identity Administrator", "Security Administrator")


@dataclass(frozen=True)
class Check:
    """One compatibility check."""

    name: str
    status: Status
    detail: str
    remediation: str = ""


@dataclass(frozen=True)
class IdpInputs:
    """What the operator gives for the external IdP (the internalDomainFederation members)."""

    issuer_uri: str
    passive_sign_in_uri: str
    signing_certificate: str  # base64 DER (PEM is accepted and converted), as Graph takes it
    display_name: str = ""
    sign_out_uri: str | None = None
    preferred_authentication_protocol: str = "wsFed"
    next_signing_certificate: str | None = None
    active_sign_in_uri: str | None = None
    metadata_exchange_uri: str | None = None
    federated_idp_mfa_behavior: str = "acceptIfMfaDoneByFederatedIdp"
    prompt_login_behavior: str | None = None
    is_signed_authentication_request_required: bool | None = None

    def graph_body(self) -> dict[str, Any]:
        """The request body for POST/PATCH federationConfiguration (always with the signing certificate)."""
        body: dict[str, Any] = {"displayName": self.display_name or self.issuer_uri, "issuerUri": self.issuer_uri,
                                "passiveSignInUri": self.passive_sign_in_uri,
                                "signingCertificate": der_base64(self.signing_certificate),
                                "preferredAuthenticationProtocol": self.preferred_authentication_protocol,
                                "federatedIdpMfaBehavior": self.federated_idp_mfa_behavior}
        optional = {"signOutUri": self.sign_out_uri, "activeSignInUri": self.active_sign_in_uri,
                    "metadataExchangeUri": self.metadata_exchange_uri, "promptLoginBehavior":
                    self.prompt_login_behavior, "isSignedAuthenticationRequestRequired":
                    self.is_signed_authentication_request_required,
                    "nextSigningCertificate": der_base64(self.next_signing_certificate)
                    if self.next_signing_certificate else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


@dataclass(frozen=True)
class AppAccess:
    """What the bridge's own identity holds: application permissions (token roles) and directory roles."""

    permissions: tuple[str, ...]
    directory_roles: tuple[str, ...] = ()


def der_base64(certificate: str) -> str:
    """Base64 DER of a certificate given as base64 DER or PEM; whitespace removed."""
    text = certificate.strip()
    if text.startswith("-----BEGIN"):
        try:
            cert = x509.load_pem_x509_certificate(text.encode())
        except ValueError:
            return "".join(text.split())
        return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    return "".join(text.split())


def load_certificate(signing_certificate: str) -> x509.Certificate:
    """Parse a base64 DER (or PEM) certificate; ValueError says why it cannot be."""
    text = signing_certificate.strip()
    try:
        if text.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"the signing certificate cannot be parsed: {exc}") from None


def certificate_expiry(signing_certificate: str) -> dt.datetime:
    """The expiry of a base64 DER (or PEM) certificate; ValueError when it cannot be parsed."""
    return load_certificate(signing_certificate).not_valid_after_utc


def same_certificate(a: str | None, b: str | None) -> bool:
    """Whether two certificate strings hold the same certificate (formatting ignored)."""
    if not a or not b:
        return False
    return certificate_key(der_base64(a)) == certificate_key(der_base64(b))


def inputs_from_metadata(meta: IdpMetadata, *, now: dt.datetime, given: Mapping[str, Any] | None = None
                         ) -> IdpInputs:
    """IdP inputs read from metadata; values in `given` (IdpInputs field names) win over the metadata's.

    The signing certificate is the first currently valid one the metadata lists; a later-expiring one
    that has not expired becomes nextSigningCertificate, also when it is not valid yet (an IdP publishes
    its next certificate ahead of the rollover).
    """
    valid: list[tuple[str, dt.datetime]] = []
    upcoming: list[tuple[str, dt.datetime]] = []
    for cert in meta.signing_certificates:
        try:
            parsed = load_certificate(cert)
        except ValueError:
            continue
        if parsed.not_valid_before_utc <= now < parsed.not_valid_after_utc:
            valid.append((cert, parsed.not_valid_after_utc))
        elif now < parsed.not_valid_before_utc:
            upcoming.append((cert, parsed.not_valid_after_utc))
    signing = valid[0] if valid else ((meta.signing_certificates[0], now) if meta.signing_certificates else ("", now))
    later = [c for c, expiry in (*valid[1:], *upcoming) if expiry > signing[1]]
    inputs = IdpInputs(issuer_uri=meta.issuer_uri, passive_sign_in_uri=meta.passive_sign_in_uri,
                       signing_certificate=signing[0], sign_out_uri=meta.sign_out_uri,
                       preferred_authentication_protocol=meta.protocol,
                       next_signing_certificate=later[0] if later else None,
                       active_sign_in_uri=meta.active_sign_in_uri)
    chosen = {k: v for k, v in (given or {}).items() if v not in (None, "")}
    return replace(inputs, **chosen)


def compatibility(domain: str, found: Mapping[str, Any] | None, current: Mapping[str, Any] | None, *,
                  admins_on_domain: Iterable[str], synced_on_domain: int, inputs: IdpInputs | None,
                  now: dt.datetime, metadata: IdpMetadata | None = None, metadata_error: str | None = None,
                  access: AppAccess | None = None) -> list[Check]:
    """Every check for federating `domain`."""
    checks: list[Check] = []
    if found is None:
        return [Check("domain exists", "fail", f"{domain} is not a domain of this tenant",
                      "add and verify the domain in Entra admin center > Domain names")]
    checks.append(Check("domain exists", "pass", f"{domain} is in the tenant"))
    checks.append(Check("verified", "pass", "the domain is verified") if found.get("isVerified") else
                  Check("verified", "fail", "the domain is not verified",
                        "add the DNS TXT record shown in Entra admin center > Domain names, then verify"))
    if found.get("isInitial") or domain.endswith(".onmicrosoft.com"):
        checks.append(Check("not the initial domain", "fail", "the initial *.onmicrosoft.com domain cannot be "
                            "federated", "federate a custom domain instead"))
    else:
        checks.append(Check("not the initial domain", "pass", "a custom domain"))
    checks.append(Check("not the default domain", "warn", "the domain is the tenant's default; new users get "
                        "UPNs on it", "make another verified domain the default first") if found.get("isDefault")
                  else Check("not the default domain", "pass", "not the default domain"))
    kind = str(found.get("authenticationType", "Managed"))
    checks.append(Check("current authentication", "pass" if current is None else "warn",
                        f"authenticationType {kind}" + ("" if current is None else
                                                        f"; federated to {current.get('issuerUri')}"),
                        "" if current is None else "federating again updates the existing configuration"))
    if current is not None and not current.get("signingCertificate"):
        checks.append(Check("existing configuration has a signing certificate", "warn",
                            "the current configuration has no signingCertificate: Entra cannot validate tokens "
                            "and the domain may not be manageable", "federate again with the IdP's signing "
                            "certificate (the bridge always sends one)"))
    admins = sorted(admins_on_domain)
    checks.append(Check("no admins on the domain", "fail", f"{len(admins)} admin(s) sign in on this domain: "
                        f"{', '.join(admins[:5])}", "give every admin a cloud-only account on another domain "
                        "(for example *.onmicrosoft.com) before federating, or they can be locked out")
                  if admins else Check("no admins on the domain", "pass", "no admin role holder signs in on it"))
    checks.append(Check("synced users", "warn", f"{synced_on_domain} synced user(s) on the domain",
                        "their immutableId must match what the IdP sends as the subject") if synced_on_domain
                  else Check("synced users", "pass", "no synced users on the domain"))
    if metadata_error:
        checks.append(Check("IdP metadata", "fail", metadata_error, "give a reachable https metadata URL or the "
                            "metadata XML (WS-Federation or SAML 2.0)"))
    if inputs is not None:
        checks.extend(_inputs(inputs, now))
    if metadata is not None and inputs is not None:
        checks.extend(_consistency(metadata, inputs))
    checks.extend(_access(access))
    return checks


def _inputs(inputs: IdpInputs, now: dt.datetime) -> list[Check]:
    checks = []
    issuer = urlparse(inputs.issuer_uri)
    checks.append(Check("issuer URI", "pass" if issuer.scheme and issuer.netloc else "fail",
                        inputs.issuer_uri or "(empty)", "" if issuer.scheme and issuer.netloc else
                        "give the IdP's entity id (issuerUri), an absolute URI"))
    passive = urlparse(inputs.passive_sign_in_uri)
    good = passive.scheme == "https" and bool(passive.netloc)
    checks.append(Check("passive sign-in URI", "pass" if good else "fail", inputs.passive_sign_in_uri or "(empty)",
                        "" if good else "give the IdP's https sign-in URL (passiveSignInUri)"))
    checks.append(_certificate("signing certificate", inputs.signing_certificate, now, required=True))
    if inputs.next_signing_certificate:
        checks.append(_certificate("next signing certificate", inputs.next_signing_certificate, now, required=False))
    return checks


def _certificate(name: str, value: str, now: dt.datetime, *, required: bool) -> Check:
    try:
        cert = load_certificate(value)
    except ValueError as err:
        return Check(name, "fail", str(err), "give the IdP's token-signing certificate as base64 DER or PEM")
    expiry = cert.not_valid_after_utc
    if expiry <= now:
        return Check(name, "fail", f"expired on {expiry:%Y-%m-%d}", "get the IdP's current signing certificate")
    if required and cert.not_valid_before_utc > now:
        return Check(name, "fail", f"not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
                     "give the certificate the IdP signs with today; a future one goes in nextSigningCertificate")
    if expiry - now < CERT_WARN:
        return Check(name, "warn", f"expires on {expiry:%Y-%m-%d}",
                     "plan the IdP's certificate rollover (nextSigningCertificate)")
    return Check(name, "pass", f"valid until {expiry:%Y-%m-%d}")


def _consistency(meta: IdpMetadata, inputs: IdpInputs) -> list[Check]:
    checks = [Check("metadata issuer", "pass", f"entityID {meta.issuer_uri}") if meta.issuer_uri == inputs.issuer_uri
              else Check("metadata issuer", "fail", f"issuerUri {inputs.issuer_uri} differs from the metadata's "
                         f"entityID {meta.issuer_uri}", "use the metadata's entityID as issuerUri")]
    endpoints = (*meta.passive_sign_in_uris, *meta.saml_sign_in_uris)
    checks.append(Check("metadata sign-in URI", "pass", "passiveSignInUri is published in the metadata")
                  if inputs.passive_sign_in_uri in endpoints else
                  Check("metadata sign-in URI", "warn", f"passiveSignInUri {inputs.passive_sign_in_uri} is not among "
                        f"the metadata's sign-in endpoints {list(endpoints)}", "check the IdP's sign-in URL"))
    published = any(same_certificate(inputs.signing_certificate, c) for c in meta.signing_certificates)
    checks.append(Check("metadata signing certificate", "pass", "the signing certificate is published in the "
                        "metadata") if published else
                  Check("metadata signing certificate", "fail", "the signing certificate is not among the "
                        f"{len(meta.signing_certificates)} the metadata publishes: Entra would reject the IdP's tokens",
                        "use a signing certificate from the IdP's metadata"))
    return checks


def _access(access: AppAccess | None) -> list[Check]:
    checks: list[Check] = []
    if access is not None:
        granted = [p for p in WRITE_PERMISSIONS if p in access.permissions]
        checks.append(Check("app permission", "pass", f"the app holds {granted[0]}") if granted else
                      Check("app permission", "fail", "the app holds neither "
                            f"{' nor '.join(WRITE_PERMISSIONS)}", "grant the Microsoft Graph application permission "
                            "Domain-InternalFederation.ReadWrite.All with admin consent (Entra admin center > "
                            "Enterprise applications > the bridge > Permissions)"))
        roles = [r for r in access.directory_roles if r in DELEGATED_ROLES or r == "Global Administrator"]
        checks.append(Check("directory role", "pass", "Microsoft requires a role only for delegated calls; the app "
                            f"holds {', '.join(roles) if roles else 'none of them'}"))
    checks.append(Check("app-only limitation", "warn", "Microsoft documents Domain-InternalFederation.ReadWrite.All "
                        "for apps, but lists a known permissions issue (21445) for this API and third parties "
                        "report 403 for app-only create and delete",
                        "if the bridge gets 403, federate from a delegated session of a Domain Name, External "
                        "Identity Provider, Hybrid Identity or Security Administrator"))
    return checks


def failures(checks: Iterable[Check]) -> list[Check]:
    """The checks that block federation."""
    return [c for c in checks if c.status == "fail"]


# ----------------------------------------------------------------------------- certificate watch


@dataclass(frozen=True)
class Rollover:
    """A change the monitor makes to a federation configuration, and why."""

    signing_certificate: str
    next_signing_certificate: str | None
    reason: str

    def patch(self) -> dict[str, Any]:
        """The PATCH body; a null nextSigningCertificate clears it."""
        return {"signingCertificate": self.signing_certificate,
                "nextSigningCertificate": self.next_signing_certificate}


def plan_rollover(current: Mapping[str, Any], published: Iterable[str], now: dt.datetime) -> Rollover | None:
    """Compare the configuration's certificates with those the IdP publishes now; None when nothing changes.

    A published certificate Entra does not know becomes nextSigningCertificate. The next certificate is
    promoted when the IdP switches: it stops publishing the current one, or the current one expired.
    """
    signing = str(current.get("signingCertificate") or "")
    nxt = current.get("nextSigningCertificate") or None
    certs = [der_base64(c) for c in published]
    if not certs:
        return None
    expired = _expired(signing, now)
    still_published = any(same_certificate(signing, c) for c in certs)
    unknown = [c for c in certs if not same_certificate(c, signing) and not same_certificate(c, nxt)
               and not _expired(c, now)]
    if (not still_published or expired) and (nxt and any(same_certificate(nxt, c) for c in certs)
                                             and not _expired(nxt, now)):
        return Rollover(der_base64(nxt), unknown[0] if unknown else None,
                        "the IdP switched to the next signing certificate" if not still_published else
                        "the signing certificate expired; the next one is promoted")
    if (not still_published or expired) and unknown:
        newest = max(unknown, key=lambda c: certificate_expiry(c))
        rest = [c for c in unknown if c is not newest]
        return Rollover(newest, rest[0] if rest else None, "the IdP signs with a certificate Entra does not know")
    if unknown and not any(same_certificate(u, nxt) for u in unknown):
        newest = max(unknown, key=lambda c: certificate_expiry(c))
        if nxt is None or not same_certificate(newest, nxt):
            return Rollover(signing, newest, "the IdP publishes a new certificate: it becomes nextSigningCertificate")
    return None


def _expired(cert: str | None, now: dt.datetime) -> bool:
    if not cert:
        return True
    try:
        return certificate_expiry(cert) <= now
    except ValueError:
        return True


def alert_threshold(expiry: dt.datetime, now: dt.datetime) -> int | None:
    """The smallest of ALERT_DAYS the time left has reached (30, 7 or 1), or None when further away."""
    left = expiry - now
    reached = [d for d in ALERT_DAYS if left <= dt.timedelta(days=d)]
    return min(reached) if reached else None
