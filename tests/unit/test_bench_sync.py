"""The sync bench's goals and summary arithmetic."""

from __future__ import annotations

import os

from bench.memory import process_rss_mb
from bench.sync import Outcome, import_target_s, memory_target_mb, rows_allowed, summary


def test_goals_follow_the_issue_per_size() -> None:
    assert import_target_s(100_000) == 22.0
    assert memory_target_mb(100_000) == 250.0
    assert memory_target_mb(1_000_000) == 1024.0
    # Rows an incremental run may read grow with the changes, never with the directory.
    assert rows_allowed(0) == 1000
    assert rows_allowed(1000) == 11_000


def test_the_summary_names_the_worst_ratio() -> None:
    outcome = Outcome(20_000, {"import": 0.5, "time 0": 3.9, "memory": 0.6}, ["import 9.0 s", "peak 146 MB"])
    line = summary(outcome)
    assert line.startswith("sync summary 20000 users: import 9.0 s; peak 146 MB; ratios to goals: import 0.50")
    assert line.endswith("worst time 0 3.90")


def test_the_resident_set_of_a_process_is_read_from_proc() -> None:
    peak, now = process_rss_mb(os.getpid())
    assert peak >= now > 0
    assert process_rss_mb(-1) == (0.0, 0.0)
