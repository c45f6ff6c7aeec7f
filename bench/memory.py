"""Resident memory of this process and of the stand-ins the benches start (Linux reports KiB)."""

from __future__ import annotations

import os
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


def children_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user and system) used so far by each direct child of this process, by command name (the
    stand-ins: Azurite's `node`, the simulator's `python`), from Linux's /proc; empty elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[str, float] = {}
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        if len(fields) < 13 or int(fields[1]) != me:
            continue
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found
