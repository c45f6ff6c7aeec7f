"""Passkey requests run independent storage calls together: still nothing stored on a refusal, still audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import SoftwareAuthenticator
from shared.adapters.ceremonies import TableCeremonies
from shared.adapters.devices import TableDevices
from shared.adapters.tables import storage_transport
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain import attestation
from shared.domain.directory import UserRow, UserState
from shared.errors import Conflict, InvalidInput, NotFound, Transient
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyRegistration, PasskeyService, ceremony_id, ceremony_user, settle
from shared.services.ports import Entity, Versioned
from shared.topology import Table
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant

CONN = Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                  "features": {"passkeys": {"enabled": True}}})
JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


class FailingStore(FakeEntityStore):
    """Fails writes to one table, as a storage outage would."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: Table | None = None

    async def insert(self, table: Table, entity: Entity) -> Entity:
        if table is self.failing:
            raise Transient(f"storage failed on {table.value}")
        return await super().insert(table, entity)

    async def upsert(self, table: Table, entity: Entity) -> Entity:
        if table is self.failing:
            raise Transient(f"storage failed on {table.value}")
        return await super().upsert(table, entity)


@pytest.fixture
async def world() -> tuple[PasskeyService, FailingStore, FakeAuditSink, Directory, MemoryTenant]:
    entities = FailingStore()
    directory = Directory(TableUsers(entities))
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
    audit = FakeAuditSink()
    clock = FakeClock()
    devices = DeviceService(directory=directory, **device_repositories(entities), audit=audit, queue=FakeWorkQueue(),
                            clock=clock)
    await devices.register(CONN, "dev-1", DeviceRegistration.model_validate(
        {"user": "u1", "displayName": "key", "publicKey": JWK}), actor="t", correlation_id="c")
    return (PasskeyService(devices=devices, directory=directory, **passkey_repositories(entities), audit=audit,
                           clock=clock),
            entities, audit, directory, tenant(clock))


def tenant(clock: FakeClock) -> MemoryTenant:
    """Entra with Ann (u1), on the test's clock."""
    entra = MemoryTenant(clock=clock)
    entra.add_user(id="u1", userPrincipalName="ann@contoso.example")
    return entra


async def test_settle_waits_for_every_call_and_raises_the_first_failure_in_argument_order() -> None:
    finished: list[str] = []

    async def slow_ok() -> str:
        await asyncio.sleep(0.02)
        finished.append("slow")
        return "ok"

    async def fails(message: str, delay: float) -> None:
        await asyncio.sleep(delay)
        raise NotFound(message)

    assert await settle(slow_ok(), asyncio.sleep(0, result=2)) == ["ok", 2]
    with pytest.raises(NotFound, match="first"):
        await settle(fails("first", 0.01), fails("second", 0), slow_ok())
    assert finished == ["slow", "slow"]


async def test_options_for_an_inactive_user_store_nothing_even_when_entra_answered(world: Any) -> None:
    service, entities, audit, directory, graph = world
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example", state=UserState.DEACTIVATED))
    with pytest.raises(Conflict, match="not active"):
        await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    assert entities.tables.get(Table.CEREMONIES, {}) == {}
    assert "passkey.options" not in audit.actions()


async def test_a_ceremony_that_could_not_be_stored_is_audited_as_failed(world: Any) -> None:
    service, entities, audit, _, graph = world
    entities.failing = Table.CEREMONIES
    with pytest.raises(Transient):
        await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    outcomes = [(r.action, r.outcome) for r in audit.records if r.action == "passkey.options"]
    assert outcomes == [("passkey.options", "issued"), ("passkey.options", "failed")]


async def test_a_registration_in_entra_is_audited_even_when_the_registry_row_fails(world: Any) -> None:
    service, entities, audit, _, graph = world
    options = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                               "credential": SoftwareAuthenticator().register(options)})
    entities.failing = Table.PASSKEYS
    with pytest.raises(Transient):
        await service.register(CONN, graph.passkeys(), "dev-1", body, correlation_id="c")
    registered = [r for r in audit.records if r.action == "passkey.registered"]
    assert len(registered) == 1
    assert registered[0].graph_request_id == graph.fido2["u1"][0].request_id


async def test_register_checks_the_user_before_the_ceremony_and_consumes_nothing_on_refusal(world: Any) -> None:
    service, entities, _, directory, graph = world
    options = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                               "credential": SoftwareAuthenticator().register(options)})
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example", state=UserState.REMOVED))
    with pytest.raises(Conflict, match="not active"):
        await service.register(CONN, graph.passkeys(), "dev-1", body, correlation_id="c")
    ceremony = await TableCeremonies(entities).get("demo", options["ceremonyId"])
    assert ceremony is not None
    assert ceremony.value.used is False
    assert graph.faults.count("passkeys.register") == 0
    await directory.put("demo", UserRow(id="u1", upn="ann@contoso.example"))
    with pytest.raises(NotFound, match="was not issued"):
        await service.register(CONN, graph.passkeys(), "dev-1",
                               body.model_copy(update={"ceremony_id": "cer-unknown"}), correlation_id="c")


