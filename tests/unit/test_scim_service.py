"""The SCIM service (docs/export.md): RFC 7644 behaviour, and every bad input refused with a SCIM error that
names the problem while nothing is written or queued."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.scim import TableScimRepository
from shared.config import Connection
from shared.domain.scim import ENTERPRISE_SCHEMA, GROUP_EXTENSION_SCHEMA, GROUP_SCHEMA, USER_SCHEMA, ScimError, Stored
from shared.services.scim import BulkRunner, ScimService
from shared.topology import Queue, Table
from tests.fakes import FakeClock, FakeEntityStore, FakeWorkQueue

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _conn(**export: Any) -> Connection:
    return Connection.model_validate({"name": "c1", "tenantId": "11111111-2222-3333-4444-555555555555",
                                      "features": {"export": {"enabled": True, **export}}})


async def _domains() -> list[str]:
    return ["contoso.example"]


@pytest.fixture
def world() -> tuple[ScimService, FakeEntityStore, FakeWorkQueue]:
    entities, queue = FakeEntityStore(), FakeWorkQueue()
    return ScimService(TableScimRepository(entities), queue, FakeClock()), entities, queue


def _user(name: str = "ada@contoso.example", **extra: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": name, "active": True,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            ENTERPRISE_SCHEMA: {"employeeNumber": "42", "department": "R&D"}, **extra}


def _rows(entities: FakeEntityStore) -> int:
    return len(entities._table(Table.SCIM))  # the fake's own helper, not a library's


async def test_create_get_filter_page_patch_put_delete(world: Any) -> None:
    service, _, queue = world
    conn = _conn()
    ada = await service.create(conn, "Users", _user(password="Never-Stored-1"), request_id="r1", domains=_domains)
    assert "password" not in ada.attributes  # write-only: never kept
    bob = await service.create(conn, "Users", _user("bob@contoso.example", externalId="x-bob"), request_id="r2",
                               domains=_domains)
    assert ada.etag == 'W/"1"'
    assert (await service.get(conn, "Users", ada.id)).attributes["userName"] == ada.attributes[
        "userName"]
    found, total, _ = await service.query(conn, "Users", filter_text='userName eq "ADA@contoso.example" or '
                                                                     'externalId eq "x-bob"', start_index=None,
                                          count=None)
    assert total == 2
    assert {s.id for s in found} == {ada.id, bob.id}
    found, total, _ = await service.query(conn, "Users", filter_text='externalId pr and userName eq '
                                                                     '"bob@contoso.example"', start_index=None,
                                          count=None)
    assert [s.id for s in found] == [bob.id]
    page, total, start = await service.query(conn, "Users", filter_text=None, start_index="2", count="1")
    assert (total, start, len(page)) == (2, 2, 1)
    patched = await service.patch(conn, "Users", ada.id, {"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": False},
        {"op": "replace", "path": f"{ENTERPRISE_SCHEMA}:department", "value": "Ops"}]},
        if_match=ada.etag, request_id="r3", domains=_domains)
    assert patched.attributes["active"] is False
    assert patched.attributes[ENTERPRISE_SCHEMA]["department"] == "Ops"
    assert patched.etag == 'W/"2"'
    with pytest.raises(ScimError) as stale:
        await service.replace(conn, "Users", ada.id, _user(), if_match=ada.etag, request_id="r4", domains=_domains)
    assert stale.value.status == 412
    group = await service.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Team",
                                                  "members": [{"value": ada.id}]}, request_id="r5", domains=_domains)
    moved = await service.patch(conn, "Groups", group.id, {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": bob.id}]},
        {"op": "remove", "path": f'members[value eq "{ada.id}"]'}]}, if_match=None, request_id="r6",
        domains=_domains)
    assert [m["value"] for m in moved.attributes["members"]] == [bob.id]
    await service.delete(conn, "Users", bob.id, if_match=None, request_id="r7")
    with pytest.raises(ScimError) as gone:
        await service.get(conn, "Users", bob.id)
    assert gone.value.status == 404
    # Every accepted change is queued for the export engine with the SCIM request's id.
    messages = queue.messages(Queue.EXPORT)
    assert [m["correlationId"] for m in messages] == ["r1", "r2", "r3", "r5", "r6", "r7"]


@pytest.mark.parametrize(("kind", "payload", "scim_type", "named"), [
    ("Users", _user(nickName="x", favouriteColour="red"), "invalidSyntax", "favouriteColour"),
    ("Users", _user("ada@unverified.example"), "invalidValue", "unverified.example"),
    ("Users", {"schemas": [USER_SCHEMA], "userName": "ada@contoso.example", "active": "perhaps"}, "invalidValue",
     "active"),
    ("Groups", {"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": "nobody"}]}, "invalidValue",
     "nobody"),
    # Each exported attribute's values that Entra would refuse (docs/export.md, Rules applied in Entra).
    ("Users", _user(title="t" * 129), "invalidValue", "title"),
    ("Users", {**_user(), "name": {"givenName": "g" * 65}}, "invalidValue", "name.givenName"),
    ("Users", {**_user(), "name": {"familyName": "f" * 65}}, "invalidValue", "name.familyName"),
    ("Users", _user(displayName="d" * 257), "invalidValue", "displayName"),
    ("Users", _user(emails=[{"value": "adà@contoso.example", "primary": True}]), "invalidValue", "emails"),
    ("Users", _user(emails=[{"value": "not-an-address"}]), "invalidValue", "emails"),
    ("Users", _user(phoneNumbers=[{"value": "1" * 65, "type": "work"}]), "invalidValue", "phoneNumbers"),
    ("Users", _user(phoneNumbers=[{"value": "1" * 65, "type": "mobile"}]), "invalidValue", "mobile"),
    ("Users", _user(addresses=[{"type": "work", "postalCode": "9" * 41}]), "invalidValue", "postalCode"),
    ("Users", _user(addresses=[{"type": "work", "locality": "c" * 129}]), "invalidValue", "locality"),
    ("Users", _user(addresses=[{"type": "work", "streetAddress": "s" * 1025}]), "invalidValue", "streetAddress"),
    ("Users", _user(addresses=[{"type": "work", "country": 7}]), "invalidValue", "country"),
    ("Users", _user(**{ENTERPRISE_SCHEMA: {"employeeNumber": "1" * 17}}), "invalidValue", "employeeNumber"),
    ("Users", _user(**{ENTERPRISE_SCHEMA: {"department": "d" * 65}}), "invalidValue", "department"),
    ("Users", _user(**{ENTERPRISE_SCHEMA: {"organization": "o" * 65}}), "invalidValue", "organization"),
    ("Users", _user(**{ENTERPRISE_SCHEMA: {"manager": {"value": "nobody"}}}), "invalidValue", "nobody"),
    ("Users", _user(**{ENTERPRISE_SCHEMA: {"manager": "boss"}}), "invalidValue", "manager"),
    ("Groups", {"schemas": [GROUP_SCHEMA, GROUP_EXTENSION_SCHEMA], "displayName": "G",
                GROUP_EXTENSION_SCHEMA: {"description": "x" * 1025}}, "invalidValue", "description"),
    ("Groups", {"schemas": [GROUP_SCHEMA, GROUP_EXTENSION_SCHEMA], "displayName": "G",
                GROUP_EXTENSION_SCHEMA: {"description": "d", "owners": []}}, "invalidSyntax", "owners"),
    ("Groups", {"schemas": [GROUP_SCHEMA, GROUP_EXTENSION_SCHEMA], "displayName": "G",
                GROUP_EXTENSION_SCHEMA: {"description": 5}}, "invalidValue", "description"),
])
async def test_bad_resources_are_refused_naming_the_problem(world: Any, kind: Any, payload: dict[str, Any],
                                                            scim_type: str, named: str) -> None:
    service, entities, queue = world
    with pytest.raises(ScimError) as refused:
        await service.create(_conn(), kind, payload, request_id="r", domains=_domains)
    assert refused.value.status == 400
    assert refused.value.scim_type == scim_type
    assert named in refused.value.detail
    assert refused.value.body()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert _rows(entities) == 0
    assert queue.messages(Queue.EXPORT) == []


async def test_bad_filters_paths_and_self_membership_write_nothing(world: Any) -> None:
    service, entities, queue = world
    conn = _conn()
    ada = await service.create(conn, "Users", _user(), request_id="r1", domains=_domains)
    group = await service.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "G"}, request_id="r2",
                                 domains=_domains)
    before, sent = dict(entities._table(Table.SCIM)), len(queue.messages(Queue.EXPORT))
    for bad in ('favouriteColour eq "red"', 'userName eqq "x"', 'userName eq'):
        with pytest.raises(ScimError) as refused:
            await service.query(conn, "Users", filter_text=bad, start_index=None, count=None)
        assert refused.value.scim_type == "invalidFilter"
        assert bad in refused.value.detail
    with pytest.raises(ScimError) as path:
        await service.patch(conn, "Users", ada.id, {"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "name.nickname", "value": "x"}]}, if_match=None, request_id="r", domains=_domains)
    assert path.value.scim_type == "invalidPath"
    assert "name.nickname" in path.value.detail
    with pytest.raises(ScimError) as itself:
        await service.patch(conn, "Groups", group.id, {"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": group.id}]}]}, if_match=None, request_id="r",
            domains=_domains)
    assert itself.value.scim_type == "invalidValue"
    assert "member of itself" in itself.value.detail
    with pytest.raises(ScimError) as taken:
        await service.create(conn, "Users", _user("ADA@contoso.example"), request_id="r", domains=_domains)
    assert taken.value.status == 409
    assert taken.value.scim_type == "uniqueness"
    assert {k: v.data for k, v in entities._table(Table.SCIM).items()} == {k: v.data for k, v in before.items()}
    assert len(queue.messages(Queue.EXPORT)) == sent


async def test_export_off_answers_404_naming_the_setting(world: Any) -> None:
    service, _, _ = world
    conn = Connection.model_validate({"name": "c1", "tenantId": "11111111-2222-3333-4444-555555555555"})
    with pytest.raises(ScimError) as off:
        await service.query(conn, "Users", filter_text=None, start_index=None, count=None)
    assert off.value.status == 404
    assert "features.export.enabled" in off.value.detail


async def test_bulk_resolves_bulk_ids_and_stops_at_fail_on_errors(world: Any) -> None:
    service, _, _ = world
    conn = _conn()
    answer = await BulkRunner(service).run(conn, {"failOnErrors": 1, "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "u1", "data": _user()},
        {"method": "POST", "path": "/Groups", "bulkId": "g1",
         "data": {"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": "bulkId:u1"}]}},
        {"method": "POST", "path": "/Users", "bulkId": "u2", "data": _user("x@nowhere.example")},
        {"method": "POST", "path": "/Users", "bulkId": "u3", "data": _user("eve@contoso.example")},
    ]}, request_id="b", domains=_domains, base_url="https://h/api/scim/v2/c1")
    statuses = [op["status"] for op in answer["Operations"]]
    assert statuses == ["201", "201", "400"]  # the fourth is not attempted after the first error
    assert answer["Operations"][2]["response"]["scimType"] == "invalidValue"


@pytest.mark.parametrize(("payload", "named"), [
    ({"failOnErrors": True, "Operations": []}, "failOnErrors"),
    ({"schemas": 5, "Operations": []}, "schemas"),
    ({"Operations": [{"method": "POST", "path": "/Users", "bulkId": "u1", "data": {}}, 5]}, "Operations[1]"),
    ({"Operations": [{"method": "POST", "bulkId": "u1", "data": {}}]}, "Operations[0].path"),
    ({"Operations": [{"method": 1, "path": "/Users"}]}, "Operations[0].method"),
    ({"Operations": [{"method": "DELETE", "path": "/Users/x", "version": 2}]}, "Operations[0].version"),
])
async def test_a_bulk_request_that_is_not_one_is_refused_whole(world: Any, payload: dict[str, Any],
                                                               named: str) -> None:
    service, entities, queue = world
    with pytest.raises(ScimError) as refused:
        await BulkRunner(service).run(_conn(), payload, request_id="b", domains=_domains,
                                      base_url="https://h/api/scim/v2/c1")
    assert refused.value.status == 400
    assert named in refused.value.detail
    assert _rows(entities) == 0
    assert queue.messages(Queue.EXPORT) == []


async def test_a_group_of_50000_members_is_stored_in_member_rows_and_patched_in_place(world: Any) -> None:
    service, entities, _queue = world
    conn = _conn()
    repo = TableScimRepository(entities)
    ids = [f"u{i:05d}" for i in range(50_000)]
    for user_id in ids:
        await repo.create(conn.name, Stored("Users", user_id, {"userName": f"{user_id}@contoso.example"}, 1, "t", "t"),
                          "")
    big = await service.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Everyone",
                                                "members": [{"value": i} for i in ids]}, request_id="g1",
                               domains=_domains)
    rows = entities._table(Table.SCIM)
    # No string property comes near the 64 KiB (32,768 UTF-16 characters) a Table property holds.
    assert max(len(v) for e in rows.values() for v in e.data.values() if isinstance(v, str)) <= 32_768
    member_rows = {k for k in rows if k[0] == "c1|members"}
    assert len(member_rows) == 250
    assert [m["value"] for m in (await service.get(conn, "Groups", big.id)).attributes["members"]] == ids
    # A PATCH adding one member and removing another rewrites the member rows that changed, and drops the old ones.
    newcomer = await service.create(conn, "Users", _user("new@contoso.example"), request_id="u", domains=_domains)
    await service.patch(conn, "Groups", big.id, {"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": newcomer.id}]},
        {"op": "remove", "path": f'members[value eq "{ids[-1]}"]'}]}, if_match=None, request_id="g2",
        domains=_domains)
    after = {k for k in entities._table(Table.SCIM) if k[0] == "c1|members"}
    assert len(after) == 250
    assert len(after - member_rows) == 1
    got = await service.get(conn, "Groups", big.id)
    assert [m["value"] for m in got.attributes["members"]] == [*ids[:-1], newcomer.id]
    assert [m.version for m in [got]] == [2]
    # Listing groups reads the members too; deleting the group deletes its member rows.
    [listed], _total, _ = await service.query(conn, "Groups", filter_text=None, start_index=None, count=None)
    assert len(listed.attributes["members"]) == 50_000
    await service.delete(conn, "Groups", big.id, if_match=None, request_id="g3")
    assert not {k for k in entities._table(Table.SCIM) if k[0] == "c1|members"}


async def test_member_operations_add_remove_by_filter_or_list_and_replace(world: Any) -> None:
    service, _, _ = world
    conn = _conn()
    users = [(await service.create(conn, "Users", _user(f"u{i}@contoso.example"), request_id="u",
                                   domains=_domains)).id for i in range(4)]
    group = await service.create(conn, "Groups", {"schemas": [GROUP_SCHEMA], "displayName": "G",
                                                  "members": [{"value": users[0]}]}, request_id="g", domains=_domains)

    async def patch(*operations: dict[str, Any]) -> list[str]:
        stored = await service.patch(conn, "Groups", group.id, {"schemas": [PATCH], "Operations": list(operations)},
                                     if_match=None, request_id="p", domains=_domains)
        return [m["value"] for m in stored.attributes.get("members") or []]

    assert await patch({"op": "add", "path": "members", "value": [{"value": users[1]}, {"value": users[0]}]},
                       {"op": "replace", "path": "displayName", "value": "H"}) == users[:2]
    assert (await service.get(conn, "Groups", group.id)).attributes["displayName"] == "H"
    assert await patch({"op": "add", "path": "members", "value": [{"value": users[2]}, {"value": users[3]}]},
                       {"op": "remove", "path": f'members[value eq "{users[0]}"]'},
                       {"op": "remove", "path": f'members[value eq "{users[2]}"]'}) == [users[1], users[3]]
    assert await patch({"op": "replace", "path": "members", "value": [{"value": users[2]}]}) == [users[2]]
    assert await patch({"op": "remove", "path": "members"}) == []
    with pytest.raises(ScimError) as bad:
        await patch({"op": "add", "path": "members", "value": [{"value": 5, "display": ["x"]}]})
    assert bad.value.scim_type == "invalidValue"
    with pytest.raises(ScimError) as missing:
        await patch({"op": "add", "path": "members", "value": [{"value": "nobody"}]})
    assert "nobody" in missing.value.detail
