"""The current problem of each timer and queue job in Table storage.

Implements shared.services.ports.JobProblemLog. Rows sit beside the connection's sync state: table
`syncstate`, partition = connection, row `problem-<job>`, the problem members kept as JSON text.
"""

from __future__ import annotations

import json

from shared.services.ports import Entity, EntityStore, JobProblem
from shared.topology import Table

PREFIX = "problem-"


class TableJobProblems:
    """Job problems on the `syncstate` table."""

    def __init__(self, entities: EntityStore) -> None:
        self._entities = entities

    async def put(self, connection: str, problem: JobProblem) -> None:
        """Keep a job's problem (replacing its previous one)."""
        await self._entities.upsert(Table.SYNCSTATE, Entity(connection, PREFIX + problem.job, {
            "job": problem.job, "at": problem.at, "correlationId": problem.correlation_id,
            "problem": json.dumps(problem.problem, default=str)}))

    async def drop(self, connection: str, job: str) -> None:
        """Forget a job's problem; absent counts as forgotten."""
        await self._entities.delete(Table.SYNCSTATE, connection, PREFIX + job)

    async def all(self, connection: str) -> list[JobProblem]:
        """Every current problem of the connection's jobs (`.` follows `-`: the range is the prefix's rows)."""
        found: list[JobProblem] = []
        async for row in self._entities.query(Table.SYNCSTATE, connection, row_key_from=PREFIX,
                                              row_key_to=PREFIX[:-1] + "."):
            text = row.data.get("problem")
            problem = json.loads(text) if isinstance(text, str) else {}
            found.append(JobProblem(job=str(row.data.get("job") or row.row_key[len(PREFIX):]),
                                    at=str(row.data.get("at", "")),
                                    correlation_id=str(row.data.get("correlationId", "")),
                                    problem=problem if isinstance(problem, dict) else {}))
        return found
