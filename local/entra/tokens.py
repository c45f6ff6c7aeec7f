"""Signing keys and access tokens of the simulator (RS256 JWTs with a `kid`, JWKS published)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TOKEN_LIFETIME = 3599


class Signer:
    """The tenant's token signing key, kept in the data folder so tokens survive a restart."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / "signing-key.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{path} does not hold an RSA key")
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
        self._key = key
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(public).digest()[:15]).decode().rstrip("=")

    def jwks(self) -> dict[str, Any]:
        """The JWKS document."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def issue(self, *, issuer: str, audience: str, tenant_id: str, app_id: str, object_id: str,
              roles: list[str], lifetime: int = TOKEN_LIFETIME) -> tuple[str, int]:
        """An app-only access token and its expiry (epoch seconds)."""
        now = int(time.time())
        claims = {"aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime, "tid": tenant_id,
                  "oid": object_id, "sub": object_id, "appid": app_id, "azp": app_id, "idtyp": "app",
                  "roles": roles, "ver": "2.0", "uti": uuid.uuid4().hex[:22]}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid}), now + lifetime

    def verify(self, token: str, *, issuer: str) -> dict[str, Any]:
        """Verify one of our tokens (any audience); raises jwt.PyJWTError."""
        claims: dict[str, Any] = jwt.decode(token, self._key.public_key(), algorithms=["RS256"], issuer=issuer,
                                            options={"verify_aud": False, "require": ["exp", "iss", "aud"]})
        return claims


def certificate_thumbprints(pem: str) -> tuple[str, str, Any]:
    """x5t (SHA-1) and x5t#S256 of a PEM certificate, base64url, and its public key."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    sha1 = cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is defined as the SHA-1 thumbprint
    sha256 = cert.fingerprint(hashes.SHA256())
    return _b64url(sha1), _b64url(sha256), cert.public_key()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
