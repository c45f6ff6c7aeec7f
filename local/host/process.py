"""Start and stop the local host as a child process (tests, benchmarks and `make run` use it)."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from local.servers import ROOT, ManagedProcess, free_port, port_open, python_module, url_answers

#: Set on every instance but the first: timers run on one instance, as in Azure, where a timer function
#: holds a singleton lock (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer).
TIMERS_OFF = {"LOCAL_HOST_TIMERS": "off"}


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


def instance_environment(index: int, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Instance `index` (0-based) of several: its own WEBSITE_INSTANCE_ID; timers on the first only."""
    return {**(env or {}), "WEBSITE_INSTANCE_ID": f"local-{index}", **(TIMERS_OFF if index else {})}


def instance_ports(count: int, first: int) -> list[int]:
    """`first` and the ports after it while they are free; a free port for each one taken."""
    return [first + k if not port_open(first + k) else free_port() for k in range(count)]


@contextlib.contextmanager
def running_instances(count: int, *, settings_file: Path, function_key: str, log_dir: Path,
                      app: str = "function_app", env: Mapping[str, str] | None = None, first_port: int | None = None,
                      timeout: float = 60.0, master_key: str | None = None) -> Iterator[list[RunningHost]]:
    """Run `count` hosts (separate processes, ports and logs `host-<k>.log`) on the same storage for the block."""
    ports = instance_ports(count, first_port) if first_port else [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        hosts = [stack.enter_context(running(
            settings_file=settings_file, function_key=function_key, log_path=log_dir / f"host-{k}.log", app=app,
            env=instance_environment(k, env), port=ports[k], timeout=timeout, master_key=master_key))
            for k in range(count)]
        yield hosts


def supervise(count: int, *, port: int, settings: str, app: str, root: Path) -> int:
    """`python -m local.host --instances N`: start N instance processes, print where they are, stop them on
    Ctrl-C or SIGTERM. An instance that dies is reported and not restarted; the others carry on."""
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    ports = instance_ports(count, port)
    logs = root / ".local" / "logs"
    procs = []
    try:
        for k, instance_port in enumerate(ports):
            argv = python_module("local.host", "--port", str(instance_port), "--settings", settings, "--app", app,
                                 "--root", str(root))
            proc = ManagedProcess(f"instance {k}", argv, logs / f"host-{k}.log",
                                  env=instance_environment(k)).start()
            procs.append(proc)
            health = f"http://127.0.0.1:{instance_port}/api/health"
            proc.wait_until(functools.partial(url_answers, health), timeout=60)
            url = f"http://127.0.0.1:{instance_port}"
            print(f"instance {k}: {url}/api (pid {proc.proc.pid if proc.proc else '?'}, log "
                  f"{proc.log_path}){' timers' if k == 0 else ''}", flush=True)
        alive = set(range(count))
        while alive:
            for k in sorted(alive):
                child = procs[k].proc
                code = child.poll() if child is not None else 0
                if code is not None:
                    print(f"instance {k} exited with {code}; {len(alive) - 1} left", flush=True)
                    alive.discard(k)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.stop(timeout=40)
    return 0
