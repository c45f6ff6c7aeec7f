"""Key Vault's published limits and validation rules for secrets, checked before anything is stored.

Sources:
- names: 1-127 characters of 0-9, a-z, A-Z and "-"
  (https://learn.microsoft.com/en-us/azure/key-vault/general/about-keys-secrets-certificates#object-identifiers)
- value at most 25 KB, contentType at most 255 characters, exp/nbf informational only
  (https://learn.microsoft.com/en-us/azure/key-vault/secrets/about-secrets)
- 15 tags, names and values of at most 512 characters; throttling per vault per 10 s
  (https://learn.microsoft.com/en-us/azure/key-vault/general/service-limits)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from local.vault.errors import VaultError, bad_parameter

NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_PATTERN = re.compile(r"^[0-9a-zA-Z]{1,64}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE = 255
MAX_TAGS = 15
MAX_TAG_LENGTH = 512
SECRET_CREATES_PER_WINDOW = 300
OTHER_TRANSACTIONS_PER_WINDOW = 4000
WINDOW_SECONDS = 10.0
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
# Versions the installed azure-keyvault-secrets knows (azure/keyvault/secrets/_shared/client_base.py).
API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01",
                          "2026-04-01"})


def check_name(name: str) -> str:
    """A secret name, or 400 BadParameter naming the rule it breaks."""
    if not NAME_PATTERN.fullmatch(name):
        raise bad_parameter(f"The request URI contains an invalid name: {name[:130]}. A secret name must be "
                            "1-127 characters long and contain only 0-9, a-z, A-Z and '-'.")
    return name


def check_version(version: str) -> str:
    """A version id as Key Vault issues them (32 hex characters), or 400."""
    if not VERSION_PATTERN.fullmatch(version):
        raise bad_parameter(f"The request URI contains an invalid version: {version[:70]}.")
    return version


def check_api_version(value: str | None) -> str:
    """The api-version query parameter, which every request must carry."""
    if not value:
        raise bad_parameter("The request URI must contain an api-version query parameter.")
    if value not in API_VERSIONS:
        raise bad_parameter(f"The specified version ({value[:20]}) is not recognized. Consider using the latest "
                            "supported version (2026-04-01).")
    return value


def check_value(value: Any) -> str:
    """The secret value: a string of at most 25 KB once encoded."""
    if not isinstance(value, str):
        raise bad_parameter("The parameter 'value' is required and must be a string.")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise bad_parameter(f"The secret value is too large: the maximum is {MAX_VALUE_BYTES} bytes.")
    return value


def check_content_type(value: Any) -> str | None:
    """contentType: absent, or a string of at most 255 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_parameter("The parameter 'contentType' must be a string.")
    if len(value) > MAX_CONTENT_TYPE:
        raise bad_parameter(f"The parameter 'contentType' is longer than {MAX_CONTENT_TYPE} characters.")
    return value


def check_tags(value: Any) -> dict[str, str] | None:
    """tags: absent, or at most 15 string pairs of at most 512 characters each."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise bad_parameter("The parameter 'tags' must be an object of string names and values.")
    if len(value) > MAX_TAGS:
        raise bad_parameter(f"Too many tags: {len(value)} given, at most {MAX_TAGS} are allowed.")
    tags: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise bad_parameter("Tag names and values must be strings.")
        if not key:
            raise bad_parameter("Tag names must not be empty.")
        if len(key) > MAX_TAG_LENGTH:
            raise bad_parameter(f"Tag name '{key[:40]}...' is longer than {MAX_TAG_LENGTH} characters.")
        if len(item) > MAX_TAG_LENGTH:
            raise bad_parameter(f"The value of tag '{key[:40]}' is longer than {MAX_TAG_LENGTH} characters.")
        tags[key] = item
    return tags


def _int_date(attributes: Mapping[str, Any], field: str) -> int | None:
    value = attributes.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_parameter(f"The attribute '{field}' must be an IntDate (seconds since 1970-01-01 UTC).")
    return int(value)


def check_attributes(value: Any) -> dict[str, Any]:
    """attributes: enabled (bool), nbf and exp (IntDate, nbf before exp); read-only fields ignored."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise bad_parameter("The parameter 'attributes' must be an object.")
    out: dict[str, Any] = {}
    if "enabled" in value and value["enabled"] is not None:
        if not isinstance(value["enabled"], bool):
            raise bad_parameter("The attribute 'enabled' must be a boolean.")
        out["enabled"] = value["enabled"]
    for field in ("nbf", "exp"):
        if field in value:
            out[field] = _int_date(value, field)
    return out


def check_window(nbf: int | None, exp: int | None) -> None:
    """nbf, when both are set, must come before exp."""
    if nbf is not None and exp is not None and nbf >= exp:
        raise bad_parameter("The attribute 'nbf' (not before) must be earlier than 'exp' (expires).")


def check_body(body: Any) -> Mapping[str, Any]:
    """A JSON object body, or 400."""
    if not isinstance(body, Mapping):
        raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
    return body


def check_maxresults(value: str | None) -> int:
    """maxresults: 1 to 25, 25 when absent (Key Vault's page size for secrets)."""
    if value is None:
        return 25
    try:
        number = int(value)
    except ValueError:
        raise bad_parameter("The parameter 'maxresults' must be an integer from 1 to 25.") from None
    if not 1 <= number <= 25:
        raise bad_parameter("The parameter 'maxresults' must be an integer from 1 to 25.")
    return number
