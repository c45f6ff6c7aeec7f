"""SecretStore on Key Vault (azure-keyvault-secrets, async), the same against the emulator and Azure.

The SDK's own retries are switched off so that there is one retry policy, here: 429 waits the
Retry-After the vault sent (bounded: a longer wait is handed to the caller as Throttled, which every
instance honours); 5xx and broken connections are retried with back-off when repeating is harmless.
A new version (PUT) whose answer was lost is never repeated blindly: it raises Ambiguous, because a
version may exist that the caller does not know about. SDK errors are translated once, in
`_translate`; no value ever reaches an exception or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar
from urllib.parse import urlparse

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretProperties
from azure.keyvault.secrets.aio import SecretClient

from shared.errors import (
    Ambiguous,
    BridgeError,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Throttled,
    Transient,
)
from shared.services.ports import SecretState, SecretVersion

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The role the bridge's identity needs on the vault (read, write, tag and delete its secrets).
OFFICER_ROLE = "Key Vault Secrets Officer"
# Limits from https://learn.microsoft.com/en-us/azure/key-vault/general/about-keys-secrets-certificates
# and https://learn.microsoft.com/en-us/azure/key-vault/secrets/about-secrets
NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_LENGTH = 512
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_name(name: str) -> str:
    """A secret name Key Vault accepts, or InvalidInput naming the rule."""
    if not NAME.fullmatch(name):
        raise InvalidInput(f"secret name {name[:130]!r} must be 1-127 characters of 0-9, a-z, A-Z and '-'",
                           field="name")
    return name


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags Key Vault accepts: at most 15, names and values of at most 512 characters."""
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"{len(tags)} tags given; Key Vault keeps at most {MAX_TAGS}", field="tags")
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_LENGTH or len(value) > MAX_TAG_LENGTH:
            raise InvalidInput(f"tag {key[:40]!r}: names and values must be 1-{MAX_TAG_LENGTH} characters",
                               field="tags")
    return dict(tags)


def check_value(name: str, value: str) -> None:
    """InvalidInput when the value is bigger than Key Vault keeps (the message names the secret, not its value)."""
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise InvalidInput(f"the value for secret {name} exceeds Key Vault's {MAX_VALUE_BYTES} bytes", field="value")


def _error_codes(exc: HttpResponseError) -> tuple[str, str]:
    """Key Vault's error code and inner code, from the parsed model or the raw body."""
    code = getattr(exc.error, "code", None) or ""
    inner = ""
    innererror = getattr(exc.error, "innererror", None)
    if isinstance(innererror, Mapping):
        inner = str(innererror.get("code") or "")
    if (not code or not inner) and exc.response is not None:
        try:
            body = json.loads(exc.response.text() or "{}")
            error = body.get("error") or {}
            code = code or str(error.get("code") or "")
            inner = inner or str((error.get("innererror") or {}).get("code") or "")
        except (ValueError, AttributeError):
            pass
    return code, inner


def _retry_after(exc: HttpResponseError, default: float) -> float:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    for header in ("retry-after-ms", "x-ms-retry-after-ms"):
        if headers.get(header):
            try:
                return float(headers[header]) / 1000
            except ValueError:
                pass
    try:
        return float(headers.get("Retry-After") or default)
    except ValueError:
        return default


def _request_id(exc: HttpResponseError) -> str | None:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    value = headers.get("x-ms-request-id")
    return str(value) if value else None


def _translate(exc: AzureError, what: str, *, write: bool = False) -> BridgeError:
    """The one place SDK errors become the bridge's taxonomy; `what` names the operation and secret."""
    if isinstance(exc, ClientAuthenticationError) and not isinstance(exc, HttpResponseError | ResourceNotFoundError):
        return PermissionDenied(f"could not get a token for Key Vault while trying to {what}: check the "
                                "connection's credential", role=OFFICER_ROLE)
    if isinstance(exc, ServiceResponseError | IncompleteReadError) or (
            isinstance(exc, HttpResponseError) and not exc.status_code):
        # The request went out and the answer was lost: a write may have happened.
        cls = Ambiguous if write else Transient
        return cls(f"Key Vault's answer was lost while trying to {what}")
    if isinstance(exc, ServiceRequestError):
        return Transient(f"Key Vault could not be reached while trying to {what}")
    if not isinstance(exc, HttpResponseError):
        return Transient(f"unexpected failure while trying to {what}: {type(exc).__name__}")
    status = exc.status_code or 0
    code, inner = _error_codes(exc)
    request_id = _request_id(exc)
    if status == 429:
        return Throttled(f"Key Vault throttled the request to {what}", retry_after=_retry_after(exc, 1.0),
                         scope="keyvault", request_id=request_id)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(f"Key Vault has no such secret ({what})", request_id=request_id)
    if isinstance(exc, ResourceExistsError) or status == 409:
        return Conflict(f"cannot {what}: the secret is deleted but not purged (recover or purge it first)",
                        request_id=request_id)
    if status == 401:
        return PermissionDenied(f"Key Vault refused the token while trying to {what}", role=OFFICER_ROLE,
                                request_id=request_id)
    if status == 403 and inner != "ForbiddenByRbac" and code == "Forbidden":
        return Conflict(f"cannot {what}: the version is disabled", request_id=request_id)
    if status == 403:
        return PermissionDenied(f"the bridge's identity lacks the vault role '{OFFICER_ROLE}' needed to {what}",
                                role=OFFICER_ROLE, request_id=request_id)
    if status == 400:
        return InvalidInput(f"Key Vault rejected the request to {what} ({code or 'BadParameter'})",
                            request_id=request_id)
    if status >= 500:
        cls = Ambiguous if write and status in (500, 502, 504) else Transient
        return cls(f"Key Vault answered {status} while trying to {what}", request_id=request_id)
    return Transient(f"Key Vault answered {status} while trying to {what}", request_id=request_id)


