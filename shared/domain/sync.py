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
import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.domain.directory import UserRow, UserState
from shared.domain.features import RemovalBehaviour, RemovalThreshold

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
         deleted_in_entra: frozenset[str] = frozenset(), size: int | None = None) -> SyncPlan:
    """Compare directory rows with what Entra says of the same users and list the changes.

    `existing` holds the rows of the users concerned (every row on a full comparison, only the affected
    users' rows on an incremental run); `size` is the directory's size, which the removal threshold is
    relative to (the number of rows given when left out).
    """
    result = SyncPlan()
    for user_id, user in seen.items():
        current = existing.get(user_id)
        row = new_row(current, user, in_rotation_group=user_id in rotation_members, now=now)
        if current is None:
            result.add.append(row)
        elif _differs(current, row):
            result.update.append(row)
        else:
            result.unchanged += 1
    for user_id, current in existing.items():
        if user_id in seen:
            continue
        gone = removed_row(current, removal, deleted=user_id in deleted_in_entra)
        if gone is not None:
            result.remove.append(gone)
    departures = sum(1 for r in result.remove if existing[r.id].state is UserState.ACTIVE)
    result.blocked = blocked(departures, len(existing) if size is None else size, threshold)
    return result


def new_row(current: UserRow | None, user: EntraUser, *, in_rotation_group: bool, now: dt.datetime) -> UserRow:
    """The row of a user in scope, keeping what only the bridge knows (first seen, enrollment)."""
    return UserRow(id=user.id, upn=user.upn, display_name=user.display_name, mail=user.mail,
                   account_enabled=user.account_enabled, on_premises_sync=user.on_premises_sync,
                   groups=sorted(user.groups), domain=domain_of(user.upn),
                   state=UserState.ACTIVE if user.account_enabled else UserState.DEACTIVATED,
                   first_seen=current.first_seen if current and current.first_seen else now, last_seen=now,
                   in_rotation_group=in_rotation_group,
                   enrollment=current.enrollment if current else UserRow.model_fields["enrollment"].default)


def removed_row(current: UserRow, removal: RemovalBehaviour, *, deleted: bool) -> UserRow | None:
    """The row of a user no longer in scope, or None when it stays as it is."""
    # A user deleted in Entra stays "missing" on later runs, whose delta no longer reports the deletion.
    target = _removed_state(removal, deleted or current.state is UserState.MISSING_IN_ENTRA)
    if target is None or (current.state is target and not current.in_rotation_group):
        return None  # removal behaviour "keep", or already in its removed state
    return current.model_copy(update={"state": target, "in_rotation_group": False, "groups": [],
                                      "last_seen": current.last_seen})


def blocked(departures: int, size: int, threshold: RemovalThreshold) -> str | None:
    """Why removing `departures` active users of a directory of `size` rows is refused, if it is."""
    limit = _removal_limit(size, threshold)
    if departures <= limit:
        return None
    return (f"{departures} users would be removed, above the threshold of {limit} "
            f"({threshold.percent:g}% of {size}, at most {threshold.absolute}); "
            "nothing was removed - check the sync groups, or raise features.sync.removalThreshold")


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


_COMPARED = ("upn", "display_name", "mail", "account_enabled", "on_premises_sync", "groups", "state", "domain",
             "in_rotation_group")


def _differs(current: UserRow, new: UserRow) -> bool:
    return any(getattr(current, k) != getattr(new, k) for k in _COMPARED)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def row_digest(row: UserRow) -> int:
    """A 64-bit digest of what `differs` compares: equal digests, a row that need not be written again."""
    return _digest(repr(tuple(getattr(row, k) for k in _COMPARED)))


class RowDigests:
    """Each stored row's id and `row_digest`, 16 bytes a row, sorted once: what a full run compares the users it
    reads with, so it reads again (by id) only the rows that changed."""

    def __init__(self) -> None:
        self._keys = array("Q")
        self._digests = array("Q")
        self._sorted = True

    def add(self, row: UserRow) -> None:
        """Remember one stored row."""
        self._keys.append(_digest(row.id))
        self._digests.append(row_digest(row))
        self._sorted = False

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, user_id: str) -> int | None:
        """The digest of the stored row of `user_id`, or None when there is none."""
        if not self._sorted:
            order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
            self._keys = array("Q", (self._keys[i] for i in order))
            self._digests = array("Q", (self._digests[i] for i in order))
            self._sorted = True
        key = _digest(user_id)
        at = bisect_left(self._keys, key)
        return self._digests[at] if at < len(self._keys) and self._keys[at] == key else None


# ----------------------------------------------------------------------------- the group tree

#: Graph's limit on ids in one filtered groups/delta query (https://learn.microsoft.com/graph/api/group-delta).
DELTA_FILTER_MAX = 50


@dataclass(frozen=True, slots=True)
class MemberChange:
    """One direct member in a group's delta: added (or listed), or removed."""

    id: str
    #: "user", "group", or None for members sync ignores (devices, service principals, contacts); a removed
    #: member's type is sometimes left out by Graph.
    kind: str | None
    removed: bool = False


@dataclass(frozen=True, slots=True)
class GroupChange:
    """One group in a groups/delta round: deleted, or its direct members added and removed."""

    id: str
    removed: bool = False
    members: tuple[MemberChange, ...] = ()


@dataclass(frozen=True, slots=True)
class UserChange:
    """One user in a users/delta round: deleted, or the attributes of USER_FIELDS that changed."""

    id: str
    removed: bool = False
    #: Attribute name (as USER_FIELDS names it) -> new value; only those Graph reported.
    attributes: Mapping[str, object] = field(default_factory=dict)


