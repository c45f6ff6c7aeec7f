"""Events end to end: the services on Azurite, the outbox, the publisher, azure-eventgrid, the stand-in, a webhook.

Each event type is delivered once per change; a process stopped between a change and its event, or
between publishing steps, loses nothing and announces nothing that did not happen; no event carries a
secret; the change feed returns the same events in the same order after a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from local.authenticator import SoftwareAuthenticator
from local.eventgrid.process import RunningTopic
from shared.adapters.events import EventGridSink, TableEventOutbox
from shared.adapters.leases import TableLeases
from shared.adapters.rotations import TableRotations
from shared.adapters.scim import TableScimRepository
from shared.adapters.syncstate import TableSyncState
from shared.adapters.tables import TableEntityStore
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import Enrollment, UserRow
from shared.domain.events import Event, EventType
from shared.domain.rotation import RotationSubject
from shared.domain.scim import USER_SCHEMA
from shared.errors import Transient
from shared.messages import WorkMessage
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.events import ChangeFeed, EventPublisher, recover_user_events
from shared.services.export import ExportService
from shared.services.passkeys import PasskeyRegistration, PasskeyService
from shared.services.rotation import RotationService
from shared.services.scim import ScimService
from shared.services.sync import SyncService
from tests.fakes import FakeAuditSink, FakeClock, FakeSecretStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant
from tests.unit.test_devices_service import JWK
from tests.unit.test_rotation_service import FakeDirectory, Subjects
from tests.unit.test_sync_service import FakeEntra, user

SECRET_WORDS = ("password", "secret", "private", "token", "key", "credential")


class Killed(BaseException):
    """The process stopped here (a BaseException: no `except Exception` of the app turns it into a failure)."""


class Killable:
    """The outbox, stopping the process before chosen calls (once each)."""

    def __init__(self, outbox: TableEventOutbox, *, kill: set[str]) -> None:
        self.outbox = outbox
        self.kill = set(kill)

    def _maybe(self, name: str) -> None:
        if name in self.kill:
            self.kill.discard(name)
            raise Killed(name)

    async def record(self, events: Sequence[Event]) -> int:
        self._maybe("record")
        return await self.outbox.record(events)

    async def hold(self, connection: str, run: str, events: Sequence[Event]) -> None:
        self._maybe("hold")
        await self.outbox.hold(connection, run, events)
        self._maybe("held")  # the hold is stored; stopped before the writes it guards

    async def held(self, connection: str) -> dict[str, list[Event]]:
        return await self.outbox.held(connection)

    async def release(self, connection: str, run: str, ids: Any = None, *, held: Any = None) -> None:
        self._maybe("release")
        await self.outbox.release(connection, run, ids, held=held)


@dataclass
class World:
    name: str
    conn: Connection
    store: TableEntityStore
    outbox: TableEventOutbox
    clock: FakeClock
    topic: RunningTopic
    sink: str
    sender: EventGridSink

    def publisher(self, sender: Any = None) -> EventPublisher:
        return EventPublisher(log_=self.outbox, leases=TableLeases(self.store, self.clock), sink=sender or self.sender,
                              clock=self.clock)

    async def publish(self) -> None:
        await self.publisher().drain(self.name)

    async def delivered(self, count: int, within: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = self.topic.received(self.sink)
            if len(found) >= count:
                await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
                return self.topic.received(self.sink)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} deliveries expected, got {len(self.topic.received(self.sink))}")


@pytest.fixture
async def world(azurite_connection_string: str, eventgrid: RunningTopic, tls_files: Any) -> AsyncIterator[World]:
    name = f"ev{uuid.uuid4().hex[:10]}"
    conn = Connection.model_validate({
        "name": name, "tenantId": "00000000-0000-0000-0000-000000000001",
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"], "removal": "delete",
                              "removalThreshold": {"percent": 100, "absolute": 100}},
                     "rotation": {"enabled": True, "group": "Bridge Rotation"},
                     "passkeys": {"enabled": True}}})
    store = TableEntityStore.from_connection_string(azurite_connection_string)
    clock = FakeClock()
    sink = f"s-{name}"
    eventgrid.subscribe(sink, eventgrid.sink_url(sink))
    sender = EventGridSink(eventgrid.endpoint, key=eventgrid.key, verify=str(tls_files.ca))
    yield World(name, conn, store, TableEventOutbox(store, clock), clock, eventgrid, sink, sender)
    eventgrid.call("DELETE", f"/_admin/subscriptions/{sink}")
    await sender.close()
    await store.close()


def sync_service(w: World, outbox: Any = None) -> SyncService:
    return SyncService(directory=Directory(TableUsers(w.store)), state=TableSyncState(w.store),
                       leases=TableLeases(w.store, w.clock), audit=FakeAuditSink(), queue=FakeWorkQueue(),
                       clock=w.clock, secrets=FakeSecretStore(w.clock), events=outbox or w.outbox)


def no_secret(events: list[dict[str, Any]], *values: str) -> None:
    """No data member named like a secret (ids and versions only), and none of the secrets' values anywhere."""
    for event in events:
        for name in event["data"]:
            assert name.endswith(("Id", "Version", "Ids")) or not any(w in name.lower() for w in SECRET_WORDS), name
    text = json.dumps(events)
    assert "-----BEGIN" not in text
    assert not any(v and v in text for v in values)


