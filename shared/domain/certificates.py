"""Checks of a connection's certificate credential (PEM certificate and private key). Pure.

Entra accepts RSA keys of at least 2048 bits for client assertions
(https://learn.microsoft.com/entra/identity-platform/certificate-credentials); a certificate close to
expiry is a warning, an expired one or a key that does not match is a failure.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

WARN_WITHIN = dt.timedelta(days=30)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Check:
    """One check: pass, warn or fail, with what to do."""

    name: str
    status: str  # pass | warn | fail
    detail: str


@dataclass
class CertificateReport:
    """The checks and the certificate's identifying facts (never the key)."""

    checks: list[Check] = field(default_factory=list)
    subject: str = ""
    thumbprint_sha1: str = ""
    thumbprint_sha256: str = ""
    x5t: str = ""
    not_before: str = ""
    not_after: str = ""

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(c.status != "fail" for c in self.checks)


def validate(pem: str | bytes, *, now: dt.datetime, password: bytes | None = None) -> CertificateReport:
    """Parse a PEM holding a certificate and its private key, and check them."""
    data = pem.encode() if isinstance(pem, str) else pem
    result = CertificateReport()
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        result.checks.append(Check("certificate", "fail", "no PEM certificate (-----BEGIN CERTIFICATE-----) found"))
        return result
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        key = None
    sha1 = cert.fingerprint(hashes.SHA1())  # noqa: S303 - Entra's x5t is defined as the SHA-1 thumbprint
    result.subject = cert.subject.rfc4514_string()
    result.thumbprint_sha1 = sha1.hex().upper()
    result.thumbprint_sha256 = cert.fingerprint(hashes.SHA256()).hex().upper()
    result.x5t = base64.urlsafe_b64encode(sha1).decode().rstrip("=")
    result.not_before = cert.not_valid_before_utc.isoformat()
    result.not_after = cert.not_valid_after_utc.isoformat()
    result.checks.append(Check("certificate", "pass", f"parsed: {result.subject}"))
    if key is None:
        result.checks.append(Check("private key", "fail", "no unencrypted PEM private key found next to the "
                                                          "certificate: store key and certificate in one secret"))
    else:
        same = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo) == \
            cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        result.checks.append(Check("key matches certificate", "pass" if same else "fail",
                                   "the private key belongs to the certificate" if same else
                                   "the private key does not belong to this certificate"))
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        bits = public.key_size
        result.checks.append(Check("key type and size", "pass" if bits >= MIN_RSA_BITS else "fail",
                                   f"RSA {bits} bits" + ("" if bits >= MIN_RSA_BITS else
                                                         f"; Entra needs at least {MIN_RSA_BITS}")))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        result.checks.append(Check("key type and size", "fail",
                                   f"EC {public.curve.name}: Entra client assertions need an RSA key"))
    else:
        result.checks.append(Check("key type and size", "fail", f"{type(public).__name__} is not supported"))
    if now < cert.not_valid_before_utc:
        result.checks.append(Check("validity", "fail", f"not valid before {result.not_before}"))
    elif now > cert.not_valid_after_utc:
        result.checks.append(Check("validity", "fail", f"expired on {result.not_after}: upload a new certificate"))
    elif cert.not_valid_after_utc - now < WARN_WITHIN:
        days = (cert.not_valid_after_utc - now).days
        result.checks.append(Check("validity", "warn", f"expires in {days} days ({result.not_after}): renew it"))
    else:
        result.checks.append(Check("validity", "pass", f"valid until {result.not_after}"))
    return result