@dataclass
class GroupTree:
    """Direct members (users and groups) of every group under the roots (sync groups, rotation group)."""

    users: dict[str, set[str]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    #: Groups whose member sets are still those of the tree this one was forked from (copied on first change).
    shared: set[str] = field(default_factory=set)

    def add_group(self, group_id: str) -> None:
        """Know a group (with no members yet)."""
        self.users.setdefault(group_id, set())
        self.children.setdefault(group_id, set())

    def fork(self) -> GroupTree:
        """A tree to change while this one stays as it is: a group's sets are copied only when it changes,
        so a run that changes a few groups does not hold the tree twice."""
        return GroupTree(dict(self.users), dict(self.children), shared=set(self.users))

    def _own(self, group_id: str) -> None:
        if group_id in self.shared:
            self.shared.discard(group_id)
            self.users[group_id] = set(self.users[group_id])
            self.children[group_id] = set(self.children[group_id])

    def clear(self, group_id: str) -> None:
        """A deleted group: no members any more."""
        self.users[group_id] = set()
        self.children[group_id] = set()
        self.shared.discard(group_id)

    def remove_users(self, user_ids: set[str]) -> set[str]:
        """Take users (deleted in Entra) out of every group; returns the groups they were in."""
        changed = {group for group, members in self.users.items() if members & user_ids}
        for group in changed:
            self._own(group)
            self.users[group] -= user_ids
        return changed

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
            self.shared.discard(group)
        return gone

    def apply_members(self, group_id: str, members: Sequence[MemberChange]) -> tuple[set[str], set[str]]:
        """Apply one group's member changes; returns (groups newly nested, users added)."""
        self.add_group(group_id)
        self._own(group_id)
        new_groups: set[str] = set()
        new_users: set[str] = set()
        for item in members:
            member = item.id
            if not member:
                continue
            if item.removed:
                # A removed member's type is sometimes left out: drop it from both sides.
                self.users[group_id].discard(member)
                self.children[group_id].discard(member)
            elif item.kind == "user":
                if member not in self.users[group_id]:
                    new_users.add(member)
                self.users[group_id].add(member)
            elif item.kind == "group":
                if member not in self.children[group_id]:
                    new_groups.add(member)
                self.children[group_id].add(member)
        return new_groups, new_users

    def among(self, root: str, ids: Iterable[str]) -> set[str]:
        """Those of `ids` in `root`, directly or through nested groups (cost: the groups, not their users)."""
        wanted = set(ids)
        found: set[str] = set()
        for group in self.reachable([root]):
            found |= self.users[group] & wanted
        return found

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


def scope_among(tree: GroupTree, sync_roots: Sequence[str], ids: Iterable[str]) -> dict[str, frozenset[str]]:
    """`scope` for some users only: each of `ids` in scope -> the sync groups through which they are included."""
    wanted = set(ids)
    found: dict[str, set[str]] = {}
    for root in sync_roots:
        for user_id in tree.among(root, wanted):
            found.setdefault(user_id, set()).add(root)
    return {user_id: frozenset(roots) for user_id, roots in found.items()}


def affected_users(old: GroupTree, new: GroupTree, groups: Iterable[str]) -> set[str]:
    """Users whose effective membership of any group may differ between `old` and `new`, given that only
    `groups` changed: direct members added or removed there, and every user under a nested group added
    or removed there (in either tree). A user not listed is in the same groups in both trees."""
    found: set[str] = set()
    moved: set[str] = set()
    for group in groups:
        found |= old.users.get(group, set()) ^ new.users.get(group, set())
        moved |= old.children.get(group, set()) ^ new.children.get(group, set())
    for child in moved:
        found |= old.effective(child) if child in old.users else set()
        found |= new.effective(child) if child in new.users else set()
    return found


class SeenIds:
    """A compact set of object ids: 8 bytes each (a 64-bit BLAKE2b digest), sorted once everything is added.

    A full run keeps the ids it has read here instead of the rows themselves. Two ids sharing a digest
    (about one chance in 10^7 at a million users) only keeps the other user's row as it is: a missed
    removal, never a wrong one.
    """

    def __init__(self) -> None:
        self._keys = array("Q")
        self._sorted = True

    def add(self, user_id: str) -> None:
        """Remember one id."""
        self._keys.append(_digest(user_id))
        self._sorted = False

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, user_id: object) -> bool:
        if not isinstance(user_id, str):
            return False
        if not self._sorted:
            self._keys = array("Q", sorted(set(self._keys)))
            self._sorted = True
        key = _digest(user_id)
        at = bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key


def user_changes(items: Iterable[UserChange]) -> tuple[dict[str, Mapping[str, object]], set[str]]:
    """A users/delta read -> (changed users by id, ids deleted in Entra). The same user may appear twice."""
    changed: dict[str, Mapping[str, object]] = {}
    deleted: set[str] = set()
    for item in items:
        user_id = item.id
        if not user_id:
            continue
        if item.removed:
            deleted.add(user_id)
            changed.pop(user_id, None)
        else:
            deleted.discard(user_id)
            merged = dict(changed.get(user_id, {}))
            merged.update(item.attributes)
            merged["id"] = user_id
            changed[user_id] = merged
    return changed, deleted


def chunks(ids: Iterable[str], size: int = DELTA_FILTER_MAX) -> list[list[str]]:
    """Sorted ids in runs of at most `size` (one filtered delta query each)."""
    ordered = sorted(ids)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]
