"""Export on the reconcile engine (shared/services/export.py): a run over every pending change counts the removals
of all of them against removalThreshold, a group waiting for a member user of the same run follows it, a dry
run writes nothing, and each applied change is announced once as `export.applied`, also when the process stopped
between the change's writes and the release of its event (the events sweep judges the hold)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pytest

from shared.adapters.events import TableEventOutbox
from shared.adapters.scim import TableScimRepository
from shared.config import Connection
from shared.domain.events import Event, EventType
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA
from shared.errors import PermissionDenied
from shared.services.export import ExportService
from shared.services.scim import ScimService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_graph import MemoryTenant


class Stopped(BaseException):
    """The process stopped here (a BaseException: no `except Exception` turns it into a failure)."""


class Stopping:
    """The outbox, stopping the process once at `at`."""

    def __init__(self, outbox: TableEventOutbox, at: str) -> None:
        self.outbox = outbox
        self.at: str | None = at

    def _maybe(self, name: str) -> None:
        if self.at == name:
            self.at = None
            raise Stopped(name)

    async def record(self, events: Sequence[Event]) -> int:
        return await self.outbox.record(events)

    async def hold(self, connection: str, run: str, events: Sequence[Event]) -> None:
        await self.outbox.hold(connection, run, events)
        self._maybe("held")

    async def held(self, connection: str) -> dict[str, list[Event]]:
        return await self.outbox.held(connection)

    async def release(self, connection: str, run: str, ids: Collection[str] | None = None, *,
                      held: Sequence[Event] | None = None) -> None:
        self._maybe("release")
        await self.outbox.release(connection, run, ids, held=held)


class World:
    """The SCIM service, the export engine with an outbox, and Entra in memory (its export view `entra`)."""

    def __init__(self, **export: Any) -> None:
        self.conn = Connection.model_validate({
            "name": "c1", "tenantId": "11111111-2222-3333-4444-555555555555",
            "features": {"export": {"enabled": True, "usageLocation": "CH", **export}}})
        entities = FakeEntityStore()
        self.clock = clock = FakeClock()
        self.repo = TableScimRepository(entities)
        self.scim = ScimService(self.repo, FakeWorkQueue(), clock)
        self.audit = FakeAuditSink()
        self.outbox = TableEventOutbox(entities, clock)
        self.engine = ExportService(self.repo, self.audit, events=self.outbox, clock=clock)
        self.entra = MemoryTenant().export()

    def stopping(self, at: str) -> ExportService:
        """The engine on an outbox that stops the process at `at` (after the hold is stored: "held"; or "release")."""
        return ExportService(self.repo, self.audit, events=Stopping(self.outbox, at), clock=self.clock)

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


async def test_a_change_stopped_before_its_release_is_announced_once_by_the_sweep() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    with pytest.raises(Stopped):  # Entra written and the link stored; stopped before the event's release
        await world.stopping("release").apply(world.conn, world.entra, "Users", ada, request_id="r1")
    assert len(world.entra.users) == 1
    assert await world.announced() == []
    assert await world.engine.recover_events("c1") == 0  # too young: may be a change still being applied
    assert list(await world.outbox.held("c1")) != []
    world.clock.advance(minutes=6)
    assert await world.engine.recover_events("c1") == 1
    assert await world.outbox.held("c1") == {}
    assert await world.engine.recover_events("c1") == 0
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")  # the message comes back
    assert await world.announced() == [ada]


async def test_a_change_stopped_before_its_writes_has_its_hold_dropped() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    with pytest.raises(Stopped):  # held, nothing written
        await world.stopping("held").apply(world.conn, world.entra, "Users", ada, request_id="r1")
    assert world.entra.writes == []
    world.clock.advance(minutes=6)
    assert await world.engine.recover_events("c1") == 0
    assert await world.outbox.held("c1") == {}
    assert await world.announced() == []
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")  # the redelivery applies it
    assert await world.announced() == [ada]


async def test_a_change_that_ends_in_the_poison_queue_has_its_hold_dropped() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    create = world.entra.create_user

    async def refused(body: Any) -> Any:
        raise PermissionDenied("User.ReadWrite.All is missing")

    world.entra.create_user = refused  # type: ignore[method-assign]
    for _ in range(5):  # every delivery fails; the host moves the message to the poison queue
        with pytest.raises(PermissionDenied):
            await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")
    world.clock.advance(minutes=6)
    assert await world.engine.recover_events("c1") == 0
    assert await world.outbox.held("c1") == {}
    assert await world.announced() == []
    world.entra.create_user = create  # type: ignore[method-assign]
    await world.engine.apply(world.conn, world.entra, "Users", ada, request_id="r1")  # replayed from the poison queue
    assert await world.announced() == [ada]


async def test_a_deletion_stopped_before_its_release_is_announced_by_the_sweep_once_its_change_is_dropped() -> None:
    world = World()
    ada = await world.user("ada@contoso.example")
    await world.engine.run(world.conn, world.entra)
    await world.scim.delete(world.conn, "Users", ada, if_match=None, request_id="r2")
    [change] = await world.engine.changes("c1")
    with pytest.raises(Stopped):  # stopped before anything of the deletion was written: not proven
        await world.stopping("held").apply(world.conn, world.entra, "Users", ada, request_id="r2", change_id=change.id)
    world.clock.advance(minutes=6)
    assert await world.engine.recover_events("c1") == 0
    with pytest.raises(Stopped):  # the deletion applied and its change dropped; stopped before the release
        await world.stopping("release").apply(world.conn, world.entra, "Users", ada, request_id="r2",
                                              change_id=change.id)
    assert await world.engine.changes("c1") == []
    world.clock.advance(minutes=6)
    assert await world.engine.recover_events("c1") == 1
    [_, deleted] = [p.event for p in await world.outbox.pending("c1", 100) if p.event.type is EventType.EXPORT_APPLIED]
    assert deleted.data == {"resourceType": "Users", "scimId": ada, "version": "deleted"}


@pytest.mark.parametrize("where", ["connection", "app"])
async def test_a_dry_run_connection_or_app_applies_nothing(where: str) -> None:
    world = World()
    conn = world.conn.model_copy(update={"dry_run": True}) if where == "connection" else world.conn
    engine = ExportService(world.repo, world.audit, events=world.outbox, clock=world.clock, dry_run=where == "app")
    ada = await world.user("ada@contoso.example")
    applied = await engine.apply(conn, world.entra, "Users", ada, request_id="r1")
    assert applied.dry_run
    assert [s.action for s in applied.plan.steps] == ["user.create"]
    assert world.entra.writes == []
    assert await world.announced() == []
    assert len(await engine.changes("c1")) == 1  # still pending
