"""Start, wait for and stop the local stand-ins as child processes.

Used by `make run` (local.stack) and by test fixtures, so both start servers the same way: on
127.0.0.1, with output in a log file, ready only once they answer, and stopped (SIGTERM, then SIGKILL)
by whoever started them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Callable0 = Callable[[], bool]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on host:port."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def url_answers(url: str, *, context: ssl.SSLContext | None = None) -> bool:
    """Whether `url` answers at all (any HTTP status counts: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


@dataclass
class ManagedProcess:
    """A child process with its log file; `stop()` ends it and its children."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start the process in its own process group, output to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed on stop
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(list(self.argv), cwd=self.cwd, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def wait_until(self, ready: Callable0, *, timeout: float = 60.0) -> ManagedProcess:
        """Poll `ready()` until it is true; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} was not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def azurite_argv(data_dir: Path, blob: int, queue: int, table: int, *, in_memory: bool = False) -> list[str]:
    """argv of Azurite from node_modules on loopback, with the flags docs/architecture.md explains.

    `in_memory` keeps nothing on disk: Azurite writes its table store as one JSON text, which passes
    node's largest string somewhere below a million rows (benchmarks at that size need it).
    """
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise FileNotFoundError("Azurite is not installed: run 'npm ci' (make does it) in the project folder")
    # Azurite refuses a --location beside --inMemoryPersistence.
    where = ["--inMemoryPersistence"] if in_memory else ["--location", str(data_dir)]
    return [str(binary), "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose", *where,
            "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table)]


# The well-known development account of Azurite (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(blob: int, queue: int, table: int) -> str:
    """A storage connection string for Azurite on the given ports."""
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{queue}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{table}/{AZURITE_ACCOUNT};")


@contextlib.contextmanager
def azurite(data_dir: Path, log_path: Path, ports: tuple[int, int, int] | None = None, *,
            in_memory: bool = False) -> Iterator[str]:
    """Run Azurite for the duration of the block; yields its connection string."""
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    proc = ManagedProcess("azurite", azurite_argv(data_dir, blob, queue, table, in_memory=in_memory),
                          log_path).start()
    try:
        proc.wait_until(lambda: port_open(queue) and port_open(table) and port_open(blob), timeout=60)
        yield azurite_connection_string(blob, queue, table)
    finally:
        proc.stop()
