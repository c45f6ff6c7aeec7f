"""Enrollment-state groups against the simulator, through the production adapters: created when missing,
membership kept, and the uninstall deletes only the groups the bridge created."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bench.sync import open_world
from shared.adapters.directory import GraphDirectoryReader
from shared.config import Connection
from shared.domain.directory import Enrollment
from shared.errors import NotFound
from tests.fixtures.entra import EntraFixture


def _connection(tenant_id: str, tag: str) -> Connection:
    names = {"notEnrolled": f"Bridge {tag} - Not yet enrolled", "pairedWithProvider": f"Bridge {tag} - Provider",
             "pairedWithEntra": f"Bridge {tag} - Entra"}
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
        known = await world.sync.enrollment_groups.known(conn.name)
        ids = {state: str(record["id"]) for state, record in known.items()}
        assert ids[Enrollment.PAIRED_WITH_ENTRA.value] == existing
        assert not known[Enrollment.PAIRED_WITH_ENTRA.value]["created"]
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

        deleted = await world.sync.enrollment_groups.uninstall(conn, reader, correlation_id=tag, actor="test")
        assert sorted(deleted) == sorted(i for s, i in ids.items() if s != Enrollment.PAIRED_WITH_ENTRA.value)
        for group in deleted:
            with pytest.raises(NotFound):
                await world.graph.get(f"/groups/{group}")
        assert (await world.graph.get(f"/groups/{existing}"))["id"] == existing
        assert await world.sync.enrollment_groups.known(conn.name) == {}
        # Repeating it deletes nothing more.
        assert await world.sync.enrollment_groups.uninstall(conn, reader, correlation_id=tag) == []
        await reader.delete_group(existing)
