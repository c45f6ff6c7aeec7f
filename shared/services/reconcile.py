"""One reconcile engine: lease, read, pure plan, threshold, dry-run, apply with an audit record per item, report.

Every job that makes a system equal to what the bridge knows has the same shape, and the same rules
(docs/architecture.md, Invariants, 4 and 5):

1. **lease**: the job's own run lease (one run at a time), taken around everything else; any async
   context manager will do (`Lease`).
2. **read**: `Capability.read` yields batches (a snapshot, a page, one pending change). A read that
   fails or is incomplete raises, and the run ends there: nothing of a non-streaming run was applied,
   and no removal of any run was.
3. **plan**: `Capability.plan(batch)` is pure (the rules live in shared/domain) and lists typed
   actions; each action says its `kind`, its `target` and how many objects it `removals` removes.
4. **threshold**: once the read is complete, the removals of the whole run are counted and handed to
   the `Limit`; a reason back stops the run with `ThresholdExceeded` (a `Stop` naming the setting)
   before anything more is applied.
5. **dry-run**: the run ends after planning and returns the plan (`Report.plan`); nothing is applied or
   audited.
6. **apply**: `Capability.apply(action)`, one action at a time, each with its audit record through
   the bound `AuditContext`: `prefix + kind`, the target, the outcome `Done` names, and the action's
   detail. A failure is audited (`failed`, with the error's title), counted in the report, then
   raised, or with `keep_going` the run goes on to the next action. `Capability.begin` and
   `Capability.end` bracket each batch's actions (hold events before the writes, release them and
   store what was written after; `end` is not called for a batch whose apply failed).
7. **report**: counts per action kind, planned and applied, the failures, the removals, the dry-run
   flag and why the run stopped.

How sync maps onto it (shared/services/sync.py, once its storage moves behind repositories): an
incremental run reads `users/delta` and the groups' delta rounds as one batch, plans it, and applies it
as a plain (non-streaming) run. A full run is a *streaming* run (`stream=True`): `read` yields each
page of `transitiveMembers` as a batch, and the engine applies each page's actions that remove nothing
as soon as the page is planned (rows of users in scope), while actions that remove are held back;
`read` yields the sweep of stored rows no longer read as its last batch, which it reaches only after
every page was read, so a failed page leaves the sweep and every removal unplanned. After the read the
held removals are checked against the threshold (`Limit` wraps shared.domain.sync.blocked, relative to
the directory's size) and applied last, each batch's `end` storing its rows and releasing its events.
The delta links are stored by the caller after the report, so a run that stopped is read again.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from shared.errors import BridgeError, Stop
from shared.services.audit_context import AuditContext

log = logging.getLogger(__name__)


class Change(Protocol):
    """What the engine needs to know of a planned action."""

    @property
    def kind(self) -> str:
        """The action's kind: counted in the report, and the end of its audit action."""
        ...

    @property
    def target(self) -> str:
        """What it acts on: the audit record's target unless `Done` names another."""
        ...

    @property
    def removals(self) -> int:
        """How many objects (members, users, groups) it removes, deletes or disables."""
        ...


A = TypeVar("A", bound=Change)
B = TypeVar("B")

#: Given the removals of a whole run, why they are too many (naming the setting), or None.
Limit = Callable[[int], str | None]


class Lease(Protocol):
    """A run lease: entered around the whole run, held by one run at a time."""

    def __call__(self) -> AbstractAsyncContextManager[object]:
        """The lease's context; entering it takes the lease (or raises), leaving gives it back."""
        ...


@dataclass(frozen=True)
class Threshold:
    """At most `limit` removals per run; more stop it, naming `setting`."""

    limit: int
    setting: str

    def __call__(self, removals: int) -> str | None:
        """Why `removals` are too many, or None."""
        if removals <= self.limit:
            return None
        return (f"{removals} removals exceed {self.setting} {self.limit}: nothing removed; raise the threshold "
                "or check the source")


@dataclass(frozen=True)
class Done:
    """What one applied action did, for its audit record. An `apply` that returns None did nothing (the
    state wanted was already there) and leaves no record."""

    outcome: str
    #: The audit record's target when it is not the action's (an object the action created).
    target: str | None = None
    graph_request_id: str | None = None
    vault_version: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """An action that failed: its kind, target and the error's title and detail (never a secret)."""

    kind: str
    target: str
    error: str


