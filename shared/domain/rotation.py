"""Rotation policy: who is due, who may be rotated, and how Key Vault versions change state.

The protocol (docs/architecture.md, invariant 1): a new password is written to Key Vault as a `pending` version
before Graph is asked to set it; only after Graph confirms does it become `current`. A version whose
Graph write had an unknown outcome stays `pending` and counts as "possibly current" until a later
rotation succeeds, so a device can always be handed every password Entra might hold.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

SECRET_PREFIX = "pwd"  # noqa: S105 - a name prefix, not a secret
STATE_TAG = "state"
ROTATION_TAG = "rotationId"
ROTATED_AT_TAG = "rotatedAt"
USER_TAG = "userId"

PENDING = "pending"
CURRENT = "current"
SUPERSEDED = "superseded"
FAILED = "failed"

# Who can reset whose password
# (https://learn.microsoft.com/entra/identity/role-based-access-control/privileged-roles-permissions#who-can-reset-passwords):
# a User Administrator may reset non-admins and holders of these limited roles only.
LIMITED_ROLES = frozenset({
    "Directory Readers", "Guest Inviter", "Helpdesk Administrator", "Message Center Reader",
    "Password Administrator", "Reports Reader", "User Administrator", "Usage Summary Reports Reader",
})
FULL_RESET_ROLES = frozenset({"Privileged Authentication Administrator", "Global Administrator"})
LIMITED_RESET_ROLES = frozenset({"User Administrator"})
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


class Refusal(StrEnum):
    """Why a user is not rotated; each value reads as the reason an operator sees."""

    NOT_ACTIVE = "user is not active in the bridge directory"
    NOT_IN_GROUP = "user is not in the rotation group"
    EXCLUDED = "user is excluded from rotation by the connection's settings"
    SYNCED_WITHOUT_WRITEBACK = ("user is synced from on-premises (onPremisesSyncEnabled) and the connection "
                                "declares no writeback path (features.rotation.writebackPath)")
    ADMIN_NEEDS_PRIVILEGED_ROLE = ("user holds an admin role: grant the app the 'Privileged Authentication "
                                   "Administrator' directory role to rotate it")
    APP_LACKS_ROLE = "the app holds no directory role that can reset passwords: assign 'User Administrator'"


@dataclass(frozen=True, kw_only=True)
class RotationSubject:
    """What rotation needs to know about one user."""

    user_id: str
    upn: str
    display_name: str = ""
    active: bool = True
    in_rotation_group: bool = True
    on_premises_sync: bool = False
    admin_roles: frozenset[str] = frozenset()
    last_rotated_at: dt.datetime | None = None


def secret_name(connection: str, user_id: str) -> str:
    """Key Vault name of a user's managed password: `pwd-<connection>-<user object id>`."""
    name = f"{SECRET_PREFIX}-{connection}-{user_id}"
    if not _SECRET_NAME.match(name):
        raise ValueError(f"secret name {name!r} breaks Key Vault's naming rules (1-127 of 0-9 a-z A-Z -)")
    return name


def refusal(subject: RotationSubject, *, excluded: Iterable[str], writeback_path: bool,
            app_roles: frozenset[str]) -> Refusal | None:
    """The reason `subject` may not be rotated, or None when it may."""
    if not subject.active:
        return Refusal.NOT_ACTIVE
    if not subject.in_rotation_group:
        return Refusal.NOT_IN_GROUP
    excluded_set = {e.lower() for e in excluded}
    if subject.user_id.lower() in excluded_set or subject.upn.lower() in excluded_set:
        return Refusal.EXCLUDED
    if subject.on_premises_sync and not writeback_path:
        return Refusal.SYNCED_WITHOUT_WRITEBACK
    if app_roles & FULL_RESET_ROLES:
        return None
    if not app_roles & LIMITED_RESET_ROLES:
        return Refusal.APP_LACKS_ROLE
    if subject.admin_roles - LIMITED_ROLES:
        return Refusal.ADMIN_NEEDS_PRIVILEGED_ROLE
    return None


def is_due(last_rotated_at: dt.datetime | None, *, interval_days: int, now: dt.datetime) -> bool:
    """Whether the rotation interval has elapsed (never rotated counts as due)."""
    return last_rotated_at is None or now - last_rotated_at >= dt.timedelta(days=interval_days)


def too_soon(last_rotated_at: dt.datetime | None, *, min_interval_minutes: int,
             now: dt.datetime) -> dt.timedelta | None:
    """How long to wait before a manual rotation is allowed, or None when it is allowed now."""
    if last_rotated_at is None:
        return None
    wait = last_rotated_at + dt.timedelta(minutes=min_interval_minutes) - now
    return wait if wait > dt.timedelta(0) else None


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    """A Key Vault version as the policy sees it."""

    version: str
    state: str | None
    created_on: dt.datetime
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class TagChange:
    """A state change to apply to one version; `enabled=False` disables it."""

    version: str
    state: str
    enabled: bool | None = None


@dataclass(frozen=True)
class VersionView:
    """The versions that matter to a device: the current one and those possibly current."""

    current: VersionInfo | None
    possibly_current: list[VersionInfo] = field(default_factory=list)


def view(versions: Sequence[VersionInfo]) -> VersionView:
    """Current version and every enabled pending version (whose Graph outcome is unknown).

    Pending versions are not filtered by age: Key Vault's `created` has one-second resolution, so a
    pending version written in the same second as the current one cannot be told apart by time, and
    handing a device one candidate too many is harmless while one too few could lose a password. A
    successful rotation supersedes every older pending version, so stale ones do not accumulate.
    """
    ordered = sorted(versions, key=lambda v: v.created_on, reverse=True)
    current = next((v for v in ordered if v.state == CURRENT and v.enabled), None)
    pending = [v for v in ordered if v.state == PENDING and v.enabled]
    return VersionView(current=current, possibly_current=pending)


def after_success(versions: Sequence[VersionInfo], new_version: str, *, keep_superseded: int) -> list[TagChange]:
    """Tag changes once Graph confirmed `new_version`: it becomes current, everything older superseded,
    and superseded versions beyond `keep_superseded` disabled (never purged)."""
    changes = [TagChange(version=new_version, state=CURRENT)]
    older = sorted((v for v in versions if v.version != new_version), key=lambda v: v.created_on, reverse=True)
    kept = 0
    for v in older:
        if v.state == FAILED:
            continue
        if v.state in (CURRENT, PENDING, SUPERSEDED):
            keep = kept < keep_superseded
            kept += 1
            if v.state != SUPERSEDED or (not keep and v.enabled):
                changes.append(TagChange(version=v.version, state=SUPERSEDED, enabled=None if keep else False))
    return changes


class Status(StrEnum):
    """Last outcome of a user's rotation, as status pages count them."""

    IN_PROGRESS = "in_progress"
    ROTATED = "rotated"
    POSSIBLY_CURRENT = "possibly_current"
    FAILED = "failed"
    REFUSED = "refused"


class RotationRow(BaseModel):
    """A user's rotation state: the last outcome, and the lease of the rotation running now (if any)."""

    model_config = ConfigDict(extra="ignore")

    status: Status | None = None
    reason: str | None = None
    last_rotated_at: dt.datetime | None = None
    last_rotation_id: str | None = None
    last_version: str | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: dt.datetime | None = None

    def leased_to_other(self, rotation_id: str, now: dt.datetime) -> bool:
        """Whether another rotation holds a lease that has not run out."""
        return self.lease_owner not in (None, rotation_id) and self.lease_until is not None and self.lease_until > now
