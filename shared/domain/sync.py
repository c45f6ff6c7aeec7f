"""Sync planning: from what Entra says and what the bridge holds, the changes to make. Pure.

The planner never sees a partial read: the service aborts before planning when any page failed
(DESIGN.md invariant 4). It still guards against mass removal: removals above the connection's
threshold (percent of the directory and an absolute count, whichever is smaller) block the plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import RemovalBehaviour, RemovalThreshold
from shared.domain.directory import UserRow, UserState

#: Graph's user attributes the directory keeps (the `$select` of every user read).
USER_FIELDS = ("id", "userPrincipalName", "displayName", "mail", "accountEnabled", "onPremisesSyncEnabled")


@dataclass(frozen=True)
class EntraUser:
    """A user as Graph returned it, with the sync groups it was found through."""

    id: str
    upn: str
    display_name: str = ""
    mail: str | None = None
    account_enabled: bool = True
    on_premises_sync: bool = False
    groups: frozenset[str] = frozenset()

    @classmethod
    def from_graph(cls, item: Mapping[str, object], group: str) -> EntraUser:
        """Build from a Graph user object found through sync group `group`."""
        return cls(id=str(item["id"]), upn=str(item.get("userPrincipalName") or ""),
                   display_name=str(item.get("displayName") or ""),
                   mail=str(item["mail"]) if item.get("mail") else None,
                   account_enabled=item.get("accountEnabled") is not False,
                   on_premises_sync=item.get("onPremisesSyncEnabled") is True, groups=frozenset({group}))

    def merged(self, other: EntraUser) -> EntraUser:
        """The same user found through another group."""
        return EntraUser(self.id, self.upn, self.display_name, self.mail, self.account_enabled,
                         self.on_premises_sync, self.groups | other.groups)


@dataclass
class SyncPlan:
    """The changes one run will make."""

    add: list[UserRow] = field(default_factory=list)
    update: list[UserRow] = field(default_factory=list)
    remove: list[UserRow] = field(default_factory=list)
    unchanged: int = 0
    blocked: str | None = None

    @property
    def changes(self) -> int:
        """How many rows change."""
        return len(self.add) + len(self.update) + len(self.remove)


def domain_of(upn: str) -> str:
    """The domain part of a UPN, lower case."""
    return upn.rpartition("@")[2].lower()


def plan(existing: Mapping[str, UserRow], seen: Mapping[str, EntraUser], *, rotation_members: frozenset[str],
         removal: RemovalBehaviour, threshold: RemovalThreshold, now: dt.datetime,
         deleted_in_entra: frozenset[str] = frozenset()) -> SyncPlan:
    """Compare the directory with a complete read of Entra and list the changes."""
    result = SyncPlan()
    for user_id, user in seen.items():
        current = existing.get(user_id)
        row = UserRow(id=user.id, upn=user.upn, display_name=user.display_name, mail=user.mail,
                      account_enabled=user.account_enabled, on_premises_sync=user.on_premises_sync,
                      groups=sorted(user.groups), domain=domain_of(user.upn),
                      state=UserState.ACTIVE if user.account_enabled else UserState.DEACTIVATED,
                      first_seen=current.first_seen if current and current.first_seen else now, last_seen=now,
                      in_rotation_group=user_id in rotation_members,
                      enrollment=current.enrollment if current else UserRow.model_fields["enrollment"].default)
        if current is None:
            result.add.append(row)
        elif _differs(current, row):
            result.update.append(row)
        else:
            result.unchanged += 1
    for user_id, current in existing.items():
        if user_id in seen:
            continue
        target = _removed_state(removal, user_id in deleted_in_entra)
        if current.state is target and not current.in_rotation_group:
            continue
        if target is None:
            continue  # removal behaviour "keep": the row stays as it is
        result.remove.append(current.model_copy(update={"state": target, "in_rotation_group": False,
                                                        "groups": [], "last_seen": current.last_seen}))
    limit = _removal_limit(len(existing), threshold)
    departures = [r for r in result.remove if existing[r.id].state is UserState.ACTIVE]
    if len(departures) > limit:
        result.blocked = (f"{len(departures)} users would be removed, above the threshold of {limit} "
                          f"({threshold.percent:g}% of {len(existing)}, at most {threshold.absolute}); "
                          "nothing was removed - check the sync groups, or raise features.sync.removalThreshold")
    return result


def _removed_state(removal: RemovalBehaviour, deleted: bool) -> UserState | None:
    if deleted:
        return UserState.MISSING_IN_ENTRA
    if removal is RemovalBehaviour.KEEP:
        return None
    if removal is RemovalBehaviour.DELETE:
        return UserState.REMOVED
    return UserState.DEACTIVATED


def _removal_limit(size: int, threshold: RemovalThreshold) -> int:
    return min(int(size * threshold.percent / 100), threshold.absolute)


def _differs(current: UserRow, new: UserRow) -> bool:
    keys = ("upn", "display_name", "mail", "account_enabled", "on_premises_sync", "groups", "state", "domain",
            "in_rotation_group")
    return any(getattr(current, k) != getattr(new, k) for k in keys)
