"""The passkey demo's console lines when it cannot run (the full run is in tests/e2e/test_passkey_demo.py)."""

from __future__ import annotations

from pathlib import Path

from local.demo_passkey import DemoResult, demo_line
from local.host.process import RunningHost
from local.servers import ManagedProcess, free_port
from local.stack import passkey_demo


def test_the_demo_is_skipped_without_the_simulator(tmp_path: Path) -> None:
    host = RunningHost("http://127.0.0.1:1", 1, "key", ManagedProcess("host", ["true"], tmp_path / "log"))
    assert passkey_demo(host, "key", {}) == "passkey demo: skipped (needs the Entra simulator)"


def test_an_unreachable_host_is_one_failure_line() -> None:
    line = demo_line(f"http://127.0.0.1:{free_port()}", "secret-key", timeout=1)
    assert line == "passkey demo: failed: the function host could not be reached (ConnectError)"


def test_the_result_line_names_the_passkey_the_user_and_the_device() -> None:
    line = DemoResult("demo", "u1", "ann@contoso.example", "demo-laptop", "m1", "op-1",
                      ["passkey.registered", "passkey.revoked", "device.removed"]).line()
    assert line == ("passkey demo: registered passkey m1 for ann@contoso.example on device demo-laptop, revoked "
                    "when the device was removed (operation op-1); audit: passkey.registered, passkey.revoked, "
                    "device.removed")
