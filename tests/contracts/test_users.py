"""The UserRepository contract, on the in-memory stand-in and on the Table adapter over Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.users import TableUsers
from shared.domain.directory import UserRow
from shared.errors import Conflict, NotFound
from shared.services.directory import Directory
from shared.services.ports import UserRepository
from tests.fake_repositories import FakeUsers


@pytest.fixture(params=["memory", "table"])
def users(request: pytest.FixtureRequest) -> UserRepository:
    if request.param == "memory":
        return FakeUsers()
    # Few partitions over a few tables: the scan of a connection bigger than a page is read partition by
    # partition, and every read and write goes to the partition's own table.
    return TableUsers(request.getfixturevalue("store"), partitions=8, tables=4)


@pytest.fixture
def conn() -> str:
    return f"conn{uuid.uuid4().hex[:8]}"


def _row(n: int, **update: object) -> UserRow:
    return UserRow(id=f"{n:08x}-0000-0000-0000-000000000000", upn=f"user{n}@contoso.example").model_copy(
        update=update)


async def test_a_row_is_written_read_replaced_and_deleted(users: UserRepository, conn: str) -> None:
    assert await users.is_empty(conn)
    assert await users.get(conn, _row(1).id) is None
    await users.put(conn, _row(1))
    assert await users.get(conn, _row(1).id) == _row(1)
    await users.put(conn, _row(1, upn="renamed@contoso.example"))
    found = await users.get(conn, _row(1).id)
    assert found is not None
    assert found.upn == "renamed@contoso.example"
    await users.delete(conn, _row(1).id)
    await users.delete(conn, _row(1).id)  # absent counts as deleted
    assert await users.get(conn, _row(1).id) is None
    assert await users.is_empty(conn)


async def test_many_rows_by_id_leave_absent_ones_out(users: UserRepository, conn: str) -> None:
    await users.put_many(conn, [_row(n) for n in range(10)])
    found = await users.get_many(conn, [_row(2).id, _row(5).id, _row(99).id, _row(2).id])
    assert found == {_row(2).id: _row(2), _row(5).id: _row(5)}


async def test_rows_known_new_are_inserted_and_the_others_updated(users: UserRepository, conn: str) -> None:
    await users.put_many(conn, [_row(1), _row(2)], new={_row(1).id, _row(2).id})
    await users.put_many(conn, [_row(1, upn="renamed@contoso.example"), _row(3)], new={_row(3).id})
    assert (await users.get_many(conn, [_row(1).id, _row(3).id])) == {
        _row(1).id: _row(1, upn="renamed@contoso.example"), _row(3).id: _row(3)}
    # Another writer created or deleted a row since the caller looked: the group fails, nothing of it written.
    with pytest.raises(Conflict):
        await users.put_many(conn, [_row(2, upn="late@contoso.example")], new={_row(2).id})
    with pytest.raises(NotFound):
        await users.put_many(conn, [_row(4)], new=())
    assert await users.get(conn, _row(2).id) == _row(2)
    assert await users.get(conn, _row(4).id) is None


async def test_batches_are_written_whole_and_scanned_once_each(users: UserRepository, conn: str) -> None:
    rows = [_row(n) for n in range(1_250)]
    directory = Directory(users)
    batches = directory.batches(conn, rows)
    for batch in batches:
        assert 0 < len(batch) <= users.batch_rows
        assert len({users.batch_key(conn, r.id) for r in batch}) == 1
        await users.put_many(conn, batch)
    await users.put(f"{conn}x", _row(5_000))  # another connection, whose name extends this one's
    scanned = [r.id async for r in users.scan(conn)]
    assert sorted(scanned) == sorted(r.id for r in rows)
    assert scanned == [r.id async for r in users.scan(conn)]  # a stable order
    assert await users.count(conn) == 1_250
    assert not await users.is_empty(conn)


async def test_a_connections_rows_are_its_own(users: UserRepository, conn: str) -> None:
    await users.put(conn, _row(1))
    assert await users.get(f"{conn}x", _row(1).id) is None
    assert await users.is_empty(f"{conn}x")
    assert users.batch_key(conn, _row(1).id) != users.batch_key(f"{conn}x", _row(1).id)


def _again(users: UserRepository, request: pytest.FixtureRequest) -> UserRepository:
    """The same directory as another process opens it: a new repository over the same store."""
    if isinstance(users, TableUsers):
        return TableUsers(request.getfixturevalue("store"), partitions=users.partitions, tables=len(users.tables))
    return users


async def test_the_layout_chosen_for_an_empty_directory_holds_for_every_later_reader(
        users: UserRepository, conn: str, request: pytest.FixtureRequest) -> None:
    count = await users.lay_out(conn, 20_000)
    assert count >= 1
    rows = [_row(n) for n in range(300)]
    directory = Directory(users)
    for batch in directory.batches(conn, rows):
        await users.put_many(conn, batch, new={r.id for r in batch})
    other = _again(users, request)
    assert await other.lay_out(conn, 10) == count  # kept, whatever is asked later
    assert len(await other.get_many(conn, [r.id for r in rows])) == 300
    assert await other.get(conn, rows[17].id) == rows[17]
    assert await other.count(conn) == 300  # the layout is not a user
    assert not await other.is_empty(conn)
