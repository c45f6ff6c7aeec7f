"""Start and stop the simulator as a child process (tests, benchmarks, `make run`)."""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.servers import ManagedProcess, free_port, python_module, url_answers
from local.tls import ensure_tls


@dataclass(frozen=True)
class RunningEntra:
    """A running simulator: its URL, tenant, and an admin client."""

    url: str
    port: int
    tenant_id: str
    data_dir: Path
    identity_header: str | None
    process: ManagedProcess
    context: ssl.SSLContext
    #: Every tenant served, the first (default) one first.
    tenant_ids: tuple[str, ...] = ()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call the /_sim/ admin API (the simulator must run with admin on)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,  # noqa: S310 - loopback
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, context=self.context, timeout=30) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None


def serve_argv(*, port: int, tenant: str, data_dir: Path, admin: bool = True, limits: bool = True,
               time_scale: float = 1.0, identity_header: str | None = None,
               faults: dict[str, Any] | None = None, more_tenants: Sequence[str] = ()) -> list[str]:
    """argv of `python -m local.entra serve` with these settings.

    Values go as `--option=value`: a random value (a `token_urlsafe` identity header) may begin with
    `-`, and argparse reads `--option -abc` as a missing value followed by an unknown option.
    """
    argv = python_module("local.entra", "serve", f"--port={port}", f"--tenant={tenant}", f"--data={data_dir}",
                         f"--limits={'on' if limits else 'off'}", f"--time-scale={time_scale}",
                         *(f"--tenant={more}" for more in more_tenants))
    if admin:
        argv.append("--admin")
    if identity_header:
        argv.append(f"--identity-header={identity_header}")
    if faults:
        argv.append(f"--faults={json.dumps(faults)}")
    return argv


@contextlib.contextmanager
def running(*, data_dir: Path, log_path: Path, tenant: str = "demo", port: int | None = None, admin: bool = True,
            limits: bool = True, time_scale: float = 1.0, identity_header: str | None = None,
            faults: dict[str, Any] | None = None, timeout: float = 60.0,
            more_tenants: Sequence[str] = ()) -> Iterator[RunningEntra]:
    """Run the simulator for the block; `more_tenants` ('fabrikam' or tenant files) are served beside `tenant`."""
    port = port or free_port()
    argv = serve_argv(port=port, tenant=tenant, data_dir=data_dir, admin=admin, limits=limits,
                      time_scale=time_scale, identity_header=identity_header, faults=faults,
                      more_tenants=more_tenants)
    context = ensure_tls().client_context()
    proc = ManagedProcess("entra simulator", argv, log_path).start()
    url = f"https://127.0.0.1:{port}"
    try:
        proc.wait_until(lambda: url_answers(f"{url}/common/discovery/v2.0/keys", context=context), timeout=timeout)
        with urllib.request.urlopen(f"{url}/_sim/tenant", context=context, timeout=10) as r:  # noqa: S310
            tenant_id = json.loads(r.read())["tenantId"] if admin else ""
        tenant_ids: tuple[str, ...] = (tenant_id,)
        if admin and more_tenants:
            with urllib.request.urlopen(f"{url}/_sim/tenants", context=context, timeout=10) as r:  # noqa: S310
                tenant_ids = tuple(t["tenantId"] for t in json.loads(r.read())["value"])
        yield RunningEntra(url, port, tenant_id, data_dir, identity_header, proc, context, tenant_ids)
    finally:
        proc.stop()
