"""The last failure of each timer or queue job per connection, kept until the job next succeeds.

A failure on a path no caller waits for (a timer, a queue message) would otherwise show only in the
logs. Each is kept as the RFC 9457 members of its root error (JobProblemLog), so status names what to
fix (the setting, permission or role).
"""

from __future__ import annotations

import json
import time
from typing import Any

from shared.errors import BridgeError, root_cause
from shared.services.ports import Clock, JobProblem, JobProblemLog, JsonObject

#: A job that keeps succeeding clears its row at most this often per process (a storage call saved per message).
CLEAR_SECONDS = 60.0


class JobProblems:
    """Records, clears and lists the problems of a connection's timer and queue jobs."""

    def __init__(self, log: JobProblemLog, clock: Clock) -> None:
        self._log = log
        self._clock = clock
        self._cleared: dict[tuple[str, str], float] = {}

    async def record(self, connection: str, job: str, err: BridgeError, *, correlation_id: str) -> None:
        """Keep `err` as the job's current problem."""
        self._cleared.pop((connection, job), None)
        # Through JSON and back: the members are plain JSON values however the error carried them.
        problem = json.loads(json.dumps(root_cause(err).problem(), default=str))
        await self._log.put(connection, JobProblem(job=job, at=self._clock.now().isoformat(),
                                                   correlation_id=correlation_id, problem=problem))

    async def clear(self, connection: str, job: str) -> None:
        """The job succeeded: its problem, if any, is gone."""
        key = (connection, job)
        if time.monotonic() - self._cleared.get(key, -CLEAR_SECONDS) < CLEAR_SECONDS:
            return
        await self._log.drop(connection, job)
        self._cleared[key] = time.monotonic()

    async def all(self, connection: str) -> list[JsonObject]:
        """Every current problem of the connection's jobs: job, when, correlation id and the problem members."""
        return [{"job": p.job, "at": p.at, "correlationId": p.correlation_id, "problem": p.problem}
                for p in await self._log.all(connection)]


def lines(problems: list[JsonObject]) -> list[str]:
    """One line per job problem for status, naming the setting when the error does."""
    out = []
    for item in problems:
        found = item.get("problem")
        problem: dict[str, Any] = found if isinstance(found, dict) else {}
        setting = f" (setting {problem['setting']})" if problem.get("setting") else ""
        out.append(f"{item.get('job')}: {problem.get('detail')}{setting}")
    return out
