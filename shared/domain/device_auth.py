"""Device request signatures: a short-lived ES256 JWT signed with the device's registered P-256 key.

A device proves itself by sending `Authorization: Bearer <jwt>` where the JWT carries
`aud` = the exact URL it calls, `sub` = its device id, `iat`, `exp` (at most 5 minutes after `iat`),
and a `jti` that may be used once. Clocks may differ by up to 2 minutes. Replay protection (the
single-use `jti`) needs storage, so `verify` returns the jti and its expiry for the caller to record.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

MAX_LIFETIME = dt.timedelta(minutes=5)
MAX_SKEW = dt.timedelta(minutes=2)
ALGORITHM = "ES256"


class DeviceAuthError(ValueError):
    """The device's token is missing, malformed, or fails a check; the message names which."""


@dataclass(frozen=True)
class DeviceToken:
    """The verified claims that matter: who, which nonce, until when the nonce must be remembered."""

    device_id: str
    jti: str
    expires_at: dt.datetime


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header."""
    if not header:
        raise DeviceAuthError("missing Authorization header: send 'Bearer <ES256 JWT signed by the device key>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DeviceAuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def verify(token: str, *, jwk: dict[str, Any], device_id: str, audience: str, now: dt.datetime) -> DeviceToken:
    """Check signature, algorithm, audience, subject, lifetime and skew; raise DeviceAuthError naming the check."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise DeviceAuthError("token is not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise DeviceAuthError(f"token algorithm must be {ALGORITHM}, not {header.get('alg')!r}")
    try:
        key = ECAlgorithm.from_jwk(json.dumps(jwk))
    except (jwt.PyJWTError, ValueError, TypeError):
        raise DeviceAuthError("the device's registered key is not a usable P-256 JWK") from None
    try:
        claims = jwt.decode(token, key=key, algorithms=[ALGORITHM], audience=audience,  # type: ignore[arg-type]
                            # Time checks use the caller's clock below, not the library's.
                            options={"require": ["aud", "exp", "iat", "jti", "sub"], "verify_iat": False,
                                     "verify_exp": False, "verify_nbf": False})
    except jwt.InvalidAudienceError:
        raise DeviceAuthError(f"token audience must be exactly {audience}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise DeviceAuthError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise DeviceAuthError("token signature does not match the device's registered key") from None
    except jwt.PyJWTError as exc:
        raise DeviceAuthError(f"token rejected: {type(exc).__name__}") from None
    if claims["sub"] != device_id:
        raise DeviceAuthError("token subject does not name this device")
    iat = dt.datetime.fromtimestamp(float(claims["iat"]), dt.UTC)
    exp = dt.datetime.fromtimestamp(float(claims["exp"]), dt.UTC)
    if exp + MAX_SKEW < now:
        raise DeviceAuthError("token has expired")
    if iat - now > MAX_SKEW:
        raise DeviceAuthError("token is issued in the future beyond the allowed 2-minute clock skew")
    if exp - iat > MAX_LIFETIME:
        raise DeviceAuthError("token lifetime exceeds 5 minutes")
    jti = str(claims["jti"])
    if not 8 <= len(jti) <= 128:
        raise DeviceAuthError("token jti must be 8 to 128 characters")
    return DeviceToken(device_id=device_id, jti=jti, expires_at=exp + MAX_SKEW)
