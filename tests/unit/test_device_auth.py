"""Device request signatures: every check names itself."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shared.domain.device_auth import DeviceAuthError, bearer, verify

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
URL = "https://bridge.example/api/delivery/connections/demo/devices/dev-1/password"
KEY = ec.generate_private_key(ec.SECP256R1())
JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(KEY.public_key()))


def token(key: ec.EllipticCurvePrivateKey = KEY, alg: str = "ES256", **overrides: Any) -> str:
    claims: dict[str, Any] = {"aud": URL, "sub": "dev-1", "iat": int(NOW.timestamp()),
                              "exp": int((NOW + dt.timedelta(minutes=4)).timestamp()), "jti": "nonce-123456"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg)


def test_a_good_token_verifies_and_returns_the_nonce() -> None:
    got = verify(token(), jwk=JWK, device_id="dev-1", audience=URL, now=NOW)
    assert got.jti == "nonce-123456"
    assert got.expires_at > NOW


@pytest.mark.parametrize(("make", "message"), [
    (lambda: token(key=ec.generate_private_key(ec.SECP256R1())), "signature"),
    (lambda: token(aud="https://elsewhere.example/"), "audience"),
    (lambda: token(sub="dev-2"), "subject"),
    (lambda: token(exp=int((NOW - dt.timedelta(minutes=3)).timestamp())), "expired"),
    (lambda: token(exp=int((NOW + dt.timedelta(minutes=10)).timestamp())), "lifetime"),
    (lambda: token(iat=int((NOW + dt.timedelta(minutes=3)).timestamp()),
                   exp=int((NOW + dt.timedelta(minutes=4)).timestamp())), "future"),
    (lambda: token(jti=None), "'jti'"),
    (lambda: token(jti="short"), "jti"),
    (lambda: jwt.encode({"aud": URL}, "k" * 32, algorithm="HS256"), "ES256"),
    (lambda: "not-a-jwt", "not a JWT"),
])
def test_each_bad_token_is_refused_naming_the_check(make: Any, message: str) -> None:
    with pytest.raises(DeviceAuthError, match=message):
        verify(make(), jwk=JWK, device_id="dev-1", audience=URL, now=NOW)


def test_skew_within_two_minutes_is_accepted() -> None:
    early = token(iat=int((NOW + dt.timedelta(seconds=90)).timestamp()),
                  exp=int((NOW + dt.timedelta(minutes=4)).timestamp()))
    assert verify(early, jwk=JWK, device_id="dev-1", audience=URL, now=NOW).jti


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(DeviceAuthError):
            bearer(bad)
