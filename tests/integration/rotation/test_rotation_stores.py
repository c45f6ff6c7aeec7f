"""Rotation with the real Key Vault and Table adapters (vault emulator, Azurite): same protocol, real SDKs.

Graph is a scripted fake here; the Graph side runs against the Entra simulator in the end-to-end tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from shared.adapters.rotations import TableRotations
from shared.adapters.tables import TableEntityStore
from shared.adapters.vault import KeyVaultSecretStore
from shared.config import Connection
from shared.domain.rotation import CURRENT, FAILED, PENDING, SUPERSEDED, RotationSubject, secret_name
from shared.errors import Ambiguous
from shared.services.rotation import RotationService, Status
from tests.fakes import FakeAuditSink, FakeClock, FakeWorkQueue
from tests.fixtures.vault import VaultFixture
from tests.unit.test_rotation_service import FakeDirectory, Subjects

CONN = Connection.model_validate({
    "name": "itest", "tenantId": "00000000-0000-0000-0000-000000000001",
    "features": {"rotation": {"enabled": True, "group": "Bridge Rotation", "keepSuperseded": 1}},
})


@pytest.fixture
async def stores(vault: VaultFixture, azurite_connection_string: str) -> AsyncIterator[
        tuple[KeyVaultSecretStore, TableEntityStore]]:
    credential = vault.credential()
    secrets = KeyVaultSecretStore(vault.url, credential, connection_verify=vault.ca_file)
    tables = TableEntityStore.from_connection_string(azurite_connection_string)
    yield secrets, tables
    await secrets.close()
    await tables.close()
    await credential.close()


def service_for(secrets: KeyVaultSecretStore, tables: TableEntityStore, user: str) -> tuple[RotationService, FakeClock]:
    clock = FakeClock()
    subjects = Subjects(RotationSubject(user_id=user, upn="kim.ito@contoso.example", display_name="Kim Ito"))
    return RotationService(secrets=secrets, rotations=TableRotations(tables), audit=FakeAuditSink(),
                           queue=FakeWorkQueue(),
                           clock=clock, subjects=subjects), clock


async def states(secrets: KeyVaultSecretStore, user: str) -> list[tuple[str | None, bool]]:
    return sorted((v.state, v.enabled) for v in await secrets.versions(secret_name(CONN.name, user)))


Stores = tuple[KeyVaultSecretStore, TableEntityStore]


async def test_rotations_keep_every_password_entra_may_hold(stores: Stores) -> None:
    secrets, tables = stores
    user = str(uuid.uuid4())
    service, clock = service_for(secrets, tables, user)
    directory = FakeDirectory(script=["ok", "reject", "ok", "ambiguous"])

    first = await service.rotate(CONN, directory, user, rotation_id="r1", correlation_id="c1")
    assert first.status is Status.ROTATED
    clock.advance(minutes=10)
    second = await service.rotate(CONN, directory, user, rotation_id="r2", correlation_id="c2")
    assert second.status is Status.ROTATED
    assert await states(secrets, user) == [(CURRENT, True), (FAILED, False), (SUPERSEDED, True)]

    clock.advance(minutes=10)
    with pytest.raises(Ambiguous):
        await service.rotate(CONN, directory, user, rotation_id="r3", correlation_id="c3")
    delivered = await service.read_for_device(CONN, user)
    assert directory.password in {delivered.password, *(p for _, p in delivered.possibly_current)}
    assert (PENDING, True) in await states(secrets, user)

    row, _ = await service.status_row(CONN.name, user)
    assert row.status is Status.POSSIBLY_CURRENT
    assert row.lease_owner is None
