"""Start and stop the local host as a child process (tests, benchmarks and `make run` use it)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from local.servers import ROOT, ManagedProcess, free_port, python_module, url_answers


@dataclass(frozen=True)
class RunningHost:
    """A host that answers on `url`, with the function key it accepts."""

    url: str
    port: int
    function_key: str
    process: ManagedProcess
    master_key: str | None = None


def write_settings(path: Path, values: Mapping[str, str], *, function_key: str,
                   master_key: str | None = None) -> Path:
    """A local.settings.json with these Values, one function key and (optionally) the master key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"IsEncrypted": False, "Values": dict(values), "FunctionKeys": {"default": function_key},
            **({"MasterKey": master_key} if master_key else {})}
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@contextlib.contextmanager
def running(*, settings_file: Path, function_key: str, log_path: Path, app: str = "function_app",
            env: Mapping[str, str] | None = None, port: int | None = None,
            timeout: float = 60.0, master_key: str | None = None) -> Iterator[RunningHost]:
    """Run `python -m local.host` for the block; ready when /api/health (or any answer) comes back."""
    port = port or free_port()
    argv = python_module("local.host", "--port", str(port), "--settings", str(settings_file), "--app", app,
                         "--root", str(ROOT))
    proc = ManagedProcess("local host", argv, log_path, env=dict(env or {})).start()
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_until(lambda: url_answers(f"{url}/api/health"), timeout=timeout)
        yield RunningHost(url, port, function_key, proc, master_key)
    finally:
        proc.stop(timeout=40)
