"""Reconciliation of registered passkeys with Entra's fido2Methods: plan (pure) and service (fakes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from shared.adapters.devices import TablePasskeys
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.devices import DeviceState, Fix, PasskeyRow, PasskeyState, plan_reconciliation
from shared.domain.directory import Enrollment, UserRow, UserState
from shared.errors import Transient
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyService
from tests.fakes import FakeAuditSink, FakeClock, FakeEntityStore, FakeWorkQueue
from tests.fakes_devices import device_repositories, passkey_repositories
from tests.fakes_graph import MemoryTenant

CONN = Connection.model_validate({"name": "demo", "tenantId": "00000000-0000-0000-0000-000000000001",
                                  "features": {"passkeys": {"enabled": True}}})
JWK: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))


def key(method: str, device: str = "dev-1", user: str = "u1", credential: str = "", **extra: Any) -> PasskeyRow:
    return PasskeyRow(method_id=method, user_id=user, device_id=device, credential_id=credential or f"c-{method}",
                      **extra)


def test_a_partial_read_changes_nothing() -> None:
    assert plan_reconciliation([key("m1")], {}, {"dev-1": DeviceState.REMOVED}) == []


def test_each_kind_of_drift_is_planned() -> None:
    passkeys = [key("m1"), key("m2", device="dev-gone"), key("m3", device="dev-2"), key("m4", device="dev-2"),
                key("m5", device="dev-3", state=PasskeyState.DELETED_IN_ENTRA)]
    fixes = plan_reconciliation(passkeys, {"u1": {"m2", "m3", "m4"}},
                                {"dev-1": DeviceState.ACTIVE, "dev-2": DeviceState.ACTIVE,
                                 "dev-3": DeviceState.ACTIVE})
    assert {(f.fix, f.passkey.method_id) for f in fixes} == {
        (Fix.MARK_DELETED, "m1"), (Fix.REVOKE, "m2"), (Fix.FLAG_DUPLICATE, "m3"), (Fix.FLAG_DUPLICATE, "m4")}


def test_a_device_being_removed_is_left_to_its_operation() -> None:
    assert plan_reconciliation([key("m1")], {"u1": {"m1"}}, {"dev-1": DeviceState.REMOVING}) == []


def test_passkeys_of_a_retired_user_are_revoked() -> None:
    fixes = plan_reconciliation([key("m1")], {"u1": {"m1"}}, {"dev-1": DeviceState.ACTIVE}, retired_users={"u1"})
    assert [(f.fix, f.reason) for f in fixes] == [(Fix.REVOKE, "user u1 was removed from the bridge")]


def test_shared_credential_ids_are_duplicates_across_devices() -> None:
    fixes = plan_reconciliation([key("m1", credential="same"), key("m2", device="dev-2", credential="same")],
                                {"u1": {"m1", "m2"}}, {"dev-1": DeviceState.ACTIVE, "dev-2": DeviceState.ACTIVE})
    assert sorted(f.passkey.method_id for f in fixes if f.fix is Fix.FLAG_DUPLICATE) == ["m1", "m2"]


def entra(methods: dict[str, list[str]], broken: set[str] | None = None) -> MemoryTenant:
    """Entra with these users and their passkeys; reading a `broken` user's methods fails."""
    tenant = MemoryTenant()
    for user, ids in methods.items():
        tenant.add_user(id=user)
        for method in ids:
            tenant.add_passkey(user, method_id=method)
    for user in broken or set():
        tenant.faults.fail("passkeys.methods", Transient("Graph is unavailable"), times=-1, key=user)
    return tenant


def revoked(tenant: MemoryTenant) -> int:
    """Revocations asked of Entra."""
    return tenant.faults.count("passkeys.revoke")


