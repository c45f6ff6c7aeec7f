"""The local host's route templates, host.json reading and the real app's binding metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.host.routing import RouteTemplate
from local.host.runtime import HostConfig, resolve
from tests.fixtures.host import real_app_host


@pytest.mark.parametrize(("template", "path", "expected"), [
    ("items/{id}", "/items/abc", {"id": "abc"}),
    ("items/{id:int}", "/items/42", {"id": "42"}),
    ("items/{id:int}", "/items/-3", {"id": "-3"}),
    ("items/{id:int}", "/items/x", None),
    ("items/{id:guid}", "/items/8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", {"id": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}),
    ("items/{id:guid}", "/items/not-a-guid", None),
    ("items/{id:bool}", "/items/TRUE", {"id": "TRUE"}),
    ("maybe/{name?}", "/maybe", {}),
    ("maybe/{name?}", "/maybe/x", {"name": "x"}),
    ("files/{*rest}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
    ("files/{*rest}", "/files", {}),
    ("a/{x}/b", "/a/1/b/", {"x": "1"}),
    ("a/{x}/b", "/a/1/c", None),
    ("a/{x}", "/a/1/2", None),
    ("Health", "/health", {}),
    # A parameter may hold an encoded line break; a template without the parameter must not match.
    ("users/{id}", "/users/\n", {"id": "\n"}),
    ("users", "/users/\n", None),
    ("files/{*rest}", "/files/a\nb", {"rest": "a\nb"}),
])
def test_templates_match_like_the_host(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate.compile(template).match(path) == expected


def test_unsupported_templates_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="mixes text"):
        RouteTemplate.compile("items/x{id}")
    with pytest.raises(ValueError, match="constraint 'regex'"):
        RouteTemplate.compile("items/{id:regex}")


def test_literal_segments_are_counted_for_precedence() -> None:
    assert RouteTemplate.compile("audit/verify").literal_segments == 2
    assert RouteTemplate.compile("audit/{id}").literal_segments == 1


def test_host_json_and_app_setting_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"extensions": {"http": {"routePrefix": "/v1/"}, "queues": {
        "batchSize": 4, "maxDequeueCount": 3, "visibilityTimeout": "00:01:30", "maxPollingInterval": "00:00:05"}}}))
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__queues__maxDequeueCount", "7")
    config = HostConfig.from_host_json(host_json)
    assert (config.route_prefix, config.batch_size, config.max_dequeue_count) == ("v1", 4, 7)
    assert (config.visibility_timeout, config.max_polling_interval) == (90.0, 5.0)


def test_missing_host_json_gives_the_defaults(tmp_path: Path) -> None:
    config = HostConfig.from_host_json(tmp_path / "absent.json")
    assert (config.route_prefix, config.batch_size, config.max_dequeue_count) == ("api", 16, 5)


def test_settings_are_resolved_and_missing_ones_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SCHEDULE", "0 */5 * * * *")
    assert resolve("%MY_SCHEDULE%") == "0 */5 * * * *"
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(KeyError, match="NOT_SET_ANYWHERE"):
        resolve("%NOT_SET_ANYWHERE%")


def test_the_real_app_is_read_from_its_own_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    host = real_app_host()
    names = {f.name for f in host.http}
    assert "health" in names
    health = next(f for f in host.http if f.name == "health")
    assert health.auth_level == "ANONYMOUS"
    assert health.methods == {"GET"}
    assert all(f.auth_level in ("ANONYMOUS", "FUNCTION", "ADMIN") for f in host.http)
    assert {t.schedule for t in host.timers} >= {"%SYNC_SCHEDULE%", "%ROTATION_SCHEDULE%"}
    assert all(q.connection == "AzureWebJobsStorage" for q in host.queues)
    # No two functions serve the same method on the same route.
    seen = [(f.template.template, m) for f in host.http for m in f.methods]
    assert len(seen) == len(set(seen))
