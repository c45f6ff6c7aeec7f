"""Domain federation compatibility: each check passes, warns or fails, with what to do. Pure.

Sources: https://learn.microsoft.com/graph/api/resources/internaldomainfederation and
domain-post-federationconfiguration; the lockout and initial-domain rules are recorded in FACTS.md.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from cryptography import x509

Status = Literal["pass", "warn", "fail"]
CERT_WARN = dt.timedelta(days=30)


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
    signing_certificate: str  # base64 DER, as Graph takes it
    display_name: str = ""
    sign_out_uri: str | None = None
    preferred_authentication_protocol: str = "wsFed"

    def graph_body(self) -> dict[str, Any]:
        """The request body for POST/PATCH federationConfiguration (always with the signing certificate)."""
        body: dict[str, Any] = {"displayName": self.display_name or self.issuer_uri, "issuerUri": self.issuer_uri,
                                "passiveSignInUri": self.passive_sign_in_uri,
                                "signingCertificate": self.signing_certificate,
                                "preferredAuthenticationProtocol": self.preferred_authentication_protocol,
                                "federatedIdpMfaBehavior": "acceptIfMfaDoneByFederatedIdp"}
        if self.sign_out_uri:
            body["signOutUri"] = self.sign_out_uri
        return body


def certificate_expiry(signing_certificate: str) -> dt.datetime:
    """The expiry of a base64 DER (or PEM) certificate; ValueError when it cannot be parsed."""
    text = signing_certificate.strip()
    try:
        if text.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(text.encode()).not_valid_after_utc
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True)).not_valid_after_utc
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"the signing certificate cannot be parsed: {exc}") from None


def compatibility(domain: str, found: Mapping[str, Any] | None, current: Mapping[str, Any] | None, *,
                  admins_on_domain: Iterable[str], synced_on_domain: int, inputs: IdpInputs | None,
                  now: dt.datetime) -> list[Check]:
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
    admins = sorted(admins_on_domain)
    checks.append(Check("no admins on the domain", "fail", f"{len(admins)} admin(s) sign in on this domain: "
                        f"{', '.join(admins[:5])}", "give every admin a cloud-only account on another domain "
                        "(for example *.onmicrosoft.com) before federating, or they can be locked out")
                  if admins else Check("no admins on the domain", "pass", "no admin role holder signs in on it"))
    checks.append(Check("synced users", "warn", f"{synced_on_domain} synced user(s) on the domain",
                        "their immutableId must match what the IdP sends as the subject") if synced_on_domain
                  else Check("synced users", "pass", "no synced users on the domain"))
    if inputs is not None:
        checks.extend(_inputs(inputs, now))
    checks.append(Check("app-only limitation", "warn", "Microsoft documents Domain-InternalFederation.ReadWrite.All "
                        "for apps, but third parties report 403 for app-only create and delete",
                        "if the bridge gets 403, federate with a delegated admin session instead"))
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
    try:
        expiry = certificate_expiry(inputs.signing_certificate)
    except ValueError as err:
        checks.append(Check("signing certificate", "fail", str(err), "give the IdP's token-signing certificate "
                            "as base64 DER or PEM"))
        return checks
    if expiry <= now:
        checks.append(Check("signing certificate", "fail", f"expired on {expiry:%Y-%m-%d}",
                            "get the IdP's current signing certificate"))
    elif expiry - now < CERT_WARN:
        checks.append(Check("signing certificate", "warn", f"expires on {expiry:%Y-%m-%d}",
                            "plan the IdP's certificate rollover (nextSigningCertificate)"))
    else:
        checks.append(Check("signing certificate", "pass", f"valid until {expiry:%Y-%m-%d}"))
    return checks


def failures(checks: Iterable[Check]) -> list[Check]:
    """The checks that block federation."""
    return [c for c in checks if c.status == "fail"]