@pytest.fixture
async def world() -> tuple[PasskeyService, DeviceService, TablePasskeys, Directory, FakeAuditSink]:
    entities = FakeEntityStore()
    directory = Directory(TableUsers(entities))
    clock, audit = FakeClock(), FakeAuditSink()
    for user in ("u1", "u2", "u3"):
        await directory.put("demo", UserRow(id=user, upn=f"{user}@contoso.example"))
    devices = DeviceService(directory=directory, **device_repositories(entities), audit=audit, queue=FakeWorkQueue(),
                            clock=clock)
    for device, user in (("dev-1", "u1"), ("dev-2", "u2"), ("dev-3", "u3")):
        await devices.register(CONN, device, DeviceRegistration.model_validate(
            {"user": user, "displayName": device, "publicKey": JWK}), actor="t", correlation_id="c")
    for row in (key("m1"), key("m2", device="dev-2", user="u2"), key("m3", device="dev-3", user="u3")):
        await TablePasskeys(entities).put("demo", row)
    for user in ("u1", "u2", "u3"):
        found = await directory.get("demo", user)
        assert found is not None
        await directory.put("demo", found.model_copy(update={"enrollment": Enrollment.PAIRED_WITH_ENTRA}))
    service = PasskeyService(devices=devices, directory=directory, **passkey_repositories(entities), audit=audit,
                             clock=clock)
    return service, devices, TablePasskeys(entities), directory, audit


async def test_reconcile_marks_revokes_and_audits(world: Any) -> None:
    service, _, passkeys, directory, audit = world
    u3 = await directory.get("demo", "u3")
    await directory.put("demo", u3.model_copy(update={"state": UserState.REMOVED}))
    tenant = entra({"u1": [], "u2": ["m2", "someone-elses"], "u3": ["m3"]})
    report = await service.reconcile(CONN, tenant.passkeys(), correlation_id="c")
    assert report.as_dict() == {"users": 3, "passkeys": 3, "revoked": 1, "markedDeleted": 1, "duplicates": 0,
                                "unreadableUsers": [], "ceremoniesPurged": 0}
    assert revoked(tenant) == 1
    assert tenant.fido2["u3"] == []
    assert await passkeys.get("demo", "dev-3", "m3") is None
    marked = await passkeys.get("demo", "dev-1", "m1")
    assert marked.value.state is PasskeyState.DELETED_IN_ENTRA
    assert (await directory.get("demo", "u1")).enrollment is Enrollment.PAIRED_WITH_PROVIDER
    assert (await directory.get("demo", "u2")).enrollment is Enrollment.PAIRED_WITH_ENTRA
    actions = [(r.action, r.target, r.outcome) for r in audit.records if r.actor == "passkeys"]
    assert ("passkey.deleted_in_entra", "u1", "marked") in actions
    assert ("passkey.revoked", "u3", "revoked") in actions
    assert actions[-1] == ("passkeys.reconciled", "demo", "completed")
    again = await service.reconcile(CONN, tenant.passkeys(), correlation_id="c")
    assert (again.revoked, again.marked_deleted) == (0, 0)  # a second run finds nothing new


async def test_an_unreadable_user_is_left_alone_and_reported(world: Any) -> None:
    service, _, passkeys, _, audit = world
    tenant = entra({"u1": [], "u2": ["m2"], "u3": ["m3"]}, broken={"u2"})
    report = await service.reconcile(CONN, tenant.passkeys(), correlation_id="c")
    assert report.unreadable_users == ["u2"]
    assert (await passkeys.get("demo", "dev-2", "m2")).value.state is PasskeyState.ACTIVE
    assert audit.records[-1].outcome == "partial"


async def test_a_user_deleted_in_entra_has_no_methods_left(world: Any) -> None:
    service, _, passkeys, _, _ = world
    report = await service.reconcile(CONN, entra({"u1": ["m1"], "u3": ["m3"]}).passkeys(), correlation_id="c")
    assert report.marked_deleted == 1
    assert (await passkeys.get("demo", "dev-2", "m2")).value.state is PasskeyState.DELETED_IN_ENTRA