def _version(props: SecretProperties, value: str | None = None) -> SecretVersion:
    return SecretVersion(name=props.name or "", version=props.version or "", tags=dict(props.tags or {}),
                         enabled=bool(props.enabled), created_on=props.created_on, value=value)


class KeyVaultSecretStore:
    """Implements shared.services.ports.SecretStore on one vault."""

    def __init__(self, vault_url: str, credential: AsyncTokenCredential, *, connection_verify: str | bool = True,
                 verify_challenge_resource: bool | None = None, max_attempts: int = 4,
                 max_throttle_wait: float = 30.0, backoff: float = 0.5,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        host = urlparse(vault_url).hostname or ""
        if verify_challenge_resource is None:
            # The resource in a local vault's challenge cannot match its 127.0.0.1 address
            # (docs/architecture.md, "Facts the code relies on").
            verify_challenge_resource = host not in LOOPBACK
        self.vault_url = vault_url
        self._client = SecretClient(vault_url, credential, verify_challenge_resource=verify_challenge_resource,
                                    connection_verify=connection_verify, retry_total=0)
        self._max_attempts = max(1, max_attempts)
        self._max_throttle_wait = max_throttle_wait
        self._backoff = backoff
        self._sleep = sleep

    async def close(self) -> None:
        """Close the SDK client's connections."""
        await self._client.close()

    async def __aenter__(self) -> KeyVaultSecretStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]], *, write: bool = False,
                    repeatable: bool = True) -> T:
        """Run one SDK call with the retry policy described in the module docstring."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except AzureError as exc:
                error = _translate(exc, what, write=write)
            retryable = isinstance(error, Throttled) or (
                isinstance(error, Transient) and not isinstance(error, Ambiguous) and repeatable)
            if not retryable or attempt >= self._max_attempts:
                # A secret that does not exist is an answer callers expect (a day with no audit anchor yet),
                # not a failure to warn about; they decide what it means.
                log.log(logging.DEBUG if isinstance(error, NotFound) else logging.WARNING,
                        "key vault: %s failed: %s", what, error.slug)
                raise error from None
            if isinstance(error, Throttled):
                if error.retry_after > self._max_throttle_wait:
                    raise error from None
                delay = error.retry_after
            else:
                delay = self._backoff * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311 - jitter
            log.info("key vault: %s: %s, retrying in %.2fs", what, error.slug, delay)
            await self._sleep(delay)

    async def put(self, name: str, value: str, *, tags: Mapping[str, str],
                  content_type: str | None = None) -> SecretVersion:
        """Write a new version with tags; returns it without the value."""
        check_name(name)
        checked = check_tags(tags)
        check_value(name, value)
        secret = await self._call(f"write a new version of secret {name}",
                                  lambda: self._client.set_secret(name, value, tags=checked,
                                                                  content_type=content_type),
                                  write=True, repeatable=False)
        log.info("key vault: wrote secret %s version %s", name, secret.properties.version)
        return _version(secret.properties)

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        """Read a version (latest when None) with its value; NotFound when absent, Conflict when disabled."""
        check_name(name)
        secret = await self._call(f"read secret {name} version {version or '(latest)'}",
                                  lambda: self._client.get_secret(name, version))
        return _version(secret.properties, secret.value)

    async def set_tags(self, name: str, version: str, tags: Mapping[str, str], *,
                       enabled: bool | None = None) -> SecretVersion:
        """Replace a version's tags (and optionally enable or disable it)."""
        check_name(name)
        checked = check_tags(tags)
        props = await self._call(f"update tags of secret {name} version {version}",
                                 lambda: self._client.update_secret_properties(name, version, tags=checked,
                                                                               enabled=enabled),
                                 write=True)
        return _version(props)

    async def versions(self, name: str) -> list[SecretVersion]:
        """Every version's properties, newest first, without values; empty when the secret does not exist."""
        check_name(name)

        async def collect() -> list[SecretProperties]:
            return [p async for p in self._client.list_properties_of_secret_versions(name)]

        try:
            found = await self._call(f"list versions of secret {name}", collect)
        except NotFound:
            return []
        # Creation times have one-second precision: among equals the later-listed (newer) comes first.
        ordered = sorted(reversed(found), key=lambda p: p.created_on.timestamp() if p.created_on else 0.0,
                         reverse=True)
        return [_version(p) for p in ordered]

    async def versions_in_state(self, name: str, state: SecretState | str) -> list[SecretVersion]:
        """Versions whose `state` tag equals `state`, newest first."""
        wanted = str(state)
        return [v for v in await self.versions(name) if v.state == wanted]

    async def delete(self, name: str) -> None:
        """Soft-delete the secret (recoverable until purged); NotFound counts as done."""
        check_name(name)
        try:
            await self._call(f"delete secret {name}", lambda: self._client.delete_secret(name), write=True)
        except NotFound:
            return
        log.info("key vault: soft-deleted secret %s", name)

    async def recover(self, name: str) -> None:
        """Recover a soft-deleted secret with all its versions."""
        check_name(name)
        await self._call(f"recover deleted secret {name}", lambda: self._client.recover_deleted_secret(name),
                         write=True)

    async def purge(self, name: str) -> None:
        """Purge a soft-deleted secret for good; NotFound counts as done."""
        check_name(name)
        try:
            await self._call(f"purge deleted secret {name}", lambda: self._client.purge_deleted_secret(name),
                             write=True)
        except NotFound:
            return

