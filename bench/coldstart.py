"""Cold start of the local host: seconds from process start to the first /api/health answer.

    python -m bench.coldstart [--runs 5]

Prints one line: the median of the runs and its ratio to a 5-second target (our budget for a
Python function app to import its dependencies and answer; lower is better).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from local.host.process import running, write_settings

TARGET_SECONDS = 5.0


def measure(runs: int) -> list[float]:
    """Start the host `runs` times; the seconds each took to answer."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        settings = write_settings(Path(folder) / "local.settings.json", {}, function_key="bench-key")
        for _ in range(runs):
            started = time.perf_counter()
            with running(settings_file=settings, function_key="bench-key", log_path=Path(folder) / "host.log"):
                times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    """Measure and print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    times = measure(args.runs)
    median = statistics.median(times)
    print(f"coldstart: median {median:.2f} s to the first /api/health answer over {len(times)} runs "
          f"(min {min(times):.2f}, max {max(times):.2f}); ratio to the {TARGET_SECONDS:.0f} s target "
          f"{median / TARGET_SECONDS:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
