"""Resident memory of this process and of the stand-ins the benches start (Linux reports KiB)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """The largest resident set of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident set of another process, from Linux's /proc; zeros elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0.0, 0.0
    found = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in status.splitlines()
             if line.startswith(("VmHWM:", "VmRSS:"))}
    return found.get("VmHWM", 0.0), found.get("VmRSS", 0.0)
