"""A test FIDO Metadata Service (MDS3) blob, signed by the local CA.

The blob has the shape of the FIDO Alliance's (https://fidoalliance.org/metadata/): a JWT whose header
carries the signing certificate (`x5c`), RS256 as the Alliance uses, and a payload with `legalHeader`,
`no`, `nextUpdate` and `entries`. Here the signing certificate is issued by the local CA
(local/tls.py), so the local CA plays the MDS root, and the entries list the software authenticator's
well-known attestation root (local/authenticator.py) for its AAGUID. The Entra simulator serves it at
`/mds3/`; settings FIDO_MDS_URL and FIDO_MDS_ROOT_CERT point the bridge at it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from local.authenticator import DEFAULT_AAGUID, well_known_root
from local.tls import TlsFiles, ensure_tls

LEGAL_HEADER = "Test metadata of the Entra bridge's local stack; not the FIDO Alliance's."


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def entry(aaguid: str, roots: Sequence[bytes], *, status: str = "FIDO_CERTIFIED_L1",
          description: str = "Bridge software authenticator") -> dict[str, object]:
    """One metadata entry (MetadataBLOBPayloadEntry) naming `roots` for `aaguid`."""
    today = dt.date.today().isoformat()
    return {
        "aaguid": aaguid, "timeOfLastStatusChange": today,
        "statusReports": [{"status": status, "effectiveDate": today}],
        "metadataStatement": {
            "description": description, "aaguid": aaguid, "authenticatorVersion": 1, "schema": 3,
            "protocolFamily": "fido2", "upv": [{"major": 1, "minor": 0}], "attestationTypes": ["basic_full"],
            "userVerificationDetails": [[{"userVerificationMethod": "presence_internal"}]],
            "keyProtection": ["software"], "matcherProtection": ["software"], "attachmentHint": ["internal"],
            "tcDisplay": [], "attestationRootCertificates": [base64.b64encode(r).decode() for r in roots]}}


def blob(entries: Sequence[Mapping[str, object]], *, issuer_key: ec.EllipticCurvePrivateKey,
         issuer: x509.Certificate, no: int = 1, next_update: dt.date | None = None) -> bytes:
    """A JWT (RS256) listing `entries`, signed by a fresh RSA certificate that `issuer` issues."""
    now = dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bridge test metadata signer"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Entra bridge local stack")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(issuer_key, hashes.SHA256()))
    header = {"alg": "RS256", "typ": "JWT",
              "x5c": [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]}
    payload = {"legalHeader": LEGAL_HEADER, "no": no,
               "nextUpdate": (next_update or (now + dt.timedelta(days=30)).date()).isoformat(),
               "entries": list(entries)}
    message = _b64url(json.dumps(header).encode()) + b"." + _b64url(json.dumps(payload).encode())
    return message + b"." + _b64url(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))


def local_ca(tls: TlsFiles | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The local CA's key and certificate (local/tls.py keeps the key beside the certificate)."""
    files = tls or ensure_tls()
    key = serialization.load_pem_private_key(Path(files.ca.parent / "ca-key.pem").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the local CA key is not an EC key")
    return key, x509.load_pem_x509_certificate(files.ca.read_bytes())


def local_blob(tls: TlsFiles | None = None, *, no: int = 1) -> bytes:
    """The local stack's blob: the software authenticator's AAGUID with its well-known root, signed via the
    local CA."""
    key, ca = local_ca(tls)
    return blob([entry(DEFAULT_AAGUID, [well_known_root().der])], issuer_key=key, issuer=ca, no=no)


def root_setting(tls: TlsFiles | None = None) -> str:
    """The value of FIDO_MDS_ROOT_CERT for the local stack: the local CA, base64 DER on one line."""
    _, ca = local_ca(tls)
    return base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode()


@lru_cache(maxsize=1)
def served() -> bytes:
    """The blob this process serves, made once."""
    return local_blob()


def served_roots() -> dict[str, list[bytes]]:
    """The attestation roots (DER) the served blob lists, per AAGUID, read from its own payload: the simulator
    made the blob, so it needs no signature check to know what it says."""
    payload = served().split(b".")[1]
    document = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return {str(e["aaguid"]).lower(): [base64.b64decode(r) for r in e["metadataStatement"]
                                       ["attestationRootCertificates"]] for e in document["entries"]}
