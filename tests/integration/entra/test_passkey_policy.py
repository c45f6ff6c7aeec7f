"""Passkey checks against the simulator and Azurite, through the production adapters: a key ban set in the
tenant is honoured without a Graph write once the bridge's copy of the policy is older than its max age,
Graph's own refusal is the bridge's refusal, and enforced attestation trusts only roots of the FIDO
metadata the simulator serves (fetched over https, kept in Table storage)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.identity.aio import ClientSecretCredential
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from local.authenticator import DEFAULT_AAGUID, TEST_ROOT_NAME, AttestationRoot, SoftwareAuthenticator
from local.entra.demo import BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET
from local.entra.process import RunningEntra, running
from local.mds import root_setting
from local.tls import TlsFiles
from shared.adapters.audit import TableAuditSink, VaultAuditAnchors, VaultAuditKeys
from shared.adapters.graph import GraphGateway, ThrottleGovernor
from shared.adapters.graph.fido2 import GraphPasskeyDirectory
from shared.adapters.mds import HEAD, PARTITION, FidoMetadata
from shared.adapters.queues import StorageWorkQueue
from shared.adapters.tables import TableEntityStore
from shared.adapters.users import TableUsers
from shared.config import Connection
from shared.domain.directory import UserRow
from shared.domain.mds import root_certificate
from shared.errors import InvalidInput
from shared.services.devices import DeviceRegistration, DeviceService
from shared.services.directory import Directory
from shared.services.passkeys import PasskeyRegistration, PasskeyService
from shared.topology import Table
from tests.fakes import FakeClock, FakeSecretStore
from tests.fakes_devices import device_repositories, passkey_repositories

BAN = {"isEnforced": True, "enforcementType": "block", "aaGuids": [DEFAULT_AAGUID]}
NO_BAN = {"isEnforced": False, "enforcementType": "block", "aaGuids": []}


@dataclass
class ShiftedClock:
    """Wall-clock time moved forward on request (the simulator keeps real time for its challenges)."""

    offset: dt.timedelta = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def sim(tls_files: TlsFiles, run_dir: Path) -> Iterator[RunningEntra]:
    # A simulator of its own: the policy changes here must touch no other test.
    with running(data_dir=run_dir / "entra-passkey-policy", log_path=run_dir / "entra-passkey-policy.log",
                 limits=False) as found:
        yield found


@dataclass
class World:
    sim: RunningEntra
    service: PasskeyService
    entra: GraphPasskeyDirectory
    conn: Connection
    clock: ShiftedClock
    tables: TableEntityStore
    user_id: str

    def writes(self) -> int:
        return int(self.sim.admin("GET", "/_sim/counters")["writes"])

    def policy(self, **changes: Any) -> None:
        self.sim.admin("PATCH", "/_sim/policies/fido2", changes)

    async def register(self, authenticator: SoftwareAuthenticator | None = None) -> dict[str, Any]:
        options = await self.service.options(self.conn, self.entra, "laptop", correlation_id="t")
        credential = (authenticator or SoftwareAuthenticator()).register(options)
        body = PasskeyRegistration.model_validate({"ceremonyId": options["ceremonyId"], "displayName": "laptop",
                                                   "credential": credential})
        return await self.service.register(self.conn, self.entra, "laptop", body, correlation_id="t")


@pytest.fixture
async def world(sim: RunningEntra, azurite_connection_string: str, tls_files: TlsFiles) -> AsyncIterator[World]:
    tag = uuid.uuid4().hex[:8]
    conn = Connection.model_validate({
        "name": f"pk{tag}", "tenantId": sim.tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": BRIDGE_CLIENT_ID, "secretName": "bridge-client-secret"},
        "features": {"passkeys": {"enabled": True}}})
    clock = ShiftedClock()
    context = ssl.create_default_context(cafile=str(tls_files.ca))
    tables = TableEntityStore.from_connection_string(azurite_connection_string)
    queue = StorageWorkQueue.from_connection_string(azurite_connection_string)
    credential = ClientSecretCredential(sim.tenant_id, BRIDGE_CLIENT_ID, BRIDGE_CLIENT_SECRET, authority=sim.url,
                                        connection_verify=str(tls_files.ca))
    graph = GraphGateway(connection=conn.name, tenant_id=sim.tenant_id, credential=credential, graph_base=sim.url,
                         scope="https://graph.microsoft.com/.default", verify=context,
                         governor=ThrottleGovernor(tables, clock))
    try:
        vault = FakeSecretStore(FakeClock())  # the audit key and anchors; this test is about Graph writes
        audit = TableAuditSink(tables, clock, VaultAuditKeys(lambda: vault, clock), VaultAuditAnchors(lambda: vault))
        directory = Directory(TableUsers(tables))
        devices = DeviceService(directory=directory, **device_repositories(tables), audit=audit, queue=queue,
                                clock=clock)
        metadata = FidoMetadata(tables, clock, url=f"{sim.url}/mds3/",
                                root_der=root_certificate(root_setting(tls_files)), verify=context)
        service = PasskeyService(devices=devices, directory=directory, **passkey_repositories(tables), audit=audit,
                                 clock=clock,
                                 trust=metadata)
        user = (await graph.get("/users", params={"$top": "1", "$select": "id,userPrincipalName"}))["value"][0]
        await directory.put(conn.name, UserRow(id=user["id"], upn=user["userPrincipalName"]))
        key = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
        await devices.register(conn, "laptop", DeviceRegistration.model_validate(
            {"user": user["id"], "displayName": "laptop", "publicKey": key}), actor="t", correlation_id="t")
        found = World(sim, service, GraphPasskeyDirectory(graph), conn, clock, tables, user["id"])
        found.policy(keyRestrictions=NO_BAN, isAttestationEnforced=False)
        yield found
    finally:
        await graph.close()
        await credential.close()
        await tables.close()
        await queue.close()


async def test_a_ban_set_in_the_tenant_is_honoured_on_the_next_registration_without_a_graph_write(
        world: World) -> None:
    assert (await world.register())["aaguid"] == DEFAULT_AAGUID
    world.policy(keyRestrictions=BAN)
    world.clock.advance(30)  # the bridge's copy of the policy is now as old as PASSKEY_POLICY_MAX_AGE_SECONDS
    writes = world.writes()
    with pytest.raises(InvalidInput) as caught:
        await world.register()
    assert caught.value.field == "credential (aaguid)"
    assert "blocked by the tenant's FIDO2 key restrictions" in caught.value.detail
    assert world.writes() == writes, "refused by the bridge: Graph saw no write"


async def test_graphs_refusal_of_a_ban_is_the_bridges_refusal(world: World) -> None:
    await world.register()
    world.policy(keyRestrictions=BAN)  # the bridge's copy is a moment old: Graph is the first to know
    writes = world.writes()
    with pytest.raises(InvalidInput) as from_graph:
        await world.register()
    assert world.writes() == writes + 1
    assert from_graph.value.field == "credential (aaguid)"
    assert from_graph.value.request_id, "Graph's request id is kept"
    # Graph's refusal made the bridge read the policy again: the next one stops here.
    with pytest.raises(InvalidInput) as from_bridge:
        await world.register()
    assert world.writes() == writes + 1
    assert (from_bridge.value.type_uri, from_bridge.value.field) == (from_graph.value.type_uri,
                                                                     from_graph.value.field)


async def test_enforced_attestation_trusts_only_roots_of_the_served_metadata(world: World) -> None:
    world.policy(isAttestationEnforced=True)
    world.clock.advance(30)
    writes = world.writes()
    forged = SoftwareAuthenticator(fmt="packed-x5c", root=AttestationRoot.generate(TEST_ROOT_NAME))
    with pytest.raises(InvalidInput) as caught:
        await world.register(forged)
    assert caught.value.field == "credential (attestationStatement.x5c)"
    assert world.writes() == writes
    registered = await world.register(SoftwareAuthenticator(fmt="packed-x5c"))
    assert (registered["attestation"], registered["attestationTrust"]) == ("basic", "trusted")
    head = await world.tables.get(Table.FIDOMETADATA, PARTITION, HEAD)
    assert head is not None
    assert head.data["url"] == f"{world.sim.url}/mds3/"
    listed = {m.id: m for m in await world.entra.methods(world.user_id)}
    assert listed[registered["id"]].attestation_level == "attested"


async def test_a_blob_over_one_row_is_kept_in_table_storage(azurite_connection_string: str) -> None:
    # Several rows of 15 properties of 30,000 characters: what the FIDO Alliance's blob of some megabytes needs.
    from tests.unit.test_fido_metadata import Source, signed

    tables = TableEntityStore.from_connection_string(azurite_connection_string)
    try:
        clock = ShiftedClock()
        source = Source(signed(padding=1500))
        root = root_certificate(root_setting())
        first = await FidoMetadata(tables, clock, url="https://mds.example/big", root_der=root, fetch=source).anchors()
        again = await FidoMetadata(tables, clock, url="https://mds.example/big", root_der=root, fetch=source).anchors()
        assert (first.entries, again.entries, source.fetches) == (1501, 1501, 1)
        rows = [e async for e in tables.query(Table.FIDOMETADATA, PARTITION) if e.row_key != HEAD]
        assert len(rows) >= 3
    finally:
        await tables.close()
