"""Who may call the emulator: Entra tokens (validated against the simulator's JWKS) and vault roles.

Key Vault answers an unauthenticated request with 401 and a challenge naming the authority and the
resource; the SDK reads the tenant from it and asks for a token for https://vault.azure.net
(https://learn.microsoft.com/en-us/azure/key-vault/general/authentication). With the RBAC model a
caller needs a data-plane role; missing ones give 403 "Caller is not authorized to perform action on
resource." with inner code ForbiddenByRbac (https://learn.microsoft.com/en-us/azure/key-vault/general/rbac-guide;
the body as the service sends it is quoted in
https://learn.microsoft.com/en-us/answers/questions/2139767/azure-core-exceptions-httpresponseerror-(forbidden).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from local.vault.errors import VaultError

VAULT_RESOURCE = "https://vault.azure.net"
AUDIENCES = (VAULT_RESOURCE, VAULT_RESOURCE + "/")

OFFICER = "Key Vault Secrets Officer"
USER = "Key Vault Secrets User"
READER = "Key Vault Reader"
ADMINISTRATOR = "Key Vault Administrator"

# Data actions of each operation and the built-in roles that hold them
# (https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles/security).
READ_METADATA = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
ACTIONS: dict[str, str] = {
    "set": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
    "get": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "update": "Microsoft.KeyVault/vaults/secrets/write",
    "delete": "Microsoft.KeyVault/vaults/secrets/delete",
    "list": READ_METADATA,
    "versions": READ_METADATA,
    "get_deleted": READ_METADATA,
    "list_deleted": READ_METADATA,
    "recover": "Microsoft.KeyVault/vaults/secrets/recover/action",
    "purge": "Microsoft.KeyVault/vaults/secrets/purge/action",
}
GRANTS: dict[str, frozenset[str]] = {
    ADMINISTRATOR: frozenset(ACTIONS),
    OFFICER: frozenset(ACTIONS),
    USER: frozenset({"get", "list", "versions", "get_deleted", "list_deleted"}),
    READER: frozenset({"list", "versions", "get_deleted", "list_deleted"}),
}
KNOWN_ROLES = frozenset(GRANTS)


@dataclass(frozen=True)
class Caller:
    """The validated token's principal."""

    oid: str
    appid: str
    tid: str


def challenge_header(authority: str, tenant: str) -> str:
    """The WWW-Authenticate value Key Vault sends with every 401."""
    return f'Bearer authorization="{authority.rstrip("/")}/{tenant}", resource="{VAULT_RESOURCE}"'


class TokenValidator:
    """Checks bearer tokens: RS256 signature from the authority's JWKS, audience, issuer, lifetime."""

    def __init__(self, authority: str, tenant: str, *, ssl_context: ssl.SSLContext | None = None,
                 leeway: float = 60.0) -> None:
        self.authority = authority.rstrip("/")
        self.tenant = tenant
        self.issuer = f"{self.authority}/{tenant}/v2.0"
        self.leeway = leeway
        self._jwks = jwt.PyJWKClient(f"{self.authority}/{tenant}/discovery/v2.0/keys", cache_keys=True,
                                     lifespan=300, ssl_context=ssl_context, timeout=10)

    def _unauthorized(self, message: str) -> VaultError:
        return VaultError(401, "Unauthorized", message,
                          headers={"WWW-Authenticate": challenge_header(self.authority, self.tenant)})

    async def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this Authorization header, or 401 with the challenge."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise self._unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        token = authorization[7:].strip()
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise VaultError(503, "ServiceUnavailable",
                             "The token's signing keys could not be fetched from the authority.") from None
        except (jwt.PyJWKClientError, jwt.DecodeError):
            raise self._unauthorized("The token is malformed or signed with an unknown key.") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=list(AUDIENCES), issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iat", "aud", "iss", "oid"]})
        except jwt.ExpiredSignatureError:
            raise self._unauthorized("The token is expired.") from None
        except jwt.InvalidAudienceError:
            raise self._unauthorized(f"Invalid audience. Expected {VAULT_RESOURCE}.") from None
        except jwt.InvalidIssuerError:
            raise self._unauthorized(f"Invalid issuer. Expected {self.issuer}.") from None
        except jwt.InvalidTokenError as exc:
            raise self._unauthorized(f"The token is not valid: {type(exc).__name__}.") from None
        return Caller(oid=str(claims["oid"]), appid=str(claims.get("appid") or claims.get("azp") or ""),
                      tid=str(claims.get("tid") or ""))


class RoleBook:
    """Role assignments from a JSON file {principal object id: role or [roles]}, reread when it changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._roles: dict[str, frozenset[str]] = {}
        self._extra: dict[str, set[str]] = {}

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._roles, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        self._roles = parse_roles(json.loads(self.path.read_text(encoding="utf-8") or "{}"))
        self._stamp = stamp

    def grant(self, oid: str, role: str) -> None:
        """Grant in memory (the admin API); the file keeps its own grants."""
        if role not in KNOWN_ROLES:
            raise ValueError(f"unknown role {role!r}; known: {sorted(KNOWN_ROLES)}")
        self._extra.setdefault(oid.lower(), set()).add(role)

    def revoke(self, oid: str) -> None:
        """Drop the in-memory grants of a principal."""
        self._extra.pop(oid.lower(), None)

    def roles(self, oid: str) -> frozenset[str]:
        """Every role the principal holds."""
        self._reload()
        return self._roles.get(oid.lower(), frozenset()) | frozenset(self._extra.get(oid.lower(), set()))

    def authorize(self, caller: Caller, operation: str, resource: str) -> None:
        """Allow the operation or raise 403 ForbiddenByRbac naming the action and the caller."""
        if any(operation in GRANTS[role] for role in self.roles(caller.oid)):
            return
        raise VaultError(
            403, "Forbidden",
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe "
            "propagation time.\r\n"
            f"Caller: appid={caller.appid};oid={caller.oid};iss=\r\n"
            f"Action: '{ACTIONS[operation]}'\r\n"
            f"Resource: '{resource}'\r\n"
            "Assignment: (not found)\r\n",
            inner="ForbiddenByRbac")


def parse_roles(raw: Any) -> dict[str, frozenset[str]]:
    """Validate a role document: object ids to a known role name or a list of them."""
    if not isinstance(raw, dict):
        raise ValueError("the roles file must hold a JSON object {principal object id: role}")
    out: dict[str, frozenset[str]] = {}
    for oid, value in raw.items():
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"roles of {oid} must be a role name or a list of role names")
        unknown = [n for n in names if n not in KNOWN_ROLES]
        if unknown:
            raise ValueError(f"unknown role(s) {unknown} for {oid}; known: {sorted(KNOWN_ROLES)}")
        out[str(oid).lower()] = frozenset(names)
    return out
