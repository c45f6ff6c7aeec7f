"""The reconcile engine (shared/services/reconcile.py): an incomplete read applies nothing, the threshold stops
the run naming its setting, a dry run applies nothing, each item is audited through the bound context, failures
are audited and reported, a streaming run holds its removals back until the read is complete, the lease is
held around the run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from shared.errors import Stop, Transient
from shared.services.audit_context import AuditContext
from shared.services.reconcile import Capability, Done, Threshold, ThresholdExceeded, reconcile
from tests.fakes import FakeAuditSink


@dataclass(frozen=True)
class Move:
    kind: str
    target: str

    @property
    def removals(self) -> int:
        return 1 if self.kind == "remove" else 0


@dataclass
class Members(Capability[list[str], Move]):
    """Keeps `have` equal to the wanted members, read in pages; a page of None is a failed read."""

    pages: list[list[str] | None]
    have: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    audit_prefix: str = "members."

    async def read(self) -> AsyncIterator[list[str]]:
        seen: set[str] = set()
        for page in self.pages:
            if page is None:
                raise Transient("page 2 of the members failed")
            seen.update(page)
            yield page
        yield sorted(self.have - seen)  # the sweep: only reached after every page was read

    def plan(self, batch: list[str]) -> Sequence[Move]:
        wanted = {m for page in self.pages if page is not None for m in page}
        return [Move("add", m) for m in batch if m in wanted and m not in self.have] + \
            [Move("remove", m) for m in batch if m not in wanted]

    async def apply(self, action: Move) -> Done | None:
        if action.target in self.refuse:
            raise Transient(f"Graph refused {action.target}", request_id="req-9")
        if action.kind == "add":
            self.have.add(action.target)
        else:
            self.have.discard(action.target)
        self.events.append(f"{action.kind} {action.target}")
        return Done("done", graph_request_id=f"req-{action.target}", detail={"member": action.target})

    def describe(self, action: Move) -> dict[str, str]:
        return {"state": "member" if action.kind == "add" else "gone"}

    async def begin(self, batch: list[str], actions: Sequence[Move]) -> None:
        self.events.append(f"begin {len(actions)}")

    async def end(self, batch: list[str], actions: Sequence[Move]) -> None:
        self.events.append(f"end {len(actions)}")


def context(audit: FakeAuditSink, run_id: str = "") -> AuditContext:
    return AuditContext(audit, connection="c1", actor="sync", correlation_id="corr-1", run_id=run_id)


async def test_each_item_is_applied_and_audited_through_the_bound_context() -> None:
    audit = FakeAuditSink()
    job = Members([["a", "b"]], have={"b", "old"})
    report = await reconcile(job, context(audit, run_id="run-1"))
    assert job.have == {"a", "b"}
    assert [(r.action, r.target, r.outcome, r.correlation_id, r.graph_request_id) for r in audit.records] == [
        ("members.add", "a", "done", "corr-1", "req-a"), ("members.remove", "old", "done", "corr-1", "req-old")]
    assert audit.records[0].detail == {"state": "member", "member": "a", "runId": "run-1"}
    assert {r.connection for r in audit.records} == {"c1"}
    assert {r.actor for r in audit.records} == {"sync"}
    assert report.counts == {"add": 1, "remove": 1}
    assert report.applied == {"add": 1, "remove": 1}
    assert report.removals == 1
    assert not report.failures
    assert not report.dry_run
    assert report.as_dict()["planned"] == {"add": 1, "remove": 1}


async def test_an_incomplete_read_applies_nothing() -> None:
    audit = FakeAuditSink()
    job = Members([["a"], None], have={"old"})
    with pytest.raises(Transient, match="page 2"):
        await reconcile(job, context(audit))
    assert job.have == {"old"}
    assert audit.records == []
    assert job.events == []


async def test_a_streaming_run_applies_pages_as_read_but_never_removes_on_an_incomplete_read() -> None:
    job = Members([["a"], None], have={"old"})
    with pytest.raises(Transient):
        await reconcile(job, context(FakeAuditSink()), stream=True)
    assert job.have == {"a", "old"}  # the first page's addition, and no removal
    complete = Members([["a"], ["b"]], have={"old"})
    await reconcile(complete, context(FakeAuditSink()), stream=True)
    assert complete.have == {"a", "b"}
    assert complete.events == ["begin 1", "add a", "end 1", "begin 1", "add b", "end 1", "begin 0", "end 0",
                               "begin 1", "remove old", "end 1"]


async def test_removals_over_the_threshold_stop_the_run_naming_the_setting() -> None:
    audit = FakeAuditSink()
    job = Members([["a"]], have={"x", "y", "z"})
    with pytest.raises(ThresholdExceeded, match=r"3 removals exceed features\.thing\.removalThreshold 2") as caught:
        await reconcile(job, context(audit), limit=Threshold(2, "features.thing.removalThreshold"))
    assert isinstance(caught.value, Stop)
    assert caught.value.report.removals == 3
    assert job.have == {"x", "y", "z"}
    assert audit.records == []
    # In a streaming run too, no removal is made (the additions of the pages read may be).
    streaming = Members([["a"]], have={"x", "y", "z"})
    with pytest.raises(ThresholdExceeded):
        await reconcile(streaming, context(audit), limit=Threshold(2, "features.thing.removalThreshold"), stream=True)
    assert streaming.have == {"a", "x", "y", "z"}
    within = await reconcile(Members([["a"]], have={"x", "y"}), context(audit),
                             limit=Threshold(2, "features.thing.removalThreshold"))
    assert within.applied == {"add": 1, "remove": 2}
    assert within.stopped is None


async def test_a_dry_run_returns_the_plan_and_applies_nothing() -> None:
    audit = FakeAuditSink()
    job = Members([["a", "b"]], have={"x", "y", "z"})
    report = await reconcile(job, context(audit), dry_run=True, limit=Threshold(2, "removalThreshold"))
    assert report.dry_run
    assert [(a.kind, a.target) for a in report.plan] == [("add", "a"), ("add", "b"), ("remove", "x"),
                                                            ("remove", "y"), ("remove", "z")]
    assert report.stopped is not None
    assert "removalThreshold 2" in report.stopped
    assert job.have == {"x", "y", "z"}
    assert job.events == []
    assert audit.records == []


async def test_a_failure_is_audited_reported_and_raised() -> None:
    audit = FakeAuditSink()
    job = Members([["a", "b"]], refuse={"a"})
    with pytest.raises(Transient):
        await reconcile(job, context(audit))
    [failed] = audit.records
    assert (failed.action, failed.target, failed.outcome, failed.graph_request_id) == ("members.add", "a", "failed",
                                                                                       "req-9")
    assert failed.detail["error"] == Transient.title
    assert job.have == set()
    assert "end 2" not in job.events


async def test_keep_going_reports_each_failure_and_applies_the_rest() -> None:
    audit = FakeAuditSink()
    job = Members([["a", "b", "c"]], refuse={"a", "c"})
    report = await reconcile(job, context(audit), keep_going=True)
    assert job.have == {"b"}
    assert [(f.kind, f.target) for f in report.failures] == [("add", "a"), ("add", "c")]
    assert "Graph refused a" in report.failures[0].error
    assert [r.outcome for r in audit.records] == ["failed", "done", "failed"]
    assert report.applied == {"add": 1}
    assert "end 3" not in job.events  # a batch with a failure is not ended (its state is not stored)


async def test_a_no_op_apply_is_not_audited() -> None:
    class Nothing(Members):
        async def apply(self, action: Move) -> Done | None:
            return None

    audit = FakeAuditSink()
    report = await reconcile(Nothing([["a"]]), context(audit))
    assert audit.records == []
    assert report.unchanged == 1
    assert not report.applied


async def test_the_lease_is_held_around_the_run() -> None:
    order: list[str] = []

    @contextlib.asynccontextmanager
    async def lease() -> AsyncIterator[None]:
        order.append("taken")
        yield
        order.append("given back")

    job = Members([["a"]])
    job.events = order
    await reconcile(job, context(FakeAuditSink()), lease=lease)
    assert order == ["taken", "begin 1", "add a", "end 1", "begin 0", "end 0", "given back"]

    class Held(Exception):
        pass

    @contextlib.asynccontextmanager
    async def taken() -> AsyncIterator[None]:
        raise Held
        yield  # pragma: no cover

    busy = Members([["a"]])
    with pytest.raises(Held):
        await reconcile(busy, context(FakeAuditSink()), lease=taken)
    assert busy.have == set()
