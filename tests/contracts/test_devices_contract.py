"""Contracts of DeviceRepository, PasskeyRepository, DeviceOperations and SpentTokens: the in-memory fakes and the
Table adapters on Azurite answer alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from shared.domain.devices import DeviceRow, DeviceState, PasskeyRow, PasskeyState, PublicJwk
from shared.errors import Conflict, InvalidInput
from shared.services.ports import Versioned

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEY = PublicJwk(kty="EC", crv="P-256", x="A" * 43, y="B" * 43)


def device(device_id: str = "dev-1", user: str = "u1", **changes: Any) -> DeviceRow:
    return DeviceRow(id=device_id, user_id=user, display_name="key", public_key=KEY, registered_at=NOW,
                     updated_at=NOW).model_copy(update=changes)


def passkey(method: str, device_id: str = "dev-1", **changes: Any) -> PasskeyRow:
    return PasskeyRow(method_id=method, user_id="u1", device_id=device_id, credential_id=f"cred-{method}",
                      registered_at=NOW).model_copy(update=changes)


async def test_a_device_is_added_once_and_read_back(make_repository: Callable[[str], Any], connection: str) -> None:
    devices = make_repository("devices")
    assert await devices.get(connection, "dev-1") is None
    await devices.add(connection, device())
    found = await devices.get(connection, "dev-1")
    assert found is not None
    assert found.value == device()
    assert found.version
    with pytest.raises(Conflict):
        await devices.add(connection, device(user="u2"))
    assert await devices.get("other-connection", "dev-1") is None


async def test_a_device_written_back_after_a_change_conflicts(make_repository: Callable[[str], Any],
                                                              connection: str) -> None:
    devices = make_repository("devices")
    await devices.add(connection, device())
    first = await devices.get(connection, "dev-1")
    await devices.replace(connection, Versioned(first.value.model_copy(update={"state": DeviceState.REMOVING}),
                                                first.version))
    with pytest.raises(Conflict):
        await devices.replace(connection, Versioned(first.value.model_copy(update={"display_name": "late"}),
                                                    first.version))
    await devices.put(connection, first.value.model_copy(update={"state": DeviceState.REMOVED}))
    found = await devices.get(connection, "dev-1")
    assert found.value.state is DeviceState.REMOVED
    assert found.version != first.version


async def test_every_device_of_a_connection_is_listed(make_repository: Callable[[str], Any], connection: str) -> None:
    devices = make_repository("devices")
    for name in ("dev-2", "dev-1", "dev-3"):
        await devices.add(connection, device(name))
    await devices.add(f"{connection}x", device("dev-9"))
    assert sorted([d.id async for d in devices.all(connection)]) == ["dev-1", "dev-2", "dev-3"]


async def test_passkeys_are_kept_per_device(make_repository: Callable[[str], Any], connection: str) -> None:
    passkeys = make_repository("passkeys")
    for method, device_id in (("m1", "dev-1"), ("m2", "dev-1"), ("m3", "dev-10"), ("m4", "dev-2")):
        await passkeys.put(connection, passkey(method, device_id))
    assert sorted(p.method_id for p in await passkeys.of_device(connection, "dev-1")) == ["m1", "m2"]
    assert [p.method_id for p in await passkeys.of_device(connection, "dev-10")] == ["m3"]
    assert sorted([p.value.method_id async for p in passkeys.all(connection)]) == ["m1", "m2", "m3", "m4"]
    found = await passkeys.get(connection, "dev-1", "m1")
    assert found.value == passkey("m1")
    await passkeys.delete(connection, "dev-1", "m1")
    await passkeys.delete(connection, "dev-1", "m1")  # absent counts as deleted
    assert await passkeys.get(connection, "dev-1", "m1") is None
    assert await passkeys.get(connection, "dev-1", "m2") is not None


async def test_a_passkey_written_back_after_a_change_conflicts(make_repository: Callable[[str], Any],
                                                               connection: str) -> None:
    passkeys = make_repository("passkeys")
    await passkeys.put(connection, passkey("m1"))
    seen = await passkeys.get(connection, "dev-1", "m1")
    await passkeys.replace(connection, Versioned(seen.value.model_copy(update={"state": PasskeyState.DELETED_IN_ENTRA}),
                                                 seen.version))
    with pytest.raises(Conflict):
        await passkeys.replace(connection, Versioned(seen.value.model_copy(update={"duplicate": True}), seen.version))
    assert (await passkeys.get(connection, "dev-1", "m1")).value.state is PasskeyState.DELETED_IN_ENTRA


async def test_ids_that_cannot_name_a_passkey_are_invalid(make_repository: Callable[[str], Any],
                                                          connection: str) -> None:
    with pytest.raises(InvalidInput):
        await make_repository("passkeys").get(connection, "dev/1", "m1")


async def test_an_operation_starts_once_and_merges_its_progress(make_repository: Callable[[str], Any],
                                                                connection: str) -> None:
    operations = make_repository("operations")
    assert await operations.get(connection, "op-1") is None
    await operations.start(connection, "op-1", {"kind": "device.remove", "status": "queued", "total": 2, "done": 0})
    with pytest.raises(Conflict):
        await operations.start(connection, "op-1", {"status": "queued"})
    problem = {"type": "about:blank", "title": "Transient", "status": 503, "detail": "Graph did not answer"}
    merged = await operations.update(connection, "op-1", {"status": "failed", "done": 1, "problem": problem})
    assert merged == {"kind": "device.remove", "status": "failed", "total": 2, "done": 1, "problem": problem}
    assert await operations.get(connection, "op-1") == merged
    assert await operations.update(connection, "op-2", {"status": "running"}) == {"status": "running"}


async def test_a_token_id_is_spent_once_and_forgotten_after_its_time(make_repository: Callable[[str], Any],
                                                                     connection: str) -> None:
    spent = make_repository("spent")
    assert await spent.spend(connection, "dev-1", "jti-1", NOW + dt.timedelta(minutes=5))
    assert not await spent.spend(connection, "dev-1", "jti-1", NOW + dt.timedelta(minutes=5))
    assert await spent.spend(connection, "dev-2", "jti-1", NOW + dt.timedelta(minutes=15))
    assert await spent.forget(connection, NOW + dt.timedelta(minutes=10)) == 1
    assert not await spent.spend(connection, "dev-2", "jti-1", NOW)
    assert await spent.spend(connection, "dev-1", "jti-1", NOW)
