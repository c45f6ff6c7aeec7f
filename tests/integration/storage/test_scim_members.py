"""A SCIM group of 50,000 members on Azurite through the production repository (docs/export.md, Limits): stored in
member rows, read back whole and in order, patched by rewriting the rows that changed, and deleted with them."""

from __future__ import annotations

import uuid

from shared.adapters.scim import TableScimRepository
from shared.adapters.tables import TableEntityStore
from shared.domain.scim import Stored
from shared.topology import Table


async def test_a_group_of_50000_members_round_trips_on_azurite(store: TableEntityStore) -> None:
    connection = f"m{uuid.uuid4().hex[:8]}"
    repo = TableScimRepository(store)
    members = [{"value": str(uuid.uuid4()), "type": "User"} for _ in range(50_000)]
    group = Stored("Groups", str(uuid.uuid4()), {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                                 "displayName": "Everyone", "members": members}, 1, "t", "t")
    await repo.create(connection, group, "")
    got = await repo.get(connection, "Groups", group.id)
    assert got is not None
    assert got.attributes == group.attributes
    rows = [r.row_key async for r in store.query(Table.SCIM, f"{connection}|members")]
    assert len(rows) == 250

    # One member removed near the end, one added: the group row and the rows that changed are rewritten.
    changed = Stored("Groups", group.id, {**group.attributes, "members": [*members[:49_990], *members[49_991:],
                                                                          {"value": "new", "type": "User"}]},
                     2, "t", "t2")
    await repo.replace(connection, changed, old_unique="", unique="")
    got = await repo.get(connection, "Groups", group.id)
    assert got is not None
    assert got.attributes["members"] == changed.attributes["members"]
    after = [r.row_key async for r in store.query(Table.SCIM, f"{connection}|members")]
    assert len(after) == 250
    assert len(set(after) - set(rows)) == 1

    await repo.delete(connection, "Groups", group.id, "")
    assert await repo.get(connection, "Groups", group.id) is None
    assert [r async for r in store.query(Table.SCIM, f"{connection}|members")] == []
