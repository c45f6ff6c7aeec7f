"""An audit context: who and under which correlation a job writes, bound once, then one call per record.

A job binds the connection, the actor, the correlation id (and the run id, when it has one) once, and
records each write with `await ctx.record(action, target, outcome, **detail)`, so no record of the job
can carry another job's correlation id or forget its run (docs/architecture.md, Invariants, 5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from shared.services.ports import AuditSink


@dataclass(frozen=True)
class AuditContext:
    """An AuditSink bound to one job's connection, actor, correlation id and run id."""

    sink: AuditSink
    connection: str
    actor: str
    correlation_id: str
    #: Added to each record's detail as `runId` (unless the detail names one) when not empty.
    run_id: str = ""

    async def record(self, action: str, target: str, outcome: str, /, *, graph_request_id: str | None = None,
                     vault_version: str | None = None, **detail: Any) -> None:
        """Append one record; `detail` must not contain a secret."""
        if self.run_id and "runId" not in detail:
            detail["runId"] = self.run_id
        await self.sink.record(connection=self.connection, actor=self.actor, action=action, target=target,
                               outcome=outcome, correlation_id=self.correlation_id,
                               graph_request_id=graph_request_id, vault_version=vault_version, detail=detail)

    def bind(self, *, actor: str | None = None, correlation_id: str | None = None,
             run_id: str | None = None) -> AuditContext:
        """The same context with some bindings changed."""
        return replace(self, actor=self.actor if actor is None else actor,
                       correlation_id=self.correlation_id if correlation_id is None else correlation_id,
                       run_id=self.run_id if run_id is None else run_id)

    async def flush(self) -> None:
        """Anchor the chain heads written so far (at the end of a run)."""
        await self.sink.flush()
