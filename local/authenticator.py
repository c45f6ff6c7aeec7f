"""A software FIDO2 authenticator for tests and the local demo.

It holds P-256 credentials, and answers WebAuthn creation options (JSON form) with a
RegistrationResponse in JSON form, using packed self attestation, packed with an x5c chain, or none,
and a chosen AAGUID. Built on the fido2 library's data types and cryptography.

An x5c chain ends in an attestation root: by default the well-known test root (`well_known_root()`), the same
in every process, which the local stack's test FIDO metadata blob lists for DEFAULT_AAGUID
(local/mds.py); `AttestationRoot.generate()` makes an unknown one. The test root's key is derived from
a published constant: it proves nothing outside tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from fido2.cose import ES256
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorAttestationResponse,
    AuthenticatorData,
    CollectedClientData,
    RegistrationResponse,
)

Format = Literal["packed-self", "packed-x5c", "none"]
DEFAULT_AAGUID = "d2f2b1b4-0b8e-4c9b-8a5e-6f1a2b3c4d5e"
# id-fido-gen-ce-aaguid: a packed attestation certificate names the AAGUID in this extension.
_AAGUID_OID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
TEST_ROOT_NAME = "Bridge Test Attestation Root"
#: Seed of the test root's key: public on purpose, so every process (authenticator, simulator, tests)
#: makes the same root without sharing a file.
_TEST_ROOT_SEED = b"entra-bridge software authenticator test attestation root"


@dataclass(frozen=True)
class AttestationRoot:
    """A self-signed attestation CA: its key signs each registration's attestation certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        """The root certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @classmethod
    def generate(cls, name: str = "Self-made Attestation Root") -> AttestationRoot:
        """A new root with a fresh key, known to no metadata."""
        return cls.of(ec.generate_private_key(ec.SECP256R1()), name)

    @classmethod
    def of(cls, key: ec.EllipticCurvePrivateKey, name: str) -> AttestationRoot:
        """A root certificate for `key`, named `name`, valid from 2024 to 2049."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                       .public_key(key.public_key()).serial_number(1)
                       .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
                       .not_valid_after(dt.datetime(2049, 12, 31, tzinfo=dt.UTC))
                       .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                       .sign(key, hashes.SHA256()))
        return cls(key, certificate)


@lru_cache(maxsize=1)
def well_known_root() -> AttestationRoot:
    """The well-known test attestation root (same key and name in every process)."""
    secret = int.from_bytes(hashlib.sha256(_TEST_ROOT_SEED).digest(), "big")
    return AttestationRoot.of(ec.derive_private_key(secret, ec.SECP256R1()), TEST_ROOT_NAME)


@dataclass
class SoftwareAuthenticator:
    """An authenticator with a fixed AAGUID and attestation format."""

    aaguid: str = DEFAULT_AAGUID
    fmt: Format = "packed-self"
    origin: str = "https://login.microsoftonline.com"
    user_verified: bool = True
    user_present: bool = True
    credentials: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    #: The root of packed-x5c chains; None means the well-known test root.
    root: AttestationRoot | None = None

    def register(self, options: Mapping[str, Any], *, rp_id: str | None = None, challenge: bytes | None = None,
                 credential_id: bytes | None = None) -> dict[str, Any]:
        """A RegistrationResponse (JSON form) for WebAuthn creation options (JSON form, base64url).

        `credential_id` makes it answer with that id whatever excludeCredentials says, as a faulty
        authenticator would; by default each registration makes a new random id.
        """
        public_key = options.get("publicKey", options)
        rp = rp_id or str(public_key["rp"]["id"])
        raw_challenge = challenge if challenge is not None else websafe_decode(str(public_key["challenge"]))
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = credential_id or os.urandom(32)
        cose = ES256.from_cryptography_key(key.public_key())  # type: ignore[no-untyped-call]
        attested = AttestedCredentialData.create(uuid.UUID(self.aaguid).bytes, credential_id, cose)
        flags = AuthenticatorData.FLAG.AT
        if self.user_present:
            flags |= AuthenticatorData.FLAG.UP
        if self.user_verified:
            flags |= AuthenticatorData.FLAG.UV
        auth_data = AuthenticatorData.create(hashlib.sha256(rp.encode()).digest(), flags, 0, attested)
        client_data = CollectedClientData.create("webauthn.create", raw_challenge, self.origin)
        signed = bytes(auth_data) + client_data.hash
        if self.fmt == "none":
            attestation = AttestationObject.create("none", auth_data, {})
        elif self.fmt == "packed-self":
            sig = key.sign(signed, ec.ECDSA(hashes.SHA256()))
            attestation = AttestationObject.create("packed", auth_data, {"alg": ES256.ALGORITHM, "sig": sig})
        else:
            leaf_key, chain = _attestation_chain(self.aaguid, self.root or well_known_root())
            sig = leaf_key.sign(signed, ec.ECDSA(hashes.SHA256()))
            attestation = AttestationObject.create("packed", auth_data,
                                                   {"alg": ES256.ALGORITHM, "sig": sig, "x5c": chain})
        self.credentials[websafe_encode(credential_id)] = key
        response = RegistrationResponse(raw_id=credential_id, response=AuthenticatorAttestationResponse(
            client_data=client_data, attestation_object=attestation))
        return dict(response)


def _attestation_chain(aaguid: str, root: AttestationRoot) -> tuple[ec.EllipticCurvePrivateKey, list[bytes]]:
    now = dt.datetime.now(dt.UTC)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    # Packed attestation certificate requirements (WebAuthn section 8.2.1): subject C, O, OU
    # "Authenticator Attestation", CN; basic constraints CA false; the AAGUID extension.
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bridge Test Authenticators"),
                           x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "Bridge Test Key")])
    aaguid_ext = x509.UnrecognizedExtension(_AAGUID_OID, b"\x04\x10" + uuid.UUID(aaguid).bytes)
    leaf = (x509.CertificateBuilder().subject_name(leaf_name).issuer_name(root.certificate.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(aaguid_ext, critical=False)
            .sign(root.key, hashes.SHA256()))
    return leaf_key, [leaf.public_bytes(serialization.Encoding.DER), root.der]
