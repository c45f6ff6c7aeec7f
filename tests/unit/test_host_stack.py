"""`make run`'s settings file, its summary of the demo connection, and the command lines it builds."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from local import stack
from local.entra.__main__ import command_line
from local.entra.process import serve_argv
from local.host.runtime import disabled
from local.stack import OPTIONAL_TIMERS, describe_demo, ensure_settings, timer_settings
from tests.fixtures.host import real_app_host


def test_settings_are_written_once_from_the_sample_with_fresh_keys(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    first, created = ensure_settings(path)
    assert created
    key = first["FunctionKeys"]["default"]
    assert len(key) >= 24
    assert first["MasterKey"]
    assert first["MasterKey"] != key
    again, created_again = ensure_settings(path)
    assert not created_again
    assert again["FunctionKeys"]["default"] == key
    assert "CONNECTIONS" in again["Values"]


def test_the_demo_connection_is_summarised_or_its_absence_named(tmp_path: Path) -> None:
    settings, _ = ensure_settings(tmp_path / "local.settings.json")
    line = describe_demo(settings)
    assert "'demo'" in line
    assert "sync, rotation, passkeys" in line
    assert "not configured" in describe_demo({"Values": {"CONNECTIONS": json.dumps([])}})
    assert "not valid JSON" in describe_demo({"Values": {"CONNECTIONS": "[{"}})


def test_the_simulator_command_line_takes_any_identity_header_100_times_of_100(tmp_path: Path) -> None:
    # token_urlsafe begins with "-" about 1 time in 64; half of these values are made to begin with it.
    headers = [secrets.token_urlsafe(24) for _ in range(50)] + ["-" + secrets.token_urlsafe(24) for _ in range(49)]
    headers.append("--admin")
    parsed = 0
    for header in headers:
        argv = serve_argv(port=8443, tenant="demo", data_dir=tmp_path, identity_header=header,
                          faults={"errorRate": 0.5})
        assert argv[1:3] == ["-m", "local.entra"]
        args = command_line().parse_args(argv[3:])
        assert (args.identity_header, args.admin, args.port) == (header, True, 8443)
        assert json.loads(args.faults) == {"errorRate": 0.5}
        parsed += 1
    assert parsed == 100


def test_a_value_after_a_space_is_what_broke() -> None:
    # The form the stack used before: argparse takes "-abc" for an option and stops.
    with pytest.raises(SystemExit):
        command_line().parse_args(["serve", "--identity-header", "-abc"])


def test_rotation_and_federation_timers_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert timer_settings(timers=True) == {}
    off = timer_settings(timers=False)
    assert off == {"AzureWebJobs.rotation_timer.Disabled": "true", "AzureWebJobs.federation_monitor.Disabled": "true"}
    # The names are the app's own timers, so the host's Disabled check finds them.
    assert set(OPTIONAL_TIMERS) <= {t.name for t in real_app_host().timers}
    for name in OPTIONAL_TIMERS:
        monkeypatch.setenv(f"AzureWebJobs.{name}.Disabled", off[f"AzureWebJobs.{name}.Disabled"])
        assert disabled(name)
    assert not disabled("sync_timer")
    asked: list[bool] = []
    monkeypatch.setattr(stack, "run", lambda *_, timers, **__: asked.append(timers) or 0)
    stack.main(["--no-sync"])
    stack.main(["--timers"])
    assert asked == [False, True]
