"""Export on the reconcile engine (shared/services/export.py): a run over every pending change counts the removals
of all of them against removalThreshold, a group waiting for a member user of the same run follows it, a dry
run writes nothing, and each applied change is announced once as `export.applied`."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.events import TableEventOutbox
from shared.adapters.scim import TableScimRepository
from shared.config import Connection
from shared.domain.events import EventType
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA
from shared.errors import PermissionDenied
from shared.services.export import ExportService
from shared.services.scim import ScimService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeExportDirectory, FakeWorkQueue


class World:
    """The SCIM service, the export engine with an outbox, and a fake Entra."""

    def __init__(self, **export: Any) -> None:
        self.conn = Connection.model_validate({
            "name": "c1", "tenantId": "11111111-2222-3333-4444-555555555555",
            "features": {"export": {"enabled": True, "usageLocation": "CH", **export}}})
        entities = FakeEntityStore()
        clock = FakeClock()
        self.repo = TableScimRepository(entities)
        self.scim = ScimService(self.repo, FakeWorkQueue(), clock)
        self.audit = FakeAuditSink()
        self.outbox = TableEventOutbox(entities, clock)
        self.engine = ExportService(self.repo, self.audit, events=self.outbox, clock=clock)
        self.entra = FakeExportDirectory()

    async def domains(self) -> list[str]:
        return await self.entra.verified_domains()

    async def user(self, name: str) -> str:
        stored = await self.scim.create(self.conn, "Users", {
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": name, "active": True},
            request_id=f"req-{name}", domains=self.domains)
        return stored.id

    async def group(self, name: str, members: list[str]) -> str:
        stored = await self.scim.create(self.conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": name,
                                                              "members": [{"value": m} for m in members]},
                                        request_id=f"req-{name}", domains=self.domains)
        return stored.id

    async def empty(self, group: str, name: str) -> None:
        await self.scim.replace(self.conn, "Groups", group, {"schemas": [GROUP_SCHEMA], "displayName": name},
                                if_match=None, request_id=f"empty-{name}", domains=self.domains)

    async def announced(self) -> list[str]:
        return [p.event.subject for p in await self.outbox.pending("c1", 100)
                if p.event.type is EventType.EXPORT_APPLIED]


async def test_a_run_applies_every_pending_change_and_a_group_follows_its_members() -> None:
    world = World()
    users = [await world.user(f"u{i}@contoso.example") for i in range(2)]
    team = await world.group("Team", users)
    run = await world.engine.run(world.conn, world.entra)
    assert run.stopped is None
    assert run.waiting == []
    assert sorted(a.plan.scim_id for a in run.applied) == sorted([*users, team])
    [group] = world.entra.groups.values()
    assert len(world.entra.members[group.id]) == 2
    assert await world.engine.changes("c1") == []
    # Each audit record carries the request id of the change it applies.
    creates = [r for r in world.audit.records if r.action == "export.user.create"]
    assert sorted(r.correlation_id for r in creates) == ["req-u0@contoso.example", "req-u1@contoso.example"]
    assert {r.correlation_id for r in world.audit.records if r.action.startswith("export.group")} == {"req-Team"}


async def test_the_threshold_counts_the_removals_of_the_whole_run() -> None:
    world = World(removalThreshold=2)
    users = [await world.user(f"u{i}@contoso.example") for i in range(4)]
    first, second = await world.group("One", users[:2]), await world.group("Two", users[2:])
    await world.engine.run(world.conn, world.entra)
    before = list(world.entra.writes)
    # Each change removes two members, within the threshold on its own; together they are four.
    await world.empty(first, "One")
    await world.empty(second, "Two")
    dry = await world.engine.run(world.conn, world.entra, dry_run=True)
    assert dry.stopped is not None
    assert "4 removals exceed features.export.removalThreshold 2" in dry.stopped
    run = await world.engine.run(world.conn, world.entra)
    assert run.stopped == dry.stopped
    assert world.entra.writes == before  # nothing of the run was written
    assert len(run.waiting) == 2
    assert len(await world.engine.changes("c1")) == 2  # left pending, to run again once the threshold is raised
    summary = await world.engine.summary("c1")
    assert sum("removalThreshold 2" in p["problem"] for p in summary["problems"]) == 2
    # One change on its own is within it.
    alone = await world.engine.apply(world.conn, world.entra, "Groups", first, request_id="one")
    assert not alone.plan.stopped
    assert alone.written == 2


async def test_a_dry_run_plans_every_change_and_writes_nothing() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    run = await world.engine.run(world.conn, world.entra, dry_run=True)
    assert [(a.plan.scim_id, [s.action for s in a.plan.steps]) for a in run.applied] == [(ada, ["user.create"])]
    assert world.entra.writes == []
    assert world.audit.records == []
    assert await world.announced() == []
    assert len(await world.engine.changes("c1")) == 1


async def test_each_applied_change_is_announced_once() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")  # delivered again
    assert await world.announced() == [ada]
    [pending] = [p for p in await world.outbox.pending("c1", 100) if p.event.type is EventType.EXPORT_APPLIED]
    assert pending.event.data == {"resourceType": "Users", "scimId": ada, "version": "1"}
    assert await world.outbox.held("c1") == {}
    # A later version of the resource is a new change, announced once more.
    await world.scim.replace(world.conn, "Users", ada, {"schemas": [USER_SCHEMA], "userName": "ada@contoso.example",
                                                        "displayName": "Ada L."}, if_match=None, request_id="r2",
                             domains=world.domains)
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r2")
    assert await world.announced() == [ada, ada]


async def test_a_failed_write_is_audited_and_announces_nothing() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")

    async def refused(body: Any) -> Any:
        raise PermissionDenied("User.ReadWrite.All is missing")

    world.entra.create_user = refused  # type: ignore[method-assign]
    with pytest.raises(PermissionDenied):
        await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")
    [failed] = world.audit.records
    assert (failed.action, failed.outcome, failed.correlation_id) == ("export.user.create", "failed", "r1")
    assert await world.announced() == []
    assert list(await world.outbox.held("c1")) != []  # held: a redelivery applies the change and releases it
