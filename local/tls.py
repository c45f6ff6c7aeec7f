"""One local certificate authority for every HTTPS stand-in.

`ensure_tls()` makes (once) a CA, a server certificate for 127.0.0.1 and localhost signed by it, and a
bundle of the system's CAs plus ours, so that clients configured through REQUESTS_CA_BUNDLE or
SSL_CERT_FILE still trust real services. Files are written atomically, so concurrent first runs agree.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIR = Path(".local") / "tls"
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the local CA, the server certificate and key, and the trust bundle."""

    ca: Path
    cert: Path
    key: Path
    bundle: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a stand-in's listening socket."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the system CAs and the local CA."""
        return ssl.create_default_context(cafile=str(self.bundle))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600 if path.name.endswith("key.pem") else 0o644)
    os.replace(tmp, path)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Entra bridge local stack")])


def _make_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Entra bridge local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                 now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1")).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=825))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_tls(directory: Path | str | None = None) -> TlsFiles:
    """Create the local CA and server certificate unless they exist; return their paths."""
    base = Path(directory or os.environ.get("LOCAL_TLS_DIR") or DEFAULT_DIR).resolve()
    base.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=base / "ca.pem", cert=base / "server.pem", key=base / "server-key.pem",
                     bundle=base / "bundle.pem")
    if all(p.exists() for p in (files.ca, files.cert, files.key, files.bundle)):
        return files
    with open(base / ".lock", "w") as lock:
        # Concurrent first runs (parallel test workers) must agree on one CA.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(p.exists() for p in (files.ca, files.cert, files.key, files.bundle)):
            _create(base, files)
    return files


def _create(base: Path, files: TlsFiles) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca = _make_ca(now)
    key, cert = _make_server(ca_key, ca, now)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    system = b""
    for candidate in SYSTEM_BUNDLES:
        if Path(candidate).exists():
            system = Path(candidate).read_bytes()
            break
    # Write the server pair before the CA: readers check for the CA last written.
    _write_atomic(files.key, _pem_key(key))
    _write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    _write_atomic(base / "ca-key.pem", _pem_key(ca_key))
    _write_atomic(files.bundle, system.rstrip(b"\n") + b"\n" + ca_pem)
    _write_atomic(files.ca, ca_pem)


if __name__ == "__main__":
    made = ensure_tls()
    print(f"local CA: {made.ca}\ntrust bundle: {made.bundle}")
