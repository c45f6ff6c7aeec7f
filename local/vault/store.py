"""The emulator's secrets: versions, soft delete, and an encrypted journal in the data folder.

Every change appends the secret's whole new state to `secrets.jsonl`; start-up replays the journal and
rewrites it compacted. Values are sealed with AES-GCM under a key kept in `vault.key` (mode 0600) with
the name and version as associated data, so a value cannot be moved to another version on disk and no
value is ever written in plain text. Names are case-insensitive, as in Key Vault.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random_source
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from local.vault import rules
from local.vault.errors import (
    deleted_conflict,
    deleted_secret_not_found,
    disabled_secret,
    secret_not_found,
)

JOURNAL = "secrets.jsonl"
KEY_FILE = "vault.key"
DAY = 86400


class EmulatedClock:
    """Wall-clock seconds that run `scale` times faster than real time from the moment of creation."""

    def __init__(self, scale: float = 1.0, *, source: Callable[[], float] = time.time) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._source = source
        self._origin = source()

    def now(self) -> float:
        """Emulated seconds since the epoch."""
        real = self._source()
        return self._origin + (real - self._origin) * self.scale

    def real_seconds(self, emulated: float) -> float:
        """How long `emulated` seconds last in real time."""
        return emulated / self.scale


@dataclass
class Version:
    """One version of a secret; `sealed` is nonce + AES-GCM ciphertext, Base64."""

    id: str
    sealed: str
    created: int
    updated: int
    enabled: bool = True
    content_type: str | None = None
    tags: dict[str, str] | None = None
    nbf: int | None = None
    exp: int | None = None


@dataclass
class Secret:
    """A secret: its versions in creation order and, when soft-deleted, the deletion dates."""

    name: str
    versions: list[Version] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None

    @property
    def latest(self) -> Version:
        """The newest version (the one a GET without version returns)."""
        return self.versions[-1]

    def find(self, version: str) -> Version | None:
        """A version by id (ids compare case-insensitively)."""
        wanted = version.lower()
        return next((v for v in self.versions if v.id == wanted), None)


def _load_key(folder: Path) -> bytes:
    path = folder / KEY_FILE
    if path.exists():
        key = base64.b64decode(path.read_bytes())
        if len(key) != 32:
            raise ValueError(f"{path} does not hold a 256-bit key")
        return key
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(key))
    return key


class SecretBook:
    """All secrets of one vault, with Key Vault's semantics; answers in the REST API's JSON shapes."""

    def __init__(self, folder: Path, base_url: str, clock: EmulatedClock | None = None) -> None:
        self.folder = folder
        self.base_url = base_url.rstrip("/")
        self.clock = clock or EmulatedClock()
        folder.mkdir(parents=True, exist_ok=True)
        self._aead = AESGCM(_load_key(folder))
        self._secrets: dict[str, Secret] = {}
        self._replay()

    # ------------------------------------------------------------------ persistence

    def _replay(self) -> None:
        path = self.folder / JOURNAL
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed process: the change never completed
                if entry.get("op") == "purge":
                    self._secrets.pop(entry["key"], None)
                elif entry.get("op") == "put":
                    raw = entry["secret"]
                    versions = [Version(**v) for v in raw.pop("versions")]
                    self._secrets[raw["name"].lower()] = Secret(versions=versions, **raw)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for secret in self._secrets.values():
                fh.write(json.dumps({"op": "put", "secret": asdict(secret)}) + "\n")
        os.replace(tmp, path)
        self._journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def _save(self, secret: Secret) -> None:
        self._journal.write(json.dumps({"op": "put", "secret": asdict(secret)}) + "\n")
        self._journal.flush()

    def _forget(self, key: str) -> None:
        self._secrets.pop(key, None)
        self._journal.write(json.dumps({"op": "purge", "key": key}) + "\n")
        self._journal.flush()

    def close(self) -> None:
        """Close the journal."""
        self._journal.close()

    def _seal(self, name: str, version: str, value: str) -> str:
        nonce = random_source.token_bytes(12)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), f"{name.lower()}/{version}".encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def _open(self, name: str, version: Version) -> str:
        raw = base64.b64decode(version.sealed)
        return self._aead.decrypt(raw[:12], raw[12:], f"{name.lower()}/{version.id}".encode()).decode("utf-8")

    # ------------------------------------------------------------------ lookups

    def _now(self) -> int:
        return int(self.clock.now())

    def _expire_purges(self, key: str) -> None:
        secret = self._secrets.get(key)
        if secret and secret.scheduled_purge_date is not None and self._now() >= secret.scheduled_purge_date:
            self._forget(key)

    def _active(self, name: str, version: str | None = None) -> Secret:
        rules.check_name(name)
        key = name.lower()
        self._expire_purges(key)
        secret = self._secrets.get(key)
        if secret is None or secret.deleted_date is not None:
            raise secret_not_found(name, version)
        return secret

    def _deleted(self, name: str) -> Secret:
        rules.check_name(name)
        key = name.lower()
        self._expire_purges(key)
        secret = self._secrets.get(key)
        if secret is None or secret.deleted_date is None:
            raise deleted_secret_not_found(name)
        return secret

    # ------------------------------------------------------------------ JSON shapes

    def _attributes(self, version: Version) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": version.enabled}
        if version.nbf is not None:
            attributes["nbf"] = version.nbf
        if version.exp is not None:
            attributes["exp"] = version.exp
        attributes.update(created=version.created, updated=version.updated,
                          recoveryLevel=rules.RECOVERY_LEVEL, recoverableDays=rules.RECOVERABLE_DAYS)
        return attributes

    def _bundle(self, secret: Secret, version: Version, *, value: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if value:
            body["value"] = self._open(secret.name, version)
        body["id"] = f"{self.base_url}/secrets/{secret.name}/{version.id}"
        if version.content_type is not None:
            body["contentType"] = version.content_type
        body["attributes"] = self._attributes(version)
        if version.tags:
            body["tags"] = dict(version.tags)
        return body

    def _item(self, secret: Secret, version: Version, *, with_version: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": f"{self.base_url}/secrets/{secret.name}"
                                      + (f"/{version.id}" if with_version else "")}
        item["attributes"] = self._attributes(version)
        if version.tags:
            item["tags"] = dict(version.tags)
        if version.content_type is not None:
            item["contentType"] = version.content_type
        return item

    def _deleted_extras(self, secret: Secret) -> dict[str, Any]:
        return {"recoveryId": f"{self.base_url}/deletedsecrets/{secret.name}",
                "scheduledPurgeDate": secret.scheduled_purge_date, "deletedDate": secret.deleted_date}

    # ------------------------------------------------------------------ operations

    def set(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT /secrets/{name}: a new version (the secret is created on first use)."""
        rules.check_name(name)
        body = rules.check_body(body)
        value = rules.check_value(body.get("value"))
        content_type = rules.check_content_type(body.get("contentType"))
        tags = rules.check_tags(body.get("tags"))
        attributes = rules.check_attributes(body.get("attributes"))
        rules.check_window(attributes.get("nbf"), attributes.get("exp"))
        key = name.lower()
        self._expire_purges(key)
        secret = self._secrets.get(key)
        if secret is not None and secret.deleted_date is not None:
            raise deleted_conflict(secret.name)
        if secret is None:
            secret = Secret(name=name)
        now = self._now()
        version_id = uuid.uuid4().hex
        version = Version(id=version_id, sealed=self._seal(secret.name, version_id, value), created=now,
                          updated=now, enabled=attributes.get("enabled", True), content_type=content_type,
                          tags=tags, nbf=attributes.get("nbf"), exp=attributes.get("exp"))
        secret.versions.append(version)
        self._secrets[key] = secret
        self._save(secret)
        return self._bundle(secret, version, value=True)

    def get(self, name: str, version: str | None) -> dict[str, Any]:
        """GET /secrets/{name}/{version?}: the value; disabled versions are refused (403)."""
        if version:
            rules.check_version(version)
        secret = self._active(name, version)
        found = secret.find(version) if version else secret.latest
        if found is None:
            raise secret_not_found(name, version)
        if not found.enabled:
            raise disabled_secret("get")
        return self._bundle(secret, found, value=True)

    def update(self, name: str, version: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH /secrets/{name}/{version?}: contentType, attributes and tags (tags are replaced)."""
        if version:
            rules.check_version(version)
        body = rules.check_body(body)
        content_type = rules.check_content_type(body.get("contentType"))
        tags = rules.check_tags(body.get("tags"))
        attributes = rules.check_attributes(body.get("attributes"))
        secret = self._active(name, version)
        found = secret.find(version) if version else secret.latest
        if found is None:
            raise secret_not_found(name, version)
        nbf = attributes.get("nbf", found.nbf)
        exp = attributes.get("exp", found.exp)
        rules.check_window(nbf, exp)
        found.nbf, found.exp = nbf, exp
        if "enabled" in attributes:
            found.enabled = attributes["enabled"]
        if "contentType" in body:
            found.content_type = content_type
        if "tags" in body:
            found.tags = tags
        found.updated = self._now()
        self._save(secret)
        return self._bundle(secret, found, value=False)

    def list_secrets(self) -> list[dict[str, Any]]:
        """Items of GET /secrets: every active secret with its latest version's attributes, by name."""
        for key in list(self._secrets):
            self._expire_purges(key)
        active = sorted((s for s in self._secrets.values() if s.deleted_date is None), key=lambda s: s.name.lower())
        return [self._item(s, s.latest, with_version=False) for s in active]

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """Items of GET /secrets/{name}/versions, oldest first."""
        secret = self._active(name)
        return [self._item(secret, v, with_version=True) for v in secret.versions]

    def delete(self, name: str) -> dict[str, Any]:
        """DELETE /secrets/{name}: soft delete; the name stays reserved until purged or recovered."""
        secret = self._active(name)
        now = self._now()
        secret.deleted_date = now
        secret.scheduled_purge_date = now + rules.RECOVERABLE_DAYS * DAY
        self._save(secret)
        return {**self._bundle(secret, secret.latest, value=False), **self._deleted_extras(secret)}

    def get_deleted(self, name: str) -> dict[str, Any]:
        """GET /deletedsecrets/{name}."""
        secret = self._deleted(name)
        return {**self._bundle(secret, secret.latest, value=False), **self._deleted_extras(secret)}

    def list_deleted(self) -> list[dict[str, Any]]:
        """Items of GET /deletedsecrets, by name."""
        for key in list(self._secrets):
            self._expire_purges(key)
        deleted = sorted((s for s in self._secrets.values() if s.deleted_date is not None),
                         key=lambda s: s.name.lower())
        return [{**self._item(s, s.latest, with_version=False), **self._deleted_extras(s)} for s in deleted]

    def recover(self, name: str) -> dict[str, Any]:
        """POST /deletedsecrets/{name}/recover: back to active, every version intact."""
        secret = self._deleted(name)
        secret.deleted_date = None
        secret.scheduled_purge_date = None
        self._save(secret)
        return self._bundle(secret, secret.latest, value=False)

    def purge(self, name: str) -> None:
        """DELETE /deletedsecrets/{name}: gone for good, name free again."""
        secret = self._deleted(name)
        self._forget(secret.name.lower())

    def exists(self, name: str) -> bool:
        """Whether an active secret has this name (for tests and the admin API)."""
        secret = self._secrets.get(name.lower())
        return secret is not None and secret.deleted_date is None