async def test_sync_announces_each_user_change_once(world: World) -> None:
    entra = FakeEntra()
    entra.groups["11111111-0000-4000-8000-000000000001"] = []
    for n in range(1, 6):
        entra.add_user(user(n), "11111111-0000-4000-8000-000000000001")
    service = sync_service(world)
    await service.run(world.conn, entra, run_id="r1", correlation_id="c")
    world.clock.advance(minutes=15)
    entra.update_user("u0001", displayName="Renamed")
    entra.update_user("u0002", accountEnabled=False)
    entra.remove_member("11111111-0000-4000-8000-000000000001", "u0003")
    entra.delete_user("u0004")
    await service.run(world.conn, entra, run_id="r2", correlation_id="c")
    await service.run(world.conn, entra, run_id="r3", correlation_id="c")  # nothing changed: nothing announced
    await world.publish()
    got = await world.delivered(9)
    assert Counter(e["type"] for e in got) == {"bridge.user.imported": 5, "bridge.user.updated": 1,
                                               "bridge.user.deactivated": 1, "bridge.user.removed": 1,
                                               "bridge.user.missingInEntra": 1}
    assert len({e["id"] for e in got}) == 9
    assert {e["source"] for e in got} == {f"/connections/{world.name}"}
    no_secret(got)


async def test_a_sync_stopped_after_writing_rows_announces_them_on_the_next_run(world: World) -> None:
    entra = FakeEntra()
    entra.groups["11111111-0000-4000-8000-000000000001"] = []
    for n in range(1, 4):
        entra.add_user(user(n), "11111111-0000-4000-8000-000000000001")
    with pytest.raises(Killed):  # rows written, events held, stopped before the release
        await sync_service(world, Killable(world.outbox, kill={"release"})).run(world.conn, entra, run_id="r1",
                                                                                correlation_id="c")
    await world.publish()
    assert world.topic.received(world.sink) == []  # held: nothing announced before the rows were known written
    await sync_service(world).run(world.conn, entra, run_id="r2", correlation_id="c")
    await world.publish()
    got = await world.delivered(3)
    assert sorted(e["subject"] for e in got) == ["u0001", "u0002", "u0003"]
    assert {e["type"] for e in got} == {"bridge.user.imported"}


async def test_held_events_of_rows_never_written_are_dropped_not_announced(world: World) -> None:
    entra = FakeEntra()
    entra.groups["11111111-0000-4000-8000-000000000001"] = []
    entra.add_user(user(1), "11111111-0000-4000-8000-000000000001")
    outbox = world.outbox
    # Events held for a run whose rows never landed (it stopped right after holding them).
    planned = sync_service(world)
    from shared.services.events import user_event

    ghost = user_event(world.name, EventType.USER_IMPORTED, UserRow(id="u0001", upn="x@contoso.example"),
                       world.clock.now())
    await outbox.hold(world.name, "r-dead", [ghost])
    await planned.run(world.conn, entra, run_id="r2", correlation_id="c")
    await world.publish()
    got = await world.delivered(1)
    assert len(got) == 1
    assert got[0]["id"] != ghost.id  # the ghost was dropped; the real import was announced once


