"""Key Vault's error responses as the emulator sends them.

Key Vault answers errors with `{"error": {"code": ..., "message": ..., "innererror": {...}}}`
(the KeyVaultError model of the REST API and of azure-keyvault-secrets). Status codes follow
https://learn.microsoft.com/en-us/azure/key-vault/general/rest-error-codes .
"""

from __future__ import annotations

from typing import Any


class VaultError(Exception):
    """An error answer: HTTP status, Key Vault error code and message, optional inner code."""

    def __init__(self, status: int, code: str, message: str, *, inner: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Key Vault sends for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def bad_parameter(message: str) -> VaultError:
    """400 BadParameter: a malformed name, body, attribute or tag."""
    return VaultError(400, "BadParameter", message)


def secret_not_found(name: str, version: str | None = None) -> VaultError:
    """404 SecretNotFound, worded as Key Vault words it."""
    what = f"(name/id) {name}/{version}" if version else f"(name/id) {name}"
    return VaultError(404, "SecretNotFound",
                      f"A secret with {what} was not found in this key vault. If you recently deleted this "
                      "secret you may be able to recover it using the correct recovery command.")


def deleted_secret_not_found(name: str) -> VaultError:
    """404 SecretNotFound for the deleted-secrets collection."""
    return VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def deleted_conflict(name: str) -> VaultError:
    """409 Conflict: the name belongs to a deleted secret that was not purged."""
    return VaultError(409, "Conflict",
                      f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                      "reused; in this state, the secret can only be recovered or purged.")


def disabled_secret(operation: str) -> VaultError:
    """403 Forbidden: a disabled version cannot be read."""
    return VaultError(403, "Forbidden", f"Operation {operation} is not allowed on a disabled secret.")
