"""Certificate checks and the per-feature permission report."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from shared.domain import certificates, permissions

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, days: int = 365, cert_key: object | None = None) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(
        (cert_key or key).public_key())  # type: ignore[attr-defined]
        .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=days))
        .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (cert.public_bytes(serialization.Encoding.PEM) + key_pem).decode()


def statuses(report: certificates.CertificateReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_a_good_certificate_passes_with_thumbprints() -> None:
    report = certificates.validate(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), now=NOW)
    assert report.ok
    assert len(report.thumbprint_sha1) == 40
    assert report.x5t
    assert set(statuses(report).values()) == {"pass"}


def test_near_expiry_warns_and_mismatch_small_or_ec_keys_fail() -> None:
    soon = certificates.validate(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), days=10),
                                 now=NOW)
    assert statuses(soon)["validity"] == "warn"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mismatch = certificates.validate(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                         cert_key=other), now=NOW)
    assert statuses(mismatch)["key matches certificate"] == "fail"
    small = certificates.validate(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), now=NOW)  # noqa: S505 - the weak key is the point
    assert statuses(small)["key type and size"] == "fail"
    curve = certificates.validate(pem(ec.generate_private_key(ec.SECP256R1())), now=NOW)
    assert statuses(curve)["key type and size"] == "fail"
    expired = certificates.validate(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), days=1),
                                    now=NOW + dt.timedelta(days=5))
    assert not expired.ok


def test_garbage_is_a_clear_failure() -> None:
    report = certificates.validate("not a pem", now=NOW)
    assert not report.ok
    assert "BEGIN CERTIFICATE" in report.checks[0].detail


def test_permission_report_names_what_is_missing_and_how_to_fix_it() -> None:
    features = permissions.enabled_features(True, True, False, False, False)
    result = {r.feature: r for r in permissions.report(features, ["User.Read.All", "GroupMember.Read.All"], [])}
    assert result["sync"].ok
    assert result["rotation"].missing == ("User-PasswordProfile.ReadWrite.All", "RoleManagement.Read.Directory",
                                         "Organization.Read.All")
    assert result["rotation"].roles_missing == ("User Administrator",)
    assert any("Roles and administrators" in fix for fix in result["rotation"].remediation)
    held = permissions.report(["rotation"], permissions.FEATURE_NEEDS["rotation"].permissions,
                              ["Privileged Authentication Administrator"])
    assert held[0].ok