async def test_rotation_stopped_before_its_event_announces_it_on_the_replay(world: World) -> None:
    uid = "22222222-2222-2222-2222-222222222222"
    secrets = FakeSecretStore(world.clock)
    subjects = Subjects(RotationSubject(user_id=uid, upn="ann.lee@contoso.example", display_name="Ann Lee"))

    def service(outbox: Any) -> RotationService:
        return RotationService(secrets=secrets, rotations=TableRotations(world.store), audit=FakeAuditSink(),
                               queue=FakeWorkQueue(),
                               clock=world.clock, subjects=subjects, events=outbox)

    directory = FakeDirectory()
    with pytest.raises(Killed):
        await service(Killable(world.outbox, kill={"record"})).rotate(world.conn, directory, uid, rotation_id="r1",
                                                                      correlation_id="c")
    # The host redelivers the message: the rotation is not done twice, and the event is recorded now.
    message = WorkMessage(connection=world.name, kind="rotate", target=uid, idempotency_key="r1")
    again = await service(world.outbox).handle(world.conn, directory, message, dequeue_count=2, max_dequeue_count=5)
    assert again is not None
    assert again.replay
    assert directory.calls == 1
    await world.publish()
    got = await world.delivered(1)
    assert [e["type"] for e in got] == ["bridge.password.rotated"]
    assert got[0]["data"]["secretVersion"] == again.version
    no_secret(got, directory.password or "")


async def test_devices_and_passkeys_announce_each_change_once(world: World) -> None:
    directory = Directory(TableUsers(world.store))
    await directory.put(world.name, UserRow(id="u1", upn="ann@contoso.example"))
    queue = FakeWorkQueue()
    devices = DeviceService(directory=directory, **device_repositories(world.store), audit=FakeAuditSink(), queue=queue,
                            clock=world.clock, events=world.outbox)
    passkeys = PasskeyService(devices=devices, directory=directory, **passkey_repositories(world.store),
                              audit=FakeAuditSink(),
                              clock=world.clock)
    await devices.register(world.conn, "dev-1", DeviceRegistration.model_validate(
        {"user": "u1", "displayName": "key", "publicKey": JWK}), actor="t", correlation_id="c")
    graph = entra_of(world)
    entra = graph.passkeys()
    registered: list[str] = []
    for _ in range(2):
        options = await passkeys.options(world.conn, entra, "dev-1", correlation_id="c")
        credential = SoftwareAuthenticator().register(options)
        made = await passkeys.register(world.conn, entra, "dev-1", PasskeyRegistration.model_validate(
            {"ceremonyId": options["ceremonyId"], "displayName": "k", "credential": credential}), correlation_id="c")
        registered.append(str(made["id"]))
    await devices.revoke_passkey(world.conn, entra, "dev-1", registered[0], actor="t", correlation_id="c")
    # Entra lost the second: reconciliation marks it, and says so once even when run twice.
    graph.fido2["u1"] = []
    await passkeys.reconcile(world.conn, entra, correlation_id="c1")
    await passkeys.reconcile(world.conn, entra, correlation_id="c2")
    operation = await devices.remove(world.conn, "dev-1", actor="t", correlation_id="c")
    message = WorkMessage.model_validate(queue.messages(next(iter(queue.sent)))[0])
    await devices.complete_removal(world.conn, entra, message)
    await devices.complete_removal(world.conn, entra, message)  # redelivered: announced once
    await world.publish()
    got = await world.delivered(10)
    kinds = Counter(e["type"] for e in got)
    # Enrollment: not enrolled > with the provider > with Entra; back to the provider when Entra lost the last
    # passkey; not enrolled when the device went. Deliveries may come in any order; the feed keeps it.
    feed = (await ChangeFeed(world.outbox).page(world.name, after=None, top=100)).events
    assert sorted(e.id for e in feed) == sorted(e["id"] for e in got)
    assert [e.data["enrollment"] for e in feed if e.type == "bridge.enrollment.changed"] == [
        "paired_with_provider", "paired_with_entra", "paired_with_provider", "not_enrolled"]
    assert kinds == {"bridge.enrollment.changed": 4, "bridge.passkey.registered": 2, "bridge.passkey.revoked": 2,
                     "bridge.passkey.deletedInEntra": 1, "bridge.device.removed": 1}, kinds
    removed = next(e for e in got if e["type"] == "bridge.device.removed")
    assert removed["subject"] == "dev-1"
    assert removed["data"]["operationId"] == operation
    no_secret(got, JWK["x"], JWK["y"])


