"""Enrollment-state groups: which Entra group each bridge user belongs in, and the moves to get there. Pure.

When passkeys are enabled, every active user of a connection is a member of exactly one of three
groups ("not yet enrolled", "paired with provider", "paired with Entra"); users who are not active are
in none. The planner compares that with the groups' actual members and repairs drift both ways:
missing members are added, members who should not be there (other users, stale states) are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.config import EnrollmentGroupNames
from shared.domain.directory import Enrollment, UserRow, UserState


def group_name(names: EnrollmentGroupNames, state: Enrollment) -> str:
    """The configured display name of the group for `state`."""
    return str(getattr(names, state.value))


def mail_nickname(state: Enrollment) -> str:
    """A stable mailNickname for the group of `state` (Graph requires one; ASCII without spaces)."""
    return "bridge-" + state.value.replace("_", "-")


def target(row: UserRow) -> Enrollment | None:
    """The group a user belongs in: their enrollment state when active, none otherwise."""
    if row.state is not UserState.ACTIVE:
        return None
    return row.enrollment


@dataclass
class MembershipPlan:
    """Members to add to and remove from each enrollment-state group."""

    add: dict[Enrollment, list[str]] = field(default_factory=lambda: {s: [] for s in Enrollment})
    remove: dict[Enrollment, list[str]] = field(default_factory=lambda: {s: [] for s in Enrollment})

    @property
    def changes(self) -> int:
        """How many memberships change."""
        return sum(len(v) for v in self.add.values()) + sum(len(v) for v in self.remove.values())


def plan_membership(rows: Iterable[UserRow], current: Mapping[Enrollment, set[str]]) -> MembershipPlan:
    """Compare each user's target group with the groups' actual members (drift repaired both ways)."""
    wanted: dict[Enrollment, set[str]] = {s: set() for s in Enrollment}
    for row in rows:
        state = target(row)
        if state is not None:
            wanted[state].add(row.id)
    result = MembershipPlan()
    for state in Enrollment:
        have = current.get(state, set())
        result.add[state] = sorted(wanted[state] - have)
        result.remove[state] = sorted(have - wanted[state])
    return result


def plan_move(user_id: str, to: Enrollment | None) -> MembershipPlan:
    """Moves for one user whose state just changed: into `to`, out of every other group."""
    result = MembershipPlan()
    for state in Enrollment:
        if state is to:
            result.add[state] = [user_id]
        else:
            result.remove[state] = [user_id]
    return result
