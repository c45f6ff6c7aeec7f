"""Enrollment-state groups against the simulator and Azurite, through the production adapters: created when
missing (owned) or found by name (adopted), membership kept, and the uninstall deletes only the groups the
bridge created, found by their recorded object id even after their configured name changed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bench.sync import open_world
from shared.adapters.graph.users import GraphDirectoryReader
from shared.config import Connection
from shared.domain.directory import Enrollment
from shared.domain.enrollment import Ownership
from shared.errors import NotFound
from shared.services.ports import Entity
from shared.topology import Table
from tests.fixtures.entra import EntraFixture


def _connection(tenant_id: str, tag: str, **renamed: str) -> Connection:
    names = {"notEnrolled": f"Bridge {tag} - Not yet enrolled", "pairedWithProvider": f"Bridge {tag} - Provider",
             "pairedWithEntra": f"Bridge {tag} - Entra", **renamed}
    return Connection.model_validate({
        "name": f"eg{tag}", "tenantId": tenant_id, "cloud": "local",
        "auth": {"kind": "clientSecret", "clientId": "5a7b9c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d",
                 "secretName": "bridge-client-secret"},
        "features": {"sync": {"enabled": True, "groups": ["Bridge Sync"]},
                     "passkeys": {"enabled": True, "enrollmentGroups": names}}})


async def test_groups_are_created_kept_and_uninstalled(entra: EntraFixture, azurite_connection_string: str,
                                                       tls_files: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    conn = _connection(entra.tenant_id, tag)
    names = conn.features.passkeys.enrollment_groups
    async with open_world(entra.tenant_id, entra.url, azurite_connection_string, str(tls_files.ca)) as world:
        reader = GraphDirectoryReader(world.graph)
        # An operator made one of the groups before the bridge ran: the bridge must adopt it, never delete it.
        existing = await reader.create_group(names.paired_with_entra, f"pre{tag}", "made by an operator")
        report = await world.sync.run(conn, reader, run_id=f"run-{tag}", correlation_id=tag)
        assert report.outcome == "completed", report.alert
        assert report.added > 0
        assert (report.enrollment_changes or 0) >= report.added
        groups = world.sync.enrollment_groups
        assert groups is not None
        known = {record.state.value: record for record in await groups.known(conn.name)}
        ids = {state: record.id for state, record in known.items()}
        assert ids[Enrollment.PAIRED_WITH_ENTRA.value] == existing
        assert known[Enrollment.PAIRED_WITH_ENTRA.value].ownership is Ownership.ADOPTED
        not_enrolled = ids[Enrollment.NOT_ENROLLED.value]
        assert len(await reader.member_ids(not_enrolled)) == report.added

        # Drift made by hand is repaired on the next run: a stray member goes, a removed member comes back.
        members = sorted(await reader.member_ids(not_enrolled))
        await reader.remove_member(not_enrolled, members[0])
        await reader.add_members(existing, [members[1]])
        again = await world.sync.run(conn, reader, run_id=f"run2-{tag}", correlation_id=tag)
        assert again.enrollment_changes == 2
        assert members[0] in await reader.member_ids(not_enrolled)
        assert await reader.member_ids(existing) == set()

        report = await groups.uninstall(conn, reader, correlation_id=tag, actor="test")
        deleted = [r.id for r in report.deleted]
        assert sorted(deleted) == sorted(i for s, i in ids.items() if s != Enrollment.PAIRED_WITH_ENTRA.value)
        assert [r.id for r in report.left] == [existing]
        for group in deleted:
            with pytest.raises(NotFound):
                await world.graph.get(f"/groups/{group}")
        assert (await world.graph.get(f"/groups/{existing}"))["id"] == existing
        assert await groups.known(conn.name) == []
        # Repeating it deletes nothing more.
        again_report = await groups.uninstall(conn, reader, correlation_id=tag)
        assert (again_report.deleted, again_report.left) == ([], [])
        await reader.delete_group(existing)


async def test_uninstall_after_adoption_deletes_only_owned_groups(entra: EntraFixture, azurite_connection_string: str,
                                                                  tls_files: Any) -> None:
    """The reported case: the bridge made its groups; the operator then configured a name that a group in Entra
    already had, and a sync adopted it. Uninstall deletes the bridge's three groups (one of them by its recorded
    id, its configured name having changed) and leaves the adopted group, naming it."""
    tag = uuid.uuid4().hex[:8]
    conn = _connection(entra.tenant_id, tag)
    async with open_world(entra.tenant_id, entra.url, azurite_connection_string, str(tls_files.ca)) as world:
        reader = GraphDirectoryReader(world.graph)
        groups = world.sync.enrollment_groups
        assert groups is not None
        first = await world.sync.run(conn, reader, run_id=f"run-{tag}", correlation_id=tag)
        assert first.outcome == "completed", first.alert
        owned = {r.id for r in await groups.known(conn.name)}
        assert len(owned) == 3
        theirs = await reader.create_group(f"Made by ops {tag}", f"ops{tag}", "made by an operator")
        renamed = _connection(entra.tenant_id, tag, pairedWithEntra=f"Made by ops {tag}")
        second = await world.sync.run(renamed, reader, run_id=f"run2-{tag}", correlation_id=tag)
        assert second.outcome == "completed", second.alert
        records = {r.id: r for r in await groups.known(conn.name)}
        assert records[theirs].ownership is Ownership.ADOPTED
        assert records[theirs].run_id == f"run2-{tag}"
        assert {g for g, r in records.items() if r.ownership is Ownership.OWNED} == owned
        assert all(r.recorded_at is not None for r in records.values())

        # A record that says "owned" for a group the bridge did not make (written by an older version, or by
        # someone with storage access) does not get that group deleted.
        payroll = await reader.create_group(f"Payroll {tag}", f"payroll{tag}", "made by an operator")
        await world.tables.upsert(Table.SYNCSTATE, Entity(conn.name, f"enrollmentGroup.{payroll}", {
            "name": f"Payroll {tag}", "state": "paired_with_provider", "ownership": "owned"}))

        plan = await groups.uninstall(renamed, reader, correlation_id=tag, actor="test", dry_run=True)
        assert {r.id for r in plan.deleted} == owned
        assert [r.id for r in plan.left] == [theirs, payroll]
        for group in owned:
            assert (await world.graph.get(f"/groups/{group}"))["id"] == group

        report = await groups.uninstall(renamed, reader, correlation_id=tag, actor="test")
        assert {r.id for r in report.deleted} == owned
        assert [r.id for r in report.left] == [theirs, payroll]
        assert [r.name for r in report.renamed] == [f"Bridge {tag} - Entra"]
        for group in owned:
            with pytest.raises(NotFound):
                await world.graph.get(f"/groups/{group}")
        assert (await world.graph.get(f"/groups/{theirs}"))["id"] == theirs
        assert (await world.graph.get(f"/groups/{payroll}"))["id"] == payroll
        await reader.delete_group(theirs)
        await reader.delete_group(payroll)


async def test_a_group_deleted_in_entra_is_made_again(entra: EntraFixture, azurite_connection_string: str,
                                                      tls_files: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    conn = _connection(entra.tenant_id, tag)
    async with open_world(entra.tenant_id, entra.url, azurite_connection_string, str(tls_files.ca)) as world:
        reader = GraphDirectoryReader(world.graph)
        groups = world.sync.enrollment_groups
        assert groups is not None
        assert (await world.sync.run(conn, reader, run_id=f"run-{tag}", correlation_id=tag)).outcome == "completed"
        before = {r.state: r.id for r in await groups.known(conn.name)}
        await reader.delete_group(before[Enrollment.NOT_ENROLLED])
        report = await world.sync.run(conn, reader, run_id=f"run2-{tag}", correlation_id=tag)
        assert report.outcome == "completed"
        assert report.alert is None
        after = {r.state: r for r in await groups.known(conn.name)}
        remade = after[Enrollment.NOT_ENROLLED]
        assert remade.id != before[Enrollment.NOT_ENROLLED]
        assert (remade.ownership, remade.run_id) == (Ownership.OWNED, f"run2-{tag}")
        assert len(await reader.member_ids(remade.id)) == report.added + report.unchanged
        cleanup = await groups.uninstall(conn, reader, correlation_id=tag)
        assert {r.id for r in cleanup.deleted} == {r.id for r in after.values()}
