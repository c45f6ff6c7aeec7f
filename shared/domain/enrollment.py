"""Enrollment-state groups: which Entra group each bridge user belongs in, and the moves to get there. Pure.

When passkeys are enabled, every active user of a connection is a member of exactly one of three
groups ("not yet enrolled", "paired with provider", "paired with Entra"); users who are not active are
in none. The planner compares that with the groups' actual members and repairs drift both ways:
missing members are added, members who should not be there (other users, stale states) are removed.

Each group the bridge uses is recorded by object id: `owned` when the bridge created it, `adopted`
when a group with the configured name already existed. Uninstall deletes owned groups only (found by
their recorded id, so also when the configured name changed since) and names every adopted one it left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.directory import Enrollment, UserRow, UserState
from shared.domain.features import EnrollmentGroupNames


def group_name(names: EnrollmentGroupNames, state: Enrollment) -> str:
    """The configured display name of the group for `state`."""
    return str(getattr(names, state.value))


def mail_nickname(state: Enrollment) -> str:
    """A stable mailNickname for the group of `state` (Graph requires one; ASCII without spaces)."""
    return "bridge-" + state.value.replace("_", "-")


def description(state: Enrollment) -> str:
    """The description the bridge gives the group it creates for `state`."""
    return f"Kept by the credential bridge: users whose enrollment state is {state.value}. Do not edit by hand."


def made_by_bridge(group: Mapping[str, Any], state: Enrollment) -> bool:
    """Whether a group (Graph's `description` and `mailNickname`) still looks like the one the bridge creates
    for `state`: either is enough, so one of them edited by hand does not matter."""
    return group.get("description") == description(state) or group.get("mailNickname") == mail_nickname(state)


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


def plan_wanted(wanted: Mapping[Enrollment, set[str]], current: Mapping[Enrollment, set[str]]) -> MembershipPlan:
    """Members to add and remove so each group's members (`current`) become the users `wanted` in it."""
    result = MembershipPlan()
    for state in Enrollment:
        have, want = current.get(state, set()), wanted.get(state, set())
        result.add[state] = sorted(want - have)
        result.remove[state] = sorted(have - want)
    return result


def plan_repair(seen: Mapping[str, Mapping[Enrollment, bool]],
                goals: Mapping[str, Enrollment | None]) -> MembershipPlan:
    """Undo what others changed in the groups: `seen` is, for each user a groups/delta round reported, whether
    they are now in each group it reported on; `goals` the group each of those users belongs in (none: absent)."""
    result = MembershipPlan()
    for user_id, memberships in sorted(seen.items()):
        goal = goals.get(user_id)
        for state, member in memberships.items():
            if member and state is not goal:
                result.remove[state].append(user_id)
            elif not member and state is goal:
                result.add[state].append(user_id)
    return result


def plan_moves(moves: Mapping[str, tuple[Enrollment | None, Enrollment | None]]) -> MembershipPlan:
    """Moves of the users whose target group changed (user id -> (group before, group now))."""
    result = MembershipPlan()
    for user_id, (before, after) in sorted(moves.items()):
        if before is after:
            continue
        if after is not None:
            result.add[after].append(user_id)
        if before is not None:
            result.remove[before].append(user_id)
    return result


@dataclass(frozen=True)
class MemberChange:
    """One group's membership change, as the reconcile engine applies and audits it."""

    state: Enrollment
    group_id: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    kind = "members"

    @property
    def target(self) -> str:
        """The group."""
        return self.group_id

    @property
    def removals(self) -> int:
        """Members removed."""
        return len(self.removed)


def member_changes(ids: Mapping[Enrollment, str], plan: MembershipPlan) -> list[MemberChange]:
    """The plan as one change per group that has something to add or remove, in the order of `ids`."""
    return [MemberChange(state, group_id, tuple(plan.add[state]), tuple(plan.remove[state]))
            for state, group_id in ids.items() if plan.add[state] or plan.remove[state]]


def plan_move(user_id: str, to: Enrollment | None) -> MembershipPlan:
    """Moves for one user whose state just changed: into `to`, out of every other group."""
    result = MembershipPlan()
    for state in Enrollment:
        if state is to:
            result.add[state] = [user_id]
        else:
            result.remove[state] = [user_id]
    return result


# ----------------------------------------------------------------------------- which groups the bridge owns


class Ownership(StrEnum):
    """Whether the bridge may delete a group it uses."""

    OWNED = "owned"  # the bridge created it: uninstall deletes it
    ADOPTED = "adopted"  # it existed with the configured name: the bridge uses it and never deletes it


class GroupRecord(BaseModel):
    """A group the bridge uses for an enrollment state, recorded when it was created or adopted."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: Annotated[str, Field(min_length=1, description="the group's object id in Entra")]
    name: Annotated[str, Field(description="its display name when it was recorded (or last configured)")]
    state: Enrollment
    ownership: Ownership
    #: When the bridge created or adopted it; None for a record kept from before records had a date.
    recorded_at: Annotated[dt.datetime | None, Field(alias="recordedAt")] = None
    #: The sync run that created or adopted it ("" when unknown).
    run_id: Annotated[str, Field(alias="runId")] = ""

    def to_row(self) -> dict[str, Any]:
        """The stored form (aliases, JSON types)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def view(self, configured: str | None = None) -> dict[str, Any]:
        """The API's form; `configuredName` when the configured name is no longer the recorded one."""
        body = self.to_row()
        if configured is not None and configured != self.name:
            body["configuredName"] = configured
        return body


def in_use(records: Sequence[GroupRecord], state: Enrollment, name: str) -> GroupRecord | None:
    """The recorded group for `state` under its configured `name` (the newest, should there be several)."""
    found = [r for r in records if r.state is state and r.name == name]
    return max(found, key=lambda r: r.recorded_at or dt.datetime.min.replace(tzinfo=dt.UTC)) if found else None


@dataclass(frozen=True)
class UninstallPlan:
    """What uninstall deletes (owned groups) and what it leaves in Entra (adopted groups)."""

    delete: list[GroupRecord]
    leave: list[GroupRecord]
    #: Owned groups whose configured name changed since they were recorded, found by object id.
    renamed: list[GroupRecord]


def plan_uninstall(records: Iterable[GroupRecord], names: EnrollmentGroupNames) -> UninstallPlan:
    """Owned groups to delete, by recorded object id whatever they are called now; adopted ones to leave."""
    order = list(Enrollment)
    ordered = sorted(records, key=lambda r: (order.index(r.state), r.name, r.id))
    delete = [r for r in ordered if r.ownership is Ownership.OWNED]
    return UninstallPlan(delete=delete, leave=[r for r in ordered if r.ownership is Ownership.ADOPTED],
                         renamed=[r for r in delete if r.name != group_name(names, r.state)])
