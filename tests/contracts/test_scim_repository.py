"""The ScimRepository contract, over the in-memory store and over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.domain.export import Link
from shared.domain.scim import Stored
from shared.errors import Conflict
from shared.services.ports import ExportChange, ScimRepository

WHEN = "2026-05-01T12:00:00Z"


def connection() -> str:
    return f"contract-{uuid.uuid4().hex[:10]}"


def user(name: str, version: int = 1, resource_id: str | None = None) -> Stored:
    return Stored("Users", resource_id or uuid.uuid4().hex, {"userName": name, "emails": [{"value": name}]},
                  version, WHEN, WHEN)


async def test_create_get_and_list_by_kind(scim_repository: ScimRepository) -> None:
    conn = connection()
    alice = user("alice@contoso.example")
    await scim_repository.create(conn, alice, "alice@contoso.example")
    group = Stored("Groups", uuid.uuid4().hex, {"displayName": "Sales"}, 1, WHEN, WHEN)
    await scim_repository.create(conn, group, "group:sales")
    assert await scim_repository.get(conn, "Users", alice.id) == alice
    assert await scim_repository.get(conn, "Groups", alice.id) is None
    assert await scim_repository.get(connection(), "Users", alice.id) is None
    assert [s async for s in scim_repository.all(conn, "Users")] == [alice]
    assert [s async for s in scim_repository.all(conn, "Groups")] == [group]


async def test_a_unique_name_is_taken_once(scim_repository: ScimRepository) -> None:
    conn = connection()
    await scim_repository.create(conn, user("bob@contoso.example"), "bob@contoso.example")
    second = user("bob@contoso.example")
    with pytest.raises(Conflict):
        await scim_repository.create(conn, second, "bob@contoso.example")
    assert await scim_repository.get(conn, "Users", second.id) is None
    # Another connection has names of its own.
    await scim_repository.create(connection(), user("bob@contoso.example"), "bob@contoso.example")


async def test_replace_needs_the_previous_version_and_moves_the_name(scim_repository: ScimRepository,
                                                                    other_scim_repository: ScimRepository) -> None:
    conn = connection()
    carol = user("carol@contoso.example")
    await scim_repository.create(conn, carol, "carol@contoso.example")
    renamed = user("caro@contoso.example", 2, carol.id)
    await scim_repository.replace(conn, renamed, old_unique="carol@contoso.example", unique="caro@contoso.example")
    assert await scim_repository.get(conn, "Users", carol.id) == renamed
    # The old name is free again, the new one is taken.
    await scim_repository.create(conn, user("carol@contoso.example"), "carol@contoso.example")
    with pytest.raises(Conflict):
        await scim_repository.create(conn, user("caro@contoso.example"), "caro@contoso.example")
    # Another process that read version 1 has lost the race, and its new name is not kept.
    stale = user("carolyn@contoso.example", 2, carol.id)
    with pytest.raises(Conflict):
        await other_scim_repository.replace(conn, stale, old_unique="caro@contoso.example",
                                            unique="carolyn@contoso.example")
    await scim_repository.create(conn, user("carolyn@contoso.example"), "carolyn@contoso.example")


async def test_replace_to_a_taken_name_conflicts_and_changes_nothing(scim_repository: ScimRepository) -> None:
    conn = connection()
    dave, erin = user("dave@contoso.example"), user("erin@contoso.example")
    await scim_repository.create(conn, dave, "dave@contoso.example")
    await scim_repository.create(conn, erin, "erin@contoso.example")
    with pytest.raises(Conflict):
        await scim_repository.replace(conn, user("erin@contoso.example", 2, dave.id),
                                      old_unique="dave@contoso.example", unique="erin@contoso.example")
    assert await scim_repository.get(conn, "Users", dave.id) == dave


async def test_delete_frees_the_name(scim_repository: ScimRepository) -> None:
    conn = connection()
    frank = user("frank@contoso.example")
    await scim_repository.create(conn, frank, "frank@contoso.example")
    await scim_repository.delete(conn, "Users", frank.id, "frank@contoso.example")
    assert await scim_repository.get(conn, "Users", frank.id) is None
    await scim_repository.create(conn, user("frank@contoso.example"), "frank@contoso.example")


async def test_links_are_kept_and_replaced(scim_repository: ScimRepository) -> None:
    conn = connection()
    assert await scim_repository.link(conn, "Users", "s1") is None
    first = Link("Users", "s1", None, False, (), 0)
    await scim_repository.put_link(conn, first)
    done = Link("Users", "s1", "entra-1", True, ("usageLocation missing",), 3)
    group = Link("Groups", "s1", "entra-2", True, (), 1)
    await scim_repository.put_link(conn, done)
    await scim_repository.put_link(conn, group)
    assert await scim_repository.link(conn, "Users", "s1") == done
    assert await scim_repository.link(conn, "Groups", "s1") == group
    assert sorted(await scim_repository.links(conn), key=lambda link: link.kind) == [group, done]
    assert await scim_repository.links(connection()) == []


async def test_changes_are_kept_oldest_first_until_dropped(scim_repository: ScimRepository) -> None:
    conn = connection()
    changes = [ExportChange(f"{n:020d}-{uuid.uuid4().hex[:6]}", "Users", f"s{n}", "create", f"req-{n}", WHEN)
               for n in (3, 1, 2)]
    for change in changes:
        await scim_repository.add_change(conn, change)
    assert await scim_repository.changes(conn) == sorted(changes, key=lambda c: c.id)
    await scim_repository.drop_change(conn, changes[1].id)
    await scim_repository.drop_change(conn, changes[1].id)
    assert [c.scim_id for c in await scim_repository.changes(conn)] == ["s2", "s3"]