def test_parsing_keeps_the_library_checks() -> None:
    credential = SoftwareAuthenticator().register({"rp": {"id": attestation.ENTRA_RP_ID}, "challenge": ""},
                                                  challenge=b"c" * 32)
    attestation.verify(credential, challenge=b"c" * 32)
    for broken in ({**credential, "id": "other"}, {k: v for k, v in credential.items() if k != "rawId"},
                   {**credential, "response": {}}, {**credential, "clientExtensionResults": []}):
        with pytest.raises(attestation.AttestationRejected, match="not a WebAuthn RegistrationResponse"):
            attestation.verify(broken, challenge=b"c" * 32)


def test_storage_clients_look_up_proxies_only_when_one_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert storage_transport()._use_env_settings is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert storage_transport()._use_env_settings is True


def test_a_ceremony_id_names_its_user_and_other_forms_name_nobody() -> None:
    made = ceremony_id("0b7c-user")
    assert ceremony_user(made) == "0b7c-user"
    assert made != ceremony_id("0b7c-user")
    for other in ("cer-unknown", "cer-" + "a" * 32, "cer-" + "a" * 31 + "-u1", "xyz-" + "a" * 32 + "-u1", ""):
        assert ceremony_user(other) is None


async def test_register_reads_the_device_s_new_user_when_the_device_changed_hands(world: Any) -> None:
    service, entities, _, directory, graph = world
    options = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    # The device was removed and its id registered again for another user between options and register.
    await directory.put("demo", UserRow(id="u2", upn="bob@contoso.example"))
    devices = TableDevices(entities)
    device = await devices.get("demo", "dev-1")
    await devices.put("demo", device.value.model_copy(update={"user_id": "u2"}))
    body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                               "credential": SoftwareAuthenticator().register(options)})
    # The ceremony names u1, the device now belongs to u2: u2 is read and the ceremony refused for it.
    with pytest.raises(Conflict, match="issued to another user"):
        await service.register(CONN, graph.passkeys(), "dev-1", body, correlation_id="c")
    assert graph.faults.count("passkeys.register") == 0


async def test_long_expired_ceremonies_are_purged_and_recent_ones_kept(world: Any) -> None:
    service, entities, _, _, graph = world
    clock: FakeClock = service._clock  # the clock the service reads
    first = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    await entities.upsert(Table.CEREMONIES, Entity("demo", "cer-broken", {"expiresAt": "not a time"}))
    clock.advance(days=2)
    second = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    # Give the second ceremony a current expiry.
    ceremonies = TableCeremonies(entities)
    row = await ceremonies.get("demo", second["ceremonyId"])
    await ceremonies.consume("demo", Versioned(row.value.model_copy(update={
        "expires_at": clock.now() + dt.timedelta(minutes=5)}), row.version))
    assert await service.purge_ceremonies("demo") == 2
    assert await ceremonies.get("demo", first["ceremonyId"]) is None
    assert await ceremonies.get("demo", second["ceremonyId"]) is not None
    assert await service.purge_ceremonies("demo") == 0


async def test_a_credential_the_device_already_registered_is_refused_by_name(world: Any) -> None:
    # The registry's row, read with the options, is what catches the repeat (before Entra would), and the
    # registration reads no passkey rows itself.
    service, entities, audit, _, graph = world
    authenticator = SoftwareAuthenticator()
    same = os.urandom(32)
    options = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    first = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "k",
                                                "credential": authenticator.register(options, credential_id=same)})
    await service.register(CONN, graph.passkeys(), "dev-1", first, correlation_id="c")
    again = await service.options(CONN, graph.passkeys(), "dev-1", correlation_id="c")
    repeat = PasskeyRegistration.model_validate({"ceremonyId": again["ceremonyId"], "displayName": "k",
                                                 "credential": authenticator.register(again, credential_id=same)})
    posts = graph.faults.count("passkeys.register")
    with pytest.raises(InvalidInput, match=r"credentialId.*already registered"):
        await service.register(CONN, graph.passkeys(), "dev-1", repeat, correlation_id="c")
    assert graph.faults.count("passkeys.register") == posts
    ceremony = await TableCeremonies(entities).get("demo", again["ceremonyId"])
    assert ceremony is not None
    assert ceremony.value.used is False
    assert [r.detail["check"] for r in audit.records if r.action == "passkey.rejected"] == ["credentialId"]
