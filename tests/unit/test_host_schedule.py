"""The local host's timer schedule status: when a missed run is caught up, and when not."""

from __future__ import annotations

import datetime as dt

from local.host.schedule import NEVER, ScheduleStatus, monitored, next_after, past_due

HOURLY = "0 0 * * * *"
NOW = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)


def at(hour: int, minute: int = 0) -> dt.datetime:
    return NOW.replace(hour=hour, minute=minute)


def test_a_recorded_next_run_in_the_past_is_past_due_once() -> None:
    status, missed = past_due(HOURLY, ScheduleStatus(at(7), at(8), at(7)), NOW)
    assert missed
    assert status.next == at(8)


def test_a_next_run_ahead_is_not_past_due() -> None:
    status, missed = past_due(HOURLY, ScheduleStatus(at(10), at(11), at(10)), NOW)
    assert (missed, status.next) == (False, at(11))


def test_a_changed_schedule_recomputes_the_next_run_from_the_last() -> None:
    # Recorded for a daily schedule; now hourly: the next run after 10:00 is 11:00, not past due.
    status, missed = past_due(HOURLY, ScheduleStatus(at(10), NOW + dt.timedelta(days=1), at(10)), NOW)
    assert (missed, status.next, status.last_updated) == (False, at(11), NOW)


def test_a_timer_that_never_ran_counts_from_when_its_status_was_written() -> None:
    _, missed = past_due(HOURLY, ScheduleStatus(NEVER, at(9), at(8, 10)), NOW)
    assert missed
    _, fresh = past_due(HOURLY, ScheduleStatus(NEVER, at(11), at(10, 10)), NOW)
    assert not fresh


def test_the_monitor_applies_to_schedules_of_a_minute_or_more_unless_told() -> None:
    assert monitored(HOURLY, None, NOW)
    assert monitored("0 * * * * *", None, NOW)
    assert not monitored("*/10 * * * * *", None, NOW)
    assert monitored("*/10 * * * * *", True, NOW)
    assert not monitored(HOURLY, False, NOW)
    assert next_after(HOURLY, at(10)) == at(11)


def test_the_function_sees_the_status_as_the_host_passes_it() -> None:
    shown = ScheduleStatus(at(9), at(10), at(9)).to_binding()
    assert set(shown) == {"Last", "Next", "LastUpdated"}
    assert dt.datetime.fromisoformat(shown["Next"]) == at(10)
