"""Start and stop the emulator as a child process (used by `make run` and the `vault` test fixture)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.servers import ManagedProcess, free_port, python_module, url_answers
from local.tls import TlsFiles, ensure_tls
from local.vault.auth import KNOWN_ROLES


@dataclass
class RunningVault:
    """A started emulator: its URL, folders, and ways to grant roles and set faults."""

    url: str
    port: int
    data_dir: Path
    roles_file: Path
    tls: TlsFiles
    admin: bool
    process: ManagedProcess

    def grant(self, principal_id: str, role: str = "Key Vault Secrets Officer") -> None:
        """Give a principal a vault role by rewriting the roles file (the emulator rereads it)."""
        if role not in KNOWN_ROLES:
            raise ValueError(f"unknown role {role!r}; known: {sorted(KNOWN_ROLES)}")
        roles = self._read_roles()
        current = roles.get(principal_id, [])
        names = [current] if isinstance(current, str) else list(current)
        if role not in names:
            names.append(role)
        roles[principal_id] = names
        self._write_roles(roles)

    def revoke(self, principal_id: str) -> None:
        """Remove every role of a principal from the roles file."""
        roles = self._read_roles()
        roles.pop(principal_id, None)
        self._write_roles(roles)

    def _read_roles(self) -> dict[str, Any]:
        if not self.roles_file.exists():
            return {}
        data: dict[str, Any] = json.loads(self.roles_file.read_text(encoding="utf-8") or "{}")
        return data

    def _write_roles(self, roles: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.roles_file.parent, prefix=".roles.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(roles, fh, indent=2)
        os.replace(tmp, self.roles_file)

    def admin_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the /_emulator/ admin API (the emulator must run with admin=True)."""
        if not self.admin:
            raise RuntimeError("the vault emulator was started without its admin API")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/_emulator/{path.lstrip('/')}", data=data, method=method,  # noqa: S310
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, context=self.tls.client_context(), timeout=10) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def set_faults(self, **faults: Any) -> Any:
        """Replace the injected faults (latency_ms, error_rate, drop_rate, ambiguous_rate, seed)."""
        return self.admin_call("PUT", "faults", faults)

    def set_limits(self, enabled: bool) -> Any:
        """Switch Key Vault's throttling limits on or off."""
        return self.admin_call("PUT", "limits", {"enabled": enabled})


@contextlib.contextmanager
def running(*, data_dir: Path, authority: str, tenant: str, port: int | None = None,
            roles_file: Path | None = None, time_scale: float = 1.0, admin: bool = False, limits: bool = True,
            log_path: Path | None = None, tls: TlsFiles | None = None) -> Iterator[RunningVault]:
    """Run the emulator for the duration of the block on 127.0.0.1 (a free port unless given)."""
    tls = tls or ensure_tls()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    roles_file = roles_file or data_dir / "roles.json"
    if not roles_file.exists():
        roles_file.write_text("{}", encoding="utf-8")
    argv = python_module("local.vault", "serve", "--port", str(port), "--data", str(data_dir),
                         "--authority", authority, "--tenant", tenant, "--roles", str(roles_file),
                         "--time-scale", str(time_scale), "--limits", "on" if limits else "off",
                         "--tls-dir", str(tls.ca.parent))
    if admin:
        argv.append("--admin")
    process = ManagedProcess("vault", argv, log_path or data_dir.parent / f"vault-{port}.log").start()
    url = f"https://127.0.0.1:{port}"
    try:
        process.wait_until(lambda: url_answers(url + "/secrets", context=tls.client_context()), timeout=60)
        yield RunningVault(url=url, port=port, data_dir=data_dir, roles_file=roles_file, tls=tls, admin=admin,
                           process=process)
    finally:
        process.stop()
