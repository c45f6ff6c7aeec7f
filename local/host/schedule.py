"""Timer schedule status kept in storage, so a run missed while the host was down is caught up once.

The Functions host keeps each timer's status (`Last`, `Next`, `LastUpdated`) in the blob
`azure-webjobs-hosts/timers/{hostId}/{function}/status` and, at start, fires a timer whose recorded
`Next` has passed once, with `IsPastDue` (the "schedule monitor", on by default for schedules of a
minute or more):
https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer
This host keeps the same three values in a table row (partition: the host id, row:
`Host.Functions.{name}`), since the app already talks to Table storage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient
from croniter import croniter

log = logging.getLogger("local.host")
TABLE = "AzureWebJobsHostTimers"
#: DateTime.MinValue of the real host: "never ran".
NEVER = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ScheduleStatus:
    """A timer's last run, next run, and when the status was written."""

    last: dt.datetime
    next: dt.datetime
    last_updated: dt.datetime

    def to_binding(self) -> dict[str, str]:
        """The `ScheduleStatus` the function sees (`func.TimerRequest.schedule_status`)."""
        return {"Last": self.last.isoformat(), "Next": self.next.isoformat(),
                "LastUpdated": self.last_updated.isoformat()}


def next_after(schedule: str, moment: dt.datetime) -> dt.datetime:
    """The first occurrence of a six-field NCRONTAB schedule strictly after `moment`."""
    found: dt.datetime = croniter(schedule, moment, second_at_beginning=True).get_next(dt.datetime)
    return found


def monitored(schedule: str, use_monitor: bool | None, now: dt.datetime) -> bool:
    """Whether the schedule monitor applies: as set (`useMonitor`), else for intervals of a minute or more."""
    if use_monitor is not None:
        return use_monitor
    first = next_after(schedule, now)
    return (next_after(schedule, first) - first).total_seconds() >= 60


def past_due(schedule: str, status: ScheduleStatus, now: dt.datetime) -> tuple[ScheduleStatus, bool]:
    """The status to keep and whether a run was missed, the way the host checks at start.

    When the schedule changed since the status was written, the next run is recomputed from the last
    one (or from when the status was written, when it never ran).
    """
    since = status.last if status.last != NEVER else status.last_updated
    expected = next_after(schedule, since)
    if expected != status.next:
        status = ScheduleStatus(status.last, expected, now)
    return status, now > status.next


class ScheduleMonitor:
    """Reads and writes timer status rows; storage trouble is logged and never stops a timer."""

    def __init__(self, connection_string: str | None, host_id: str) -> None:
        self.host_id = host_id
        self._client = TableClient.from_connection_string(connection_string, TABLE) if connection_string else None
        self._created = False

    @property
    def enabled(self) -> bool:
        """Whether there is storage to keep status in."""
        return self._client is not None

    async def read(self, name: str) -> ScheduleStatus | None:
        """The stored status of a timer, or None (never stored, or storage unreachable)."""
        if self._client is None:
            return None
        try:
            row = await self._client.get_entity(self.host_id, f"Host.Functions.{name}")
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            log.warning("timer %s: schedule status could not be read (%s); no catch-up this time", name, exc)
            return None
        try:
            return ScheduleStatus(*(dt.datetime.fromisoformat(str(row[k])) for k in ("Last", "Next", "LastUpdated")))
        except (KeyError, ValueError):
            log.warning("timer %s: the stored schedule status is not readable; starting afresh", name)
            return None

    async def write(self, name: str, status: ScheduleStatus) -> None:
        """Store a timer's status."""
        if self._client is None:
            return
        try:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    await self._client.create_table()
                self._created = True
            await self._client.upsert_entity({"PartitionKey": self.host_id, "RowKey": f"Host.Functions.{name}",
                                              **status.to_binding()})
        except AzureError as exc:
            log.warning("timer %s: schedule status could not be written (%s)", name, exc)

    async def close(self) -> None:
        """Close the storage client."""
        if self._client is not None:
            await self._client.close()