async def test_a_publisher_stopped_midway_publishes_each_event_and_feeds_it_once(world: World) -> None:
    from shared.services.events import new_event

    events = [new_event(EventType.USER_IMPORTED, connection=world.name, subject=f"u{n}", change="1",
                        time=world.clock.now(), userId=f"u{n}") for n in range(5)]
    assert await world.outbox.record(events) == 5
    assert await world.outbox.record(events) == 0  # the same changes recorded again: nothing new

    class Failing:
        async def publish(self, batch: Sequence[Event]) -> None:
            raise Killed("publish")

    with pytest.raises(Killed):
        await world.publisher(Failing()).drain(world.name)
    await world.publish()
    got = await world.delivered(5)
    assert sorted(e["subject"] for e in got) == [f"u{n}" for n in range(5)]
    feed = await ChangeFeed(world.outbox).page(world.name, after=None, top=100)
    assert [e.id for e in feed.events] == [e.id for e in events]


async def test_the_feed_returns_the_same_events_in_order_after_a_restart(world: World,
                                                                          azurite_connection_string: str) -> None:
    from shared.services.events import new_event

    for batch in range(3):
        await world.outbox.record([new_event(EventType.PASSKEY_REVOKED, connection=world.name, subject=f"u{n}",
                                             change=f"{batch}-{n}", time=world.clock.now(), passkeyId=f"m{n}")
                                   for n in range(4)])
        await world.publisher(sender=None).drain(world.name)
    first = ChangeFeed(world.outbox)
    pages, cursor = [], None
    while True:
        page = await first.page(world.name, after=cursor, top=5)
        pages.append([e.id for e in page.events])
        cursor = page.cursor
        if not page.has_more:
            break
    seen = [i for p in pages for i in p]
    assert len(seen) == 12
    assert len(set(seen)) == 12
    # A new process: new clients, nothing in memory; the same feed from the start and from a saved cursor.
    fresh = TableEntityStore.from_connection_string(azurite_connection_string)
    try:
        again = ChangeFeed(TableEventOutbox(fresh, FakeClock()))
        everything = await again.page(world.name, after=None, top=100)
        assert [e.id for e in everything.events] == seen
        after_first = await again.page(world.name, after=(await first.page(world.name, after=None, top=5)).cursor,
                                       top=100)
        assert [e.id for e in after_first.events] == seen[5:]
        assert (await again.page(world.name, after=everything.cursor, top=10)).events == []
    finally:
        await fresh.close()


async def test_an_enrollment_move_stopped_before_its_event_is_announced_by_the_sweep(world: World) -> None:
    directory = Directory(TableUsers(world.store))
    await directory.put(world.name, UserRow(id="u1", upn="ann@contoso.example"))
    await directory.put(world.name, UserRow(id="u2", upn="bob@contoso.example"))

    def devices(outbox: Any) -> DeviceService:
        return DeviceService(directory=directory, **device_repositories(world.store), audit=FakeAuditSink(),
                             queue=FakeWorkQueue(),
                             clock=world.clock, events=outbox)

    with pytest.raises(Killed):  # the user's row moved; the process stopped before the event was released
        await devices(Killable(world.outbox, kill={"release"})).register(world.conn, "dev-1", DeviceRegistration(
            user="u1", display_name="key", public_key=JWK), actor="t", correlation_id="c")
    assert (await directory.get(world.name,
                                "u1")).enrollment.value == "paired_with_provider"  # type: ignore[union-attr]
    # A hold whose write never happened (u2 is still not enrolled).
    ghost = devices(world.outbox).enrollment_event(world.name, "u2", Enrollment.NOT_ENROLLED,
                                                     Enrollment.PAIRED_WITH_ENTRA, cause="never")
    await world.outbox.hold(world.name, f"enrollment-{ghost.id}", [ghost])
    assert len(await world.outbox.held(world.name)) == 2
    assert await devices(world.outbox).recover_enrollment_events(world.name) == 0  # too young: may be in progress
    world.clock.advance(minutes=6)
    assert await devices(world.outbox).recover_enrollment_events(world.name) == 1
    assert await world.outbox.held(world.name) == {}
    await world.publish()
    got = await world.delivered(1)
    assert [(e["type"], e["subject"], e["data"]["enrollment"]) for e in got] == [
        ("bridge.enrollment.changed", "u1", "paired_with_provider")]


