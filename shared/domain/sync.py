"""Sync planning: from what Entra says and what the bridge holds, the changes to make. Pure.

The planner never sees a partial read: the service aborts before planning when any page failed
(docs/architecture.md, invariant 4). It still guards against mass removal: removals above the connection's
threshold (percent of the directory and an absolute count, whichever is smaller) block the plan.

Graph's delta queries do not follow nesting (https://learn.microsoft.com/graph/delta-query-groups:
`members@delta` lists direct members only), so the bridge keeps the direct membership of every group
under the sync groups (`GroupTree`), applies each group's member changes to it, and recomputes
effective (transitive) membership locally.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
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

    @classmethod
    def from_row(cls, row: UserRow) -> EntraUser:
        """What the directory last knew of a user (groups are recomputed by the caller)."""
        return cls(id=row.id, upn=row.upn, display_name=row.display_name, mail=row.mail,
                   account_enabled=row.account_enabled, on_premises_sync=row.on_premises_sync)

    def updated(self, item: Mapping[str, object]) -> EntraUser:
        """Apply the properties a delta page carries (absent ones are unchanged)."""
        return EntraUser(
            id=self.id,
            upn=str(item["userPrincipalName"]) if item.get("userPrincipalName") else self.upn,
            display_name=str(item["displayName"] or "") if "displayName" in item else self.display_name,
            mail=(str(item["mail"]) if item["mail"] else None) if "mail" in item else self.mail,
            account_enabled=item["accountEnabled"] is not False if "accountEnabled" in item else self.account_enabled,
            on_premises_sync=item["onPremisesSyncEnabled"] is True if "onPremisesSyncEnabled" in item
            else self.on_premises_sync,
            groups=self.groups)

    def with_groups(self, groups: frozenset[str]) -> EntraUser:
        """The same user included through `groups`."""
        return EntraUser(self.id, self.upn, self.display_name, self.mail, self.account_enabled,
                         self.on_premises_sync, groups)

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
        # A user deleted in Entra stays "missing" on later runs, whose delta no longer reports the deletion.
        target = _removed_state(removal, user_id in deleted_in_entra or current.state is UserState.MISSING_IN_ENTRA)
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


# ----------------------------------------------------------------------------- the group tree

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
#: Graph's limit on ids in one filtered groups/delta query (https://learn.microsoft.com/graph/api/group-delta).
DELTA_FILTER_MAX = 50


def member_kind(item: Mapping[str, object]) -> str | None:
    """"user", "group", or None for members sync ignores (devices, service principals, contacts)."""
    kind = str(item.get("@odata.type") or "")
    if kind == GROUP_TYPE:
        return "group"
    if kind == USER_TYPE or (not kind and "userPrincipalName" in item):
        return "user"
    return None


@dataclass
class GroupTree:
    """Direct members (users and groups) of every group under the roots (sync groups, rotation group)."""

    users: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)

    def add_group(self, group_id: str) -> None:
        """Know a group (with no members yet)."""
        self.users.setdefault(group_id, set())
        self.children.setdefault(group_id, set())

    def groups(self) -> set[str]:
        """Every group known."""
        return set(self.users)

    def reachable(self, roots: Iterable[str]) -> set[str]:
        """Groups under the roots (roots included), cycles tolerated."""
        found: set[str] = set()
        stack = [r for r in roots if r in self.users]
        while stack:
            group = stack.pop()
            if group in found:
                continue
            found.add(group)
            stack.extend(c for c in self.children.get(group, ()) if c in self.users and c not in found)
        return found

    def effective(self, root: str) -> set[str]:
        """Users in `root`, directly or through nested groups."""
        result: set[str] = set()
        for group in self.reachable([root]):
            result |= self.users[group]
        return result

    def prune(self, roots: Iterable[str]) -> set[str]:
        """Forget groups no longer under any root; returns the ids forgotten."""
        keep = self.reachable(roots)
        gone = set(self.users) - keep
        for group in gone:
            self.users.pop(group, None)
            self.children.pop(group, None)
        return gone

    def apply_members(self, group_id: str, members: Sequence[Mapping[str, object]]) -> tuple[set[str], set[str]]:
        """Apply one group's `members@delta`; returns (groups newly nested, users added)."""
        self.add_group(group_id)
        new_groups: set[str] = set()
        new_users: set[str] = set()
        for item in members:
            member = str(item.get("id") or "")
            if not member:
                continue
            removed = "@removed" in item
            kind = member_kind(item)
            if removed:
                # A removed member's type is sometimes left out: drop it from both sides.
                self.users[group_id].discard(member)
                self.children[group_id].discard(member)
            elif kind == "user":
                if member not in self.users[group_id]:
                    new_users.add(member)
                self.users[group_id].add(member)
            elif kind == "group":
                if member not in self.children[group_id]:
                    new_groups.add(member)
                self.children[group_id].add(member)
        return new_groups, new_users

    def copy(self) -> GroupTree:
        """A deep copy (runs work on a copy and keep it only when they complete)."""
        return GroupTree({g: set(u) for g, u in self.users.items()}, {g: set(c) for g, c in self.children.items()})


def scope(tree: GroupTree, sync_roots: Sequence[str]) -> dict[str, frozenset[str]]:
    """Each user in scope -> the sync groups through which they are included."""
    found: dict[str, set[str]] = {}
    for root in sync_roots:
        for user_id in tree.effective(root):
            found.setdefault(user_id, set()).add(root)
    return {user_id: frozenset(roots) for user_id, roots in found.items()}


def user_changes(items: Iterable[Mapping[str, object]]) -> tuple[dict[str, Mapping[str, object]], set[str]]:
    """A users/delta read -> (changed users by id, ids deleted in Entra). The same user may appear twice."""
    changed: dict[str, Mapping[str, object]] = {}
    deleted: set[str] = set()
    for item in items:
        user_id = str(item.get("id") or "")
        if not user_id:
            continue
        if "@removed" in item:
            deleted.add(user_id)
            changed.pop(user_id, None)
        else:
            deleted.discard(user_id)
            merged = dict(changed.get(user_id, {}))
            merged.update(item)
            changed[user_id] = merged
    return changed, deleted


def chunks(ids: Iterable[str], size: int = DELTA_FILTER_MAX) -> list[list[str]]:
    """Sorted ids in runs of at most `size` (one filtered delta query each)."""
    ordered = sorted(ids)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]
