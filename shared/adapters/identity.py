"""Credentials: one per connection, and the app's own for Key Vault and storage.

A connection authenticates with the function app's managed identity, or with an app registration's
client secret or certificate kept in Key Vault (never inline). In the local profile the authority is
the Entra simulator and the local CA is trusted explicitly, so the same SDK classes run unchanged.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from shared.config import (
    CertificateAuth,
    ClientSecretAuth,
    Cloud,
    Connection,
    ManagedIdentityAuth,
    Settings,
)
from shared.errors import BridgeError, Configuration, NotFound, Transient
from shared.services.ports import SecretStore


def ca_file(settings: Settings) -> str | None:
    """The CA bundle to trust for local stand-ins (LOCAL_CA_FILE), when set."""
    return settings.local_ca_file or None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """An SSL context trusting the system CAs plus LOCAL_CA_FILE when set."""
    context = ssl.create_default_context()
    if settings.local_ca_file:
        try:
            context.load_verify_locations(cafile=settings.local_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise Configuration(f"LOCAL_CA_FILE {settings.local_ca_file!r} cannot be loaded: {exc}",
                                setting="LOCAL_CA_FILE") from None
    return context


def _transport_options(settings: Settings, cloud: Cloud) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if cloud is Cloud.LOCAL:
        options["authority"] = settings.profile(cloud).authority
        if settings.local_ca_file:
            options["connection_verify"] = settings.local_ca_file
    elif cloud is not Cloud.GLOBAL:
        options["authority"] = settings.profile(cloud).authority
    return options


def app_credential(settings: Settings) -> AsyncTokenCredential:
    """The function app's own identity (Key Vault, storage): managed identity in Azure and locally."""
    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id,
                                         **_verify_only(settings))
    # A developer machine outside the local stack: the usual developer credentials.
    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


def _verify_only(settings: Settings) -> dict[str, Any]:
    return {"connection_verify": settings.local_ca_file} if settings.local_ca_file else {}


async def connection_credential(conn: Connection, settings: Settings,
                                secrets: SecretStore | None) -> AsyncTokenCredential:
    """The credential `conn` uses for Graph, reading its client secret or certificate from Key Vault."""
    auth = conn.auth
    if isinstance(auth, ManagedIdentityAuth):
        return ManagedIdentityCredential(client_id=auth.client_id or settings.managed_identity_client_id,
                                         **_verify_only(settings))
    options = _transport_options(settings, conn.cloud)
    if isinstance(auth, ClientSecretAuth):
        secret = await _read_secret(secrets, auth.secret_name, conn, "auth.secretName")
        return ClientSecretCredential(conn.tenant_id, auth.client_id, secret, **options)
    if isinstance(auth, CertificateAuth):
        pem = await _read_secret(secrets, auth.certificate_secret_name, conn, "auth.certificateSecretName")
        return CertificateCredential(conn.tenant_id, auth.client_id, certificate_data=pem.encode(),
                                     send_certificate_chain=auth.send_certificate_chain, **options)
    raise Configuration(f"connection {conn.name!r} has an unknown auth kind", setting="CONNECTIONS")


async def _read_secret(secrets: SecretStore | None, name: str, conn: Connection, field: str) -> str:
    if secrets is None:
        raise Configuration(f"connection {conn.name!r} keeps its credential in Key Vault ({field}) but "
                            "KEY_VAULT_URL is not set", setting="KEY_VAULT_URL")
    try:
        found = await secrets.get(name)
    except NotFound:
        raise Configuration(f"connection {conn.name!r}: secret {name!r} ({field}) is not in the vault",
                            setting="CONNECTIONS") from None
    if not found.value:
        raise Configuration(f"connection {conn.name!r}: secret {name!r} ({field}) is empty", setting="CONNECTIONS")
    return found.value


#: What to fix for the identity platform's answers, by AADSTS code
#: (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
_FIXES = {
    500011: "the token's audience {resource} is not a resource of the tenant's cloud: check the connection's "
            "`cloud` (global, usgov, china or local)",
    1002012: "the scope {scope} is not valid for this authority: check the connection's `cloud`",
    90002: "the tenant is not found in this cloud: check the connection's `tenantId` and `cloud`",
    700016: "the app is not found in the tenant: check `auth.clientId`, `tenantId` and `cloud`",
    7000215: "the client secret was refused: put the secret's value (not its id) in Key Vault under "
             "`auth.secretName`",
    7000222: "the client secret has expired: add a new one to the app registration and to Key Vault",
    700027: "the certificate was refused: upload it to the app registration (Certificates & secrets) and check "
            "`auth.certificateSecretName`",
}
_AADSTS = re.compile(r"AADSTS(\d+)")
#: azure-core prefixes a message with its error code, "(None)" when the answer had none.
_CODE_PREFIX = re.compile(r"^\(\w*\)\s*")


def token_error(exc: Exception, *, connection: str, scope: str) -> BridgeError:
    """A credential's failure to get a token for `scope`, as the taxonomy, naming the setting to fix.

    The identity platform's answer is quoted (it names the resource, tenant or app, never a secret); an
    authority that cannot be reached is Transient, with the cloud named because a wrong one also ends so.
    """
    resource = scope.removesuffix("/.default")
    text = str(getattr(exc, "message", None) or exc).strip()
    first = _CODE_PREFIX.sub("", (text.splitlines() or [type(exc).__name__])[0])[:300]
    if isinstance(exc, ClientAuthenticationError):
        code = _AADSTS.search(str(exc))
        fix = _FIXES.get(int(code.group(1))) if code else None
        fix = (fix or "check the connection's `cloud` (the token's audience {resource} must be the Graph of its "
                      "cloud), `tenantId` and `auth`").format(resource=resource, scope=scope)
        return Configuration(f"connection {connection!r} cannot get a token for {resource}: {first} - {fix}",
                             setting="CONNECTIONS")
    if isinstance(exc, AzureError | OSError):
        return Transient(f"connection {connection!r} cannot reach its authority for a token for {resource} "
                         f"({type(exc).__name__}); if it persists, check the connection's `cloud`")
    raise exc


async def get_token(credential: AsyncTokenCredential, scope: str, *, connection: str) -> AccessToken:
    """A token for `scope`; every failure is translated by `token_error`."""
    try:
        return await credential.get_token(scope)
    except (AzureError, OSError) as exc:
        raise token_error(exc, connection=connection, scope=scope) from None


async def certificate_token_claims(conn: Connection, settings: Settings, client_id: str, pem: str) -> dict[str, Any]:
    """Sign in as `client_id` with a PEM certificate and key; the Graph token's claims (the token is dropped)."""
    credential = CertificateCredential(conn.tenant_id, client_id, certificate_data=pem.encode(),
                                       **_transport_options(settings, conn.cloud))
    try:
        token = await credential.get_token(settings.profile(conn.cloud).graph_scope)
    finally:
        await credential.close()
    # Our own fresh token, read for who signed in and what was granted; nothing is trusted from it.
    claims: dict[str, Any] = jwt.decode(token.token, options={"verify_signature": False})
    return claims
