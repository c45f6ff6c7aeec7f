"""Names of the queues and tables the app uses (docs/architecture.md, Runtime topology); infra must create each one."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """Work queues; each has a poison queue `<name>-poison` made by the host after maxDequeueCount."""

    SYNC = "sync-work"
    ROTATION = "rotation-work"
    DEVICE = "device-work"
    #: A nudge per connection: publish its outbox events (docs/events.md).
    EVENTS = "events-work"
    EXPORT = "export-work"

    @property
    def poison(self) -> str:
        """Name of this queue's poison queue."""
        return f"{self.value}-poison"


class Table(StrEnum):
    """Table storage tables; names are alphanumeric as Table storage requires."""

    USERS = "users"
    GROUPS = "groups"
    DEVICES = "devices"
    PASSKEYS = "passkeys"
    CEREMONIES = "ceremonies"
    #: The FIDO Metadata Service blob, verified, that attestation is checked against.
    FIDOMETADATA = "fidometadata"
    SYNCSTATE = "syncstate"
    ROTATIONS = "rotations"
    AUDIT = "audit"
    THROTTLE = "throttle"
    OPERATIONS = "operations"
    LEASES = "leases"
    #: Device token ids (jti) already accepted, so a signed request cannot be replayed.
    USEDTOKENS = "usedtokens"
    #: Events to the provider: the outbox, the published change feed and its sequence (docs/events.md).
    EVENTS = "events"
    #: Resources received by the SCIM service, their links to Entra objects and pending export changes.
    SCIM = "scim"
