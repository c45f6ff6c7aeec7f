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

    #: The bridge directory: `users`, then `users01`..`users15`, each holding some partitions of every
    #: connection (shared/adapters/users.py).
    USERS = "users"
    USERS01 = "users01"
    USERS02 = "users02"
    USERS03 = "users03"
    USERS04 = "users04"
    USERS05 = "users05"
    USERS06 = "users06"
    USERS07 = "users07"
    USERS08 = "users08"
    USERS09 = "users09"
    USERS10 = "users10"
    USERS11 = "users11"
    USERS12 = "users12"
    USERS13 = "users13"
    USERS14 = "users14"
    USERS15 = "users15"
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


#: The tables of the bridge directory, in the order shared.adapters.users.TableUsers fills them.
USERS_TABLES: tuple[Table, ...] = (Table.USERS, *(Table(f"users{n:02d}") for n in range(1, 16)))