async def test_an_export_change_killed_between_hold_and_release_is_announced_once_by_the_sweep(world: World) -> None:
    conn = world.conn.model_copy(update={"features": world.conn.features.model_copy(update={
        "export": world.conn.features.export.model_copy(update={"enabled": True})})})
    repo = TableScimRepository(world.store)
    entra = MemoryTenant(clock=world.clock).export()

    async def domains() -> list[str]:
        return await entra.verified_domains()

    def export(outbox: Any) -> ExportService:
        return ExportService(repo, FakeAuditSink(), events=outbox, clock=world.clock)

    scim = ScimService(repo, FakeWorkQueue(), world.clock)
    ada = (await scim.create(conn, "Users", {"schemas": [USER_SCHEMA], "userName": "ada@contoso.example"},
                             request_id="r1", domains=domains)).id
    bob = (await scim.create(conn, "Users", {"schemas": [USER_SCHEMA], "userName": "bob@contoso.example"},
                             request_id="r2", domains=domains)).id
    with pytest.raises(Killed):  # ada is in Entra and her link stored; killed before the event's release
        await export(Killable(world.outbox, kill={"release"})).apply(conn, entra, "Users", ada, request_id="r1")
    with pytest.raises(Killed):  # bob's event held; killed before his writes
        await export(Killable(world.outbox, kill={"held"})).apply(conn, entra, "Users", bob, request_id="r2")
    assert sorted(u.user_principal_name for u in entra.users.values()) == ["ada@contoso.example"]
    assert len(await world.outbox.held(world.name)) == 2
    world.clock.advance(minutes=6)
    # The sync's and the devices' sweeps leave export holds to the export engine.
    assert await recover_user_events(world.outbox, world.name, lambda ids: _no_rows()) == 0
    assert len(await world.outbox.held(world.name)) == 2
    assert await export(world.outbox).recover_events(world.name) == 1
    assert await world.outbox.held(world.name) == {}
    await world.publish()
    got = await world.delivered(1)
    assert [(e["type"], e["subject"], e["data"]["version"]) for e in got] == [("bridge.export.applied", ada, "1")]
    # The messages come back: ada's announces nothing new, bob's is applied and announced once.
    await export(world.outbox).apply(conn, entra, "Users", ada, request_id="r1")
    await export(world.outbox).apply(conn, entra, "Users", bob, request_id="r2")
    await world.publish()
    got = await world.delivered(2)
    assert sorted(e["subject"] for e in got) == sorted([ada, bob])


async def _no_rows() -> dict[str, UserRow]:
    return {}


def entra_of(world: World) -> MemoryTenant:
    """Entra with Ann (u1), on the world's clock."""
    tenant = MemoryTenant(clock=world.clock)
    tenant.add_user(id="u1", userPrincipalName="ann@contoso.example")
    return tenant


@dataclass
class Enrolling:
    """A device of user u1 registered in the bridge, and what registers its passkeys."""

    world: World
    directory: Directory
    graph: MemoryTenant

    def devices(self, outbox: Any = None) -> DeviceService:
        return DeviceService(directory=self.directory, **device_repositories(self.world.store), audit=FakeAuditSink(),
                             queue=FakeWorkQueue(), clock=self.world.clock, events=outbox or self.world.outbox)

    async def register(self, outbox: Any = None) -> dict[str, Any]:
        w = self.world
        passkeys = PasskeyService(devices=self.devices(outbox), directory=self.directory,
                                  **passkey_repositories(w.store),
                                  audit=FakeAuditSink(), clock=w.clock)
        entra = self.graph.passkeys()
        options = await passkeys.options(w.conn, entra, "dev-1", correlation_id="c")
        credential = SoftwareAuthenticator().register(options)
        return await passkeys.register(w.conn, entra, "dev-1", PasskeyRegistration.model_validate(
            {"ceremonyId": options["ceremonyId"], "displayName": "k", "credential": credential}), correlation_id="c")

    async def feed(self) -> list[tuple[str, str]]:
        """The published events (type, and the enrollment or passkey they name), in feed order."""
        await self.world.publish()
        page = await ChangeFeed(self.world.outbox).page(self.world.name, after=None, top=100)
        return [(e.type, str(e.data.get("enrollment") or e.data.get("passkeyId"))) for e in page.events]


