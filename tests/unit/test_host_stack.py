"""`make run`'s settings file and its summary of the demo connection."""

from __future__ import annotations

import json
from pathlib import Path

from local.stack import describe_demo, ensure_settings


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
