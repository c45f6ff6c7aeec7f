"""Contract of JobProblemLog: the in-memory fake and the Table adapter on Azurite answer alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.services.ports import JobProblem

PROBLEM = {"type": "about:blank", "title": "Configuration", "status": 500, "detail": "no token",
           "setting": "CONNECTIONS"}


async def test_a_job_keeps_its_latest_problem_until_dropped(make_repository: Callable[[str], Any],
                                                            connection: str) -> None:
    problems = make_repository("problems")
    assert await problems.all(connection) == []
    await problems.put(connection, JobProblem("sync", "2026-01-01T00:00:00+00:00", "c1", PROBLEM))
    await problems.put(connection, JobProblem("sync", "2026-01-01T00:05:00+00:00", "c2", PROBLEM))
    await problems.put(connection, JobProblem("rotation", "2026-01-01T00:06:00+00:00", "c3", {"detail": "x"}))
    found = sorted(await problems.all(connection), key=lambda p: p.job)
    assert found == [JobProblem("rotation", "2026-01-01T00:06:00+00:00", "c3", {"detail": "x"}),
                     JobProblem("sync", "2026-01-01T00:05:00+00:00", "c2", PROBLEM)]
    await problems.drop(connection, "sync")
    await problems.drop(connection, "sync")  # absent counts as dropped
    assert [p.job for p in await problems.all(connection)] == ["rotation"]
    assert await problems.all(f"{connection}x") == []