@pytest.fixture
async def enrolling(world: World) -> Enrolling:
    directory = Directory(TableUsers(world.store))
    await directory.put(world.name, UserRow(id="u1", upn="ann@contoso.example"))
    found = Enrolling(world, directory, entra_of(world))
    await found.devices().register(world.conn, "dev-1", DeviceRegistration(user="u1", display_name="key",
                                                                           public_key=JWK),
                                   actor="t", correlation_id="c")
    return found


PROVIDER = ("bridge.enrollment.changed", "paired_with_provider")  # the device's registration


async def test_a_passkey_registration_announces_each_change_once(enrolling: Enrolling) -> None:
    created = await enrolling.register()
    assert await enrolling.world.outbox.held(enrolling.world.name) == {}  # released with the writes
    first, *registered = await enrolling.feed()
    assert first == PROVIDER
    assert sorted(registered) == [("bridge.enrollment.changed", "paired_with_entra"),
                                  ("bridge.passkey.registered", created["id"])]
    enrolling.world.clock.advance(minutes=6)
    assert await enrolling.devices().recover_enrollment_events(enrolling.world.name) == 0
    got = await enrolling.world.delivered(3)
    assert Counter(e["type"] for e in got) == {"bridge.enrollment.changed": 2, "bridge.passkey.registered": 1}


async def test_a_registration_stopped_before_its_writes_announces_nothing(enrolling: Enrolling) -> None:
    w = enrolling.world
    with pytest.raises(Killed):  # Entra holds the passkey, the events are held; stopped before the rows
        await enrolling.register(Killable(w.outbox, kill={"held"}))
    assert await enrolling.devices().passkeys(w.name, "dev-1") == []
    assert (await enrolling.directory.get(w.name,
                                          "u1")).enrollment is Enrollment.PAIRED_WITH_PROVIDER  # type: ignore[union-attr]
    assert len(await w.outbox.held(w.name)) == 1
    assert await enrolling.feed() == [PROVIDER]
    w.clock.advance(minutes=6)
    assert await enrolling.devices().recover_enrollment_events(w.name) == 0  # nothing stored: both dropped
    assert await w.outbox.held(w.name) == {}
    assert await enrolling.feed() == [PROVIDER]
    got = await w.delivered(1)
    assert [e["type"] for e in got] == ["bridge.enrollment.changed"]


async def test_a_registration_stopped_after_its_writes_is_announced_once_by_the_sweep(enrolling: Enrolling) -> None:
    w = enrolling.world
    with pytest.raises(Killed):  # rows written, stopped before the release
        await enrolling.register(Killable(w.outbox, kill={"release"}))
    [passkey] = await enrolling.devices().passkeys(w.name, "dev-1")
    assert (await enrolling.directory.get(w.name,
                                          "u1")).enrollment is Enrollment.PAIRED_WITH_ENTRA  # type: ignore[union-attr]
    assert await enrolling.feed() == [PROVIDER]  # held: not announced before the rows were known written
    assert await enrolling.devices().recover_enrollment_events(w.name) == 0  # too young: may be in progress
    w.clock.advance(minutes=6)
    assert await enrolling.devices().recover_enrollment_events(w.name) == 2
    assert await enrolling.devices().recover_enrollment_events(w.name) == 0
    assert await w.outbox.held(w.name) == {}
    first, *recovered = await enrolling.feed()
    assert first == PROVIDER
    assert sorted(recovered) == [("bridge.enrollment.changed", "paired_with_entra"),
                                 ("bridge.passkey.registered", passkey.method_id)]
    got = await w.delivered(3)
    assert Counter(e["type"] for e in got) == {"bridge.enrollment.changed": 2, "bridge.passkey.registered": 1}
    assert len({e["id"] for e in got}) == 3


async def test_a_registration_whose_enrollment_write_failed_announces_only_the_passkey(enrolling: Enrolling) -> None:
    w = enrolling.world

    class Failing(Directory):
        async def put(self, connection: str, row: UserRow) -> None:
            raise Transient("the users table did not answer")

    real, enrolling.directory = enrolling.directory, Failing(TableUsers(w.store))
    with pytest.raises(Transient):  # the registry row is written, the user's row is not
        await enrolling.register()
    enrolling.directory = real
    w.clock.advance(minutes=6)
    assert await enrolling.devices().recover_enrollment_events(w.name) == 1
    [passkey] = await enrolling.devices().passkeys(w.name, "dev-1")
    assert await enrolling.feed() == [PROVIDER, ("bridge.passkey.registered", passkey.method_id)]