@dataclass
class Report(Generic[A]):
    """What a run planned and did."""

    dry_run: bool
    #: Planned actions per kind.
    counts: Counter[str] = field(default_factory=Counter)
    #: Objects the plan removes.
    removals: int = 0
    #: The plan itself, kept in a dry run only (a streaming run may plan more than memory holds).
    plan: list[A] = field(default_factory=list)
    applied: Counter[str] = field(default_factory=Counter)
    #: Actions applied that found nothing to do (their `apply` returned None).
    unchanged: int = 0
    failures: list[Failure] = field(default_factory=list)
    #: Why the run stopped before applying (the threshold), or None.
    stopped: str | None = None

    def planned(self, actions: Sequence[A]) -> None:
        """Count a batch's actions (and keep them, in a dry run)."""
        for action in actions:
            self.counts[action.kind] += 1
            self.removals += action.removals
        if self.dry_run:
            self.plan.extend(actions)

    def as_dict(self) -> dict[str, Any]:
        """JSON form, for logs and status."""
        return {"dryRun": self.dry_run, "planned": dict(self.counts), "applied": dict(self.applied),
                "unchanged": self.unchanged, "removals": self.removals, "stopped": self.stopped,
                "failures": [{"kind": f.kind, "target": f.target, "error": f.error} for f in self.failures]}


class ThresholdExceeded(Stop):
    """The run's removals are over its limit: nothing more was applied. The message names the setting."""

    def __init__(self, detail: str, report: Report[Any]) -> None:
        super().__init__(detail)
        self.report = report


class Capability(ABC, Generic[B, A]):
    """One job's read, plan and apply; the engine does the rest."""

    #: The audit action of an applied item is this prefix and the action's kind.
    audit_prefix: str = ""

    @abstractmethod
    def read(self) -> AsyncIterator[B]:
        """The batches to plan, in order; raise when the read is failed or incomplete."""

    @abstractmethod
    def plan(self, batch: B) -> Sequence[A]:
        """The actions that make the target equal to `batch` (pure)."""

    @abstractmethod
    async def apply(self, action: A) -> Done | None:
        """Carry out one action; None when there was nothing to do."""

    def describe(self, action: A) -> Mapping[str, Any]:
        """The audit detail of an action (ids, counts, reasons; never a secret)."""
        return {}

    def context(self, batch: B, audit: AuditContext) -> AuditContext:
        """The audit context of a batch's records (a batch may carry its own correlation id)."""
        return audit

    async def begin(self, batch: B, actions: Sequence[A]) -> None:
        """Before a batch's actions are applied (hold its events)."""

    async def end(self, batch: B, actions: Sequence[A]) -> None:
        """After every action of a batch was applied (store the state, release the events)."""


async def reconcile(capability: Capability[B, A], audit: AuditContext, *, dry_run: bool = False,
                    limit: Limit | None = None, lease: Lease | None = None, stream: bool = False,
                    keep_going: bool = False) -> Report[A]:
    """Run a capability: lease, read and plan, threshold, then apply each action with its audit record
    (or, in a dry run, only plan). See the module's docstring for the order and what stops a run."""
    report: Report[A] = Report(dry_run=dry_run)
    async with lease() if lease is not None else contextlib.nullcontext():
        held: list[tuple[B, list[A]]] = []
        async for batch in capability.read():
            actions = list(capability.plan(batch))
            report.planned(actions)
            if dry_run:
                continue
            if stream:
                later = [a for a in actions if a.removals]
                await _apply_batch(capability, audit, batch, [a for a in actions if not a.removals], report,
                                   keep_going)
                if later:
                    held.append((batch, later))
            else:
                held.append((batch, actions))
        reason = limit(report.removals) if limit is not None else None
        if reason is not None:
            report.stopped = reason
            if not dry_run:
                log.warning("run of %s on %s stopped: %s", type(capability).__name__, audit.connection, reason)
                raise ThresholdExceeded(reason, report)
        if dry_run:
            return report
        for batch, actions in held:
            await _apply_batch(capability, audit, batch, actions, report, keep_going)
    return report


async def _apply_batch(capability: Capability[B, A], audit: AuditContext, batch: B, actions: Sequence[A],
                       report: Report[A], keep_going: bool) -> None:
    audit = capability.context(batch, audit)
    await capability.begin(batch, actions)
    failed = False
    for action in actions:
        detail = dict(capability.describe(action))
        try:
            done = await capability.apply(action)
        except Exception as exc:
            error = f"{exc.title}: {exc.detail}" if isinstance(exc, BridgeError) else type(exc).__name__
            title = exc.title if isinstance(exc, BridgeError) else type(exc).__name__
            request_id = exc.request_id if isinstance(exc, BridgeError) else None
            await audit.record(capability.audit_prefix + action.kind, action.target, "failed",
                               graph_request_id=request_id, **{**detail, "error": title})
            report.failures.append(Failure(action.kind, action.target, error))
            if not keep_going or not isinstance(exc, BridgeError):
                raise
            failed = True
            continue
        if done is None:
            report.unchanged += 1
            continue
        report.applied[action.kind] += 1
        await audit.record(capability.audit_prefix + action.kind, done.target or action.target, done.outcome,
                           graph_request_id=done.graph_request_id, vault_version=done.vault_version,
                           **{**detail, **done.detail})
    if not failed:
        await capability.end(batch, actions)
