"""The enrollment-state groups on the reconcile engine: one audit record per group changed, through the context
bound to the run (correlation id, run id), and a refused write audited as failed before it is raised."""

from __future__ import annotations

import pytest

from shared.adapters.ownership import TableGroupRecords
from shared.domain.directory import Enrollment, UserRow
from shared.errors import Transient
from shared.services.enrollment_groups import EnrollmentGroups
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore
from tests.unit.test_enrollment_uninstall import CONN, Groups


def service() -> tuple[EnrollmentGroups, FakeAuditSink]:
    audit = FakeAuditSink()
    return EnrollmentGroups(TableGroupRecords(FakeEntityStore()), audit, FakeClock()), audit


async def test_each_group_changed_has_one_record_bound_to_the_run() -> None:
    groups, audit = service()
    writer = Groups()
    users = [UserRow(id="u1", upn="u1@contoso.example", enrollment=Enrollment.PAIRED_WITH_PROVIDER),
             UserRow(id="u2", upn="u2@contoso.example")]
    changes = await groups.reconcile(CONN, writer, users, correlation_id="c1", run_id="run-1")
    assert changes.changes == 2
    members = [r for r in audit.records if r.action == "enrollmentGroup.members"]
    assert sorted((r.detail["state"], r.detail["added"], r.detail["addedIds"]) for r in members) == [
        ("not_enrolled", 1, ["u2"]), ("paired_with_provider", 1, ["u1"])]
    assert {(r.actor, r.correlation_id, r.detail["runId"], r.outcome) for r in members} == {
        ("sync", "c1", "run-1", "updated")}
    # A second reconcile finds the groups equal to the states.
    again = await groups.reconcile(CONN, writer, users, correlation_id="c2", run_id="run-2")
    assert again.changes == 0


async def test_a_refused_write_is_audited_then_raised() -> None:
    groups, audit = service()
    writer = Groups()

    async def refused(group_id: str, user_ids: object) -> None:
        raise Transient("Graph is unavailable", request_id="req-7")

    writer.add_members = refused  # type: ignore[method-assign]
    with pytest.raises(Transient):
        await groups.move(CONN, writer, "u1", Enrollment.PAIRED_WITH_ENTRA, correlation_id="c1")
    [failed] = [r for r in audit.records if r.outcome == "failed"]
    assert (failed.action, failed.graph_request_id, failed.detail["error"]) == (
        "enrollmentGroup.members", "req-7", Transient.title)
