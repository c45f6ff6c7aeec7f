"""The simulator's token endpoint and managed identity endpoint, in-process.

Client assertions as https://learn.microsoft.com/entra/identity-platform/certificate-credentials
describes them, in the two forms azure-identity sends (docs/architecture.md, "Facts the code relies
on"): the sync classes sign RS256 with
`x5t` and float times; the aio classes sign PS256 with `x5t#S256` and may pad the segments with `=`.
Errors as https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#error-response.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, IDENTITY_CLIENT_ID, IDENTITY_PRINCIPAL_ID
from tests.fixtures.entra import InProcessEntra

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH = "https://graph.microsoft.com/.default"


def certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge test")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def cert(entra_inprocess: InProcessEntra, key: rsa.RSAPrivateKey) -> x509.Certificate:
    made = certificate(key)
    entra_inprocess.sim.tenant.apps[BRIDGE_CLIENT_ID].certificates.append(
        made.public_bytes(serialization.Encoding.PEM).decode())
    return made


def b64(raw: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def sync_style(key: rsa.RSAPrivateKey, cert: x509.Certificate, aud: str, **claims: Any) -> str:
    """As azure-identity's sync CertificateCredential (MSAL) signs: RS256, x5t, float times."""
    now = time.time()
    body = {"aud": aud, "iss": BRIDGE_CLIENT_ID, "sub": BRIDGE_CLIENT_ID, "exp": now + 600, "iat": now,
            "jti": str(uuid.uuid4()), **claims}
    x5t = b64(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is the SHA-1 thumbprint by definition
    return jwt.encode(body, key, algorithm="RS256", headers={"x5t": x5t})


def aio_style(key: rsa.RSAPrivateKey, cert: x509.Certificate, aud: str) -> str:
    """As azure-identity's aio CertificateCredential signs: PS256, x5t#S256, padded segments."""
    now = int(time.time())
    header = {"alg": "PS256", "typ": "JWT", "x5t#S256": b64(cert.fingerprint(hashes.SHA256()), pad=True)}
    body = {"jti": str(uuid.uuid4()), "aud": aud, "iss": BRIDGE_CLIENT_ID, "sub": BRIDGE_CLIENT_ID,
            "nbf": now, "exp": now + 600}
    signing_input = f"{b64(json.dumps(header).encode(), pad=True)}.{b64(json.dumps(body).encode(), pad=True)}"
    signature = key.sign(signing_input.encode(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                             salt_length=32), hashes.SHA256())
    return f"{signing_input}.{b64(signature, pad=True)}"


async def token_request(entra: InProcessEntra, **form: str) -> Any:
    tenant = form.pop("tenant", entra.sim.tenant.tenantId)
    fields = {"grant_type": "client_credentials", "client_id": BRIDGE_CLIENT_ID, "scope": GRAPH, **form}
    return await entra.client.post(f"/{tenant}/oauth2/v2.0/token", data=fields)


def token_url(entra: InProcessEntra, tenant: str | None = None) -> str:
    return f"{entra.sim.base_url}/{tenant or entra.sim.tenant.tenantId}/oauth2/v2.0/token"


async def test_both_assertion_forms_sign_in(entra_inprocess: InProcessEntra, key: rsa.RSAPrivateKey,
                                            cert: x509.Certificate) -> None:
    for assertion in (sync_style(key, cert, token_url(entra_inprocess)),
                      aio_style(key, cert, token_url(entra_inprocess))):
        answer = await token_request(entra_inprocess, client_assertion_type=ASSERTION_TYPE,
                                     client_assertion=assertion)
        assert answer.status_code == 200, answer.text
        claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
        assert claims["appid"] == BRIDGE_CLIENT_ID
        assert claims["aud"] == "https://graph.microsoft.com"
        assert "User.Read.All" in claims["roles"]
        assert jwt.get_unverified_header(answer.json()["access_token"])["kid"] == entra_inprocess.sim.signer.kid


async def test_a_domain_in_the_path_takes_its_own_token_url(entra_inprocess: InProcessEntra,
                                                            key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    domain = entra_inprocess.sim.tenant.domains[-1]["id"]
    answer = await token_request(entra_inprocess, tenant=domain, client_assertion_type=ASSERTION_TYPE,
                                 client_assertion=sync_style(key, cert, token_url(entra_inprocess, domain)))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("make", "problem"), [
    (lambda k, c, url: sync_style(k, c, url + "x"), "audience"),
    (lambda k, c, url: sync_style(k, c, url, exp=time.time() - 600), "expired"),
    (lambda k, c, url: sync_style(k, c, url, iss="someone-else"), "iss and sub"),
    (lambda k, c, url: sync_style(rsa.generate_private_key(public_exponent=65537, key_size=2048), c, url),
     "signature"),
    (lambda k, c, url: sync_style(k, certificate(k), url), "not registered"),
    (lambda k, c, url: "not-a-jwt", "not a JWT"),
])
async def test_bad_assertions_are_refused(entra_inprocess: InProcessEntra, key: rsa.RSAPrivateKey,
                                          cert: x509.Certificate, make: Any, problem: str) -> None:
    answer = await token_request(entra_inprocess, client_assertion_type=ASSERTION_TYPE,
                                 client_assertion=make(key, cert, token_url(entra_inprocess)))
    assert answer.status_code == 401
    body = answer.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [700027]
    assert problem in body["error_description"]
    assert body["trace_id"]
    assert body["correlation_id"]
    assert body["timestamp"]


async def test_an_assertion_is_single_use(entra_inprocess: InProcessEntra, key: rsa.RSAPrivateKey,
                                          cert: x509.Certificate) -> None:
    assertion = sync_style(key, cert, token_url(entra_inprocess))
    first = await token_request(entra_inprocess, client_assertion_type=ASSERTION_TYPE, client_assertion=assertion)
    again = await token_request(entra_inprocess, client_assertion_type=ASSERTION_TYPE, client_assertion=assertion)
    assert first.status_code == 200
    assert again.status_code == 401
    assert "replay" in again.json()["error_description"]


async def test_secret_scope_and_client_errors(entra_inprocess: InProcessEntra) -> None:
    good = await token_request(entra_inprocess, client_secret=BRIDGE_CLIENT_SECRET,
                               scope="https://vault.azure.net/.default")
    assert good.status_code == 200
    assert good.json()["token_type"] == "Bearer"
    assert jwt.decode(good.json()["access_token"], options={"verify_signature": False})["roles"] == []
    cases = [({"client_secret": "wrong-secret-value"}, 401, "invalid_client", 7000215),
             ({"client_secret": BRIDGE_CLIENT_SECRET, "scope": "https://graph.microsoft.com/User.Read"}, 400,
              "invalid_scope", 1002012),
             # Another cloud's Graph is not a resource of this tenant.
             ({"client_secret": BRIDGE_CLIENT_SECRET, "scope": "https://graph.microsoft.us/.default"}, 400,
              "invalid_resource", 500011),
             ({"client_secret": BRIDGE_CLIENT_SECRET, "client_id": str(uuid.uuid4())}, 400, "unauthorized_client",
              700016),
             ({"client_secret": BRIDGE_CLIENT_SECRET, "grant_type": "password"}, 400, "unsupported_grant_type",
              70003),
             ({}, 401, "invalid_client", 7000218),
             ({"client_secret": BRIDGE_CLIENT_SECRET, "tenant": "nowhere.example"}, 400, "invalid_tenant", 90002)]
    for form, status, error, code in cases:
        answer = await token_request(entra_inprocess, **form)
        assert (answer.status_code, answer.json()["error"], answer.json()["error_codes"]) == (status, error, [code])
        assert "wrong-secret-value" not in answer.text
        assert BRIDGE_CLIENT_SECRET not in answer.text


async def test_a_managed_identity_cannot_use_the_token_endpoint(entra_inprocess: InProcessEntra) -> None:
    answer = await token_request(entra_inprocess, client_id=IDENTITY_CLIENT_ID, client_secret="anything")
    assert answer.status_code == 400
    assert answer.json()["error"] == "unauthorized_client"


async def test_managed_identity_endpoint(entra_inprocess: InProcessEntra) -> None:
    client = entra_inprocess.client
    params = {"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"}
    assert (await client.get("/msi/token", params=params)).status_code == 401
    assert (await client.get("/msi/token", params=params, headers={"X-IDENTITY-HEADER": "wrong"})).status_code == 401
    ok = await client.get("/msi/token", params=params, headers={"X-IDENTITY-HEADER": "test-header"})
    assert ok.status_code == 200
    body = ok.json()
    assert set(body) >= {"access_token", "expires_on", "resource", "token_type"}
    assert int(body["expires_on"]) > time.time()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["oid"], claims["appid"], claims["idtyp"]) == (IDENTITY_PRINCIPAL_ID, IDENTITY_CLIENT_ID, "app")
    assert "User-PasswordProfile.ReadWrite.All" in claims["roles"]
    vault = await client.get("/msi/token", params={**params, "resource": "https://vault.azure.net"},
                             headers={"X-IDENTITY-HEADER": "test-header"})
    assert jwt.decode(vault.json()["access_token"], options={"verify_signature": False})["roles"] == []
    unknown = await client.get("/msi/token", params={**params, "resource": "https://elsewhere.example"},
                               headers={"X-IDENTITY-HEADER": "test-header"})
    assert unknown.status_code == 400
    other = await client.get("/msi/token", params={**params, "client_id": BRIDGE_CLIENT_ID},
                             headers={"X-IDENTITY-HEADER": "test-header"})
    assert other.status_code == 400


async def test_graph_refuses_foreign_expired_and_wrong_audience_tokens(entra_inprocess: InProcessEntra) -> None:
    client = entra_inprocess.client
    vault_token = entra_inprocess.token(audience="https://vault.azure.net")
    foreign = jwt.encode({"aud": "https://graph.microsoft.com", "iss": entra_inprocess.sim.issuer(),
                          "exp": time.time() + 600}, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                         algorithm="RS256")
    for token in (vault_token, foreign, "garbage"):
        answer = await client.get("/v1.0/organization", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert (await client.get("/v1.0/organization")).json()["error"]["message"] == "Access token is empty."
