"""A minimal Entra login stand-in for the vault emulator when the tenant simulator is not running.

It serves the three endpoints azure-identity's ClientSecretCredential uses (OpenID configuration,
JWKS, client-credentials token) with the simulator's token shape (RS256 with kid; iss
`{base}/{tenant}/v2.0`; aud the resource; oid, appid, azp, tid), so the vault is exercised by the
real SDK the same way either way.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from local.servers import free_port
from local.tls import TlsFiles


@dataclass
class Client:
    """A registered client: its secret and the object id of its service principal."""

    client_id: str
    secret: str
    oid: str


@dataclass
class TokenIssuer:
    """Issues RS256 tokens for registered clients."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    url: str = ""
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    clients: dict[str, Client] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def register(self) -> Client:
        """A new client with a random secret and object id."""
        client = Client(client_id=str(uuid.uuid4()), secret=uuid.uuid4().hex + uuid.uuid4().hex,
                        oid=str(uuid.uuid4()))
        self.clients[client.client_id] = client
        return client

    def mint(self, client: Client, *, audience: str = "https://vault.azure.net", lifetime: int = 3600,
             issuer: str | None = None, signing_key: rsa.RSAPrivateKey | None = None) -> str:
        """A token for `client`; tests vary audience, lifetime, issuer and key to see the vault refuse it."""
        now = int(time.time())
        claims = {"iss": issuer or f"{self.url}/{self.tenant_id}/v2.0", "aud": audience, "tid": self.tenant_id,
                  "oid": client.oid, "sub": client.oid, "appid": client.client_id, "azp": client.client_id,
                  "roles": [], "idtyp": "app", "iat": now - 5, "nbf": now - 5, "exp": now + lifetime}
        return jwt.encode(claims, signing_key or self._key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        """The public key set."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def app(self) -> Starlette:
        """The HTTP endpoints."""

        async def openid(request: Request) -> JSONResponse:
            base = f"{self.url}/{self.tenant_id}"
            return JSONResponse({"issuer": f"{base}/v2.0", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                                 "token_endpoint": f"{base}/oauth2/v2.0/token",
                                 "jwks_uri": f"{base}/discovery/v2.0/keys"})

        async def keys(request: Request) -> JSONResponse:
            return JSONResponse(self.jwks())

        async def token(request: Request) -> JSONResponse:
            form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
            client = self.clients.get(form.get("client_id", ""))
            if client is None or form.get("client_secret") != client.secret:
                return JSONResponse({"error": "invalid_client", "error_description": "AADSTS7000215"}, 401)
            scope = form.get("scope", "")
            audience = scope.split(" ")[0].removesuffix("/.default")
            return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                 "access_token": self.mint(client, audience=audience)})

        return Starlette(routes=[
            Route("/{tenant}/v2.0/.well-known/openid-configuration", openid),
            Route("/{tenant}/discovery/v2.0/keys", keys),
            Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        ])


@contextlib.contextmanager
def serving(tls: TlsFiles) -> Iterator[TokenIssuer]:
    """Serve a fresh issuer over HTTPS on a free loopback port in a background thread."""
    port = free_port()
    issuer = TokenIssuer(url=f"https://127.0.0.1:{port}")
    config = uvicorn.Config(issuer.app(), host="127.0.0.1", port=port, ssl_certfile=str(tls.cert),
                            ssl_keyfile=str(tls.key), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the token issuer did not start")
        time.sleep(0.05)
    try:
        yield issuer
    finally:
        server.should_exit = True
        thread.join(timeout=10)
