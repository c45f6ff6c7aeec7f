"""The bridge directory: the users a connection imported, as stored in the `users` table.

Sync writes these rows; rotation reads the rotation-group flag; passkeys move the enrollment state.
Partition = connection name, row = the user's Entra object id. A row never holds a password.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class UserState(StrEnum):
    """Where a user stands in the bridge."""

    ACTIVE = "active"
    DEACTIVATED = "deactivated"  # left every sync group (removal behaviour "deactivate"), or disabled in Entra
    REMOVED = "removed"  # left every sync group under removal behaviour "delete"
    MISSING_IN_ENTRA = "missing_in_entra"  # deleted in Entra


class Enrollment(StrEnum):
    """A user's credential enrollment, mirrored into the enrollment-state groups."""

    NOT_ENROLLED = "not_enrolled"
    PAIRED_WITH_PROVIDER = "paired_with_provider"
    PAIRED_WITH_ENTRA = "paired_with_entra"


class UserRow(BaseModel):
    """One imported user."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Annotated[str, Field(min_length=1)]
    upn: Annotated[str, Field(alias="userPrincipalName")]
    display_name: Annotated[str, Field(alias="displayName")] = ""
    mail: str | None = None
    account_enabled: Annotated[bool, Field(alias="accountEnabled")] = True
    on_premises_sync: Annotated[bool, Field(alias="onPremisesSyncEnabled")] = False
    #: Ids of the sync groups through which the user is included (directly or nested).
    groups: list[str] = Field(default_factory=list)
    state: UserState = UserState.ACTIVE
    domain: str = ""
    first_seen: Annotated[dt.datetime | None, Field(alias="firstSeen")] = None
    last_seen: Annotated[dt.datetime | None, Field(alias="lastSeen")] = None
    in_rotation_group: Annotated[bool, Field(alias="inRotationGroup")] = False
    enrollment: Enrollment = Enrollment.NOT_ENROLLED

    @property
    def active(self) -> bool:
        """Imported, enabled in Entra, and not removed."""
        return self.state is UserState.ACTIVE and self.account_enabled

    def to_row(self) -> dict[str, object]:
        """The stored form (aliases, JSON types)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
