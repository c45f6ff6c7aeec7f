"""Events to the provider (docs/events.md): what happened, as CloudEvents 1.0 attributes, without I/O.

An event says which connection (`source`), whom (`subject`), what (`type`) and carries ids and versions
only: never a password, a key or a token. Its `id` is derived from the change itself, so the same
change recorded twice (a redelivered message, a retried request, a run read again) is the same event
and a subscriber recognises the redelivery (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md#id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Prefix of every event type: `bridge.user.imported`.
TYPE_PREFIX = "bridge."
#: Events and the change feed are kept this long (Event Grid retries for 24 hours; the feed is for pull).
RETENTION = dt.timedelta(days=30)


class EventType(StrEnum):
    """The event types, as docs/events.md lists them (the `type` attribute is `bridge.` + value)."""

    USER_IMPORTED = "user.imported"
    USER_UPDATED = "user.updated"
    USER_DEACTIVATED = "user.deactivated"
    USER_REMOVED = "user.removed"
    USER_MISSING_IN_ENTRA = "user.missingInEntra"
    PASSWORD_ROTATED = "password.rotated"  # noqa: S105 - an event type; the event carries the version only
    PASSKEY_REGISTERED = "passkey.registered"
    PASSKEY_REVOKED = "passkey.revoked"
    PASSKEY_DELETED_IN_ENTRA = "passkey.deletedInEntra"
    DEVICE_REMOVED = "device.removed"
    ENROLLMENT_CHANGED = "enrollment.changed"
    #: A received SCIM change applied to Entra (shared/services/export.py).
    EXPORT_APPLIED = "export.applied"

    @property
    def cloud_type(self) -> str:
        """The CloudEvents `type` attribute."""
        return TYPE_PREFIX + self.value


# Names of data members that would carry a secret; an event with one is refused before it is stored.
_SECRET_NAMES = re.compile(r"(?i)(password|secret|token|private|credential|assertion|^key$|pem)")
# Ids and versions are short and printable; anything long or odd is not what an event carries.
_MAX_VALUE = 512


class EventRefused(ValueError):
    """An event would carry something it must not (a secret-looking member, a non-scalar value)."""


def source_of(connection: str) -> str:
    """The `source` attribute: the connection, as a URI reference."""
    return f"/connections/{connection}"


def event_id(connection: str, kind: EventType, subject: str, change: str) -> str:
    """A stable id: the same change (connection, type, subject, change key) always gives the same id."""
    digest = hashlib.sha256("\x1f".join((connection, kind.value, subject, change)).encode()).hexdigest()
    return digest[:32]


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    for name, value in data.items():
        if _SECRET_NAMES.search(name) and not name.endswith(("Id", "Version", "Ids")):
            raise EventRefused(f"event data member {name!r} looks like a secret; events carry ids and versions only")
        if isinstance(value, list):
            if not all(isinstance(v, str) and len(v) <= _MAX_VALUE for v in value):
                raise EventRefused(f"event data member {name!r} must be a list of short strings")
        elif value is not None and not isinstance(value, (str, int, bool)):
            raise EventRefused(f"event data member {name!r} has type {type(value).__name__}; ids and versions only")
        elif isinstance(value, str) and len(value) > _MAX_VALUE:
            raise EventRefused(f"event data member {name!r} is {len(value)} characters; ids and versions only")
    return data


@dataclass(frozen=True)
class Event:
    """One change to announce: the CloudEvents attributes the bridge sets, and its data (ids only)."""

    id: str
    type: EventType
    connection: str
    subject: str
    time: dt.datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The `source` attribute."""
        return source_of(self.connection)

    def to_json(self) -> dict[str, Any]:
        """The event in the CloudEvents JSON format (structured mode), as delivered and as the feed shows it."""
        return {"specversion": "1.0", "id": self.id, "source": self.source, "type": self.type.cloud_type,
                "subject": self.subject, "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json", "data": self.data}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Event:
        """The inverse of `to_json`."""
        source = str(doc["source"])
        kind = str(doc["type"])
        return cls(id=str(doc["id"]), type=EventType(kind.removeprefix(TYPE_PREFIX)),
                   connection=source.removeprefix("/connections/"), subject=str(doc["subject"]),
                   time=dt.datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")),
                   data=dict(doc.get("data") or {}))


def new_event(kind: EventType, *, connection: str, subject: str, change: str, time: dt.datetime,
              **data: Any) -> Event:
    """An event whose id is derived from `change` (what makes this change unique: a version, an operation id).

    `data` holds ids and versions only; a member that looks like a secret raises EventRefused.
    """
    payload = _checked({k: v for k, v in data.items() if v is not None})
    return Event(id=event_id(connection, kind, subject, change), type=kind, connection=connection, subject=subject,
                 time=time, data=payload)


def digest(value: Any) -> str:
    """A short digest of a JSON value (a row as written), for change keys that are a state, not an id."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
