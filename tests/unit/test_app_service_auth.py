"""App Service Authentication: one file of excluded paths, read by the Bicep and by the local host.

Only the liveness probe and device password delivery (signed by the device's own key; a device has no
Entra identity) are reachable without an Entra token; every route that checks app roles is not.
"""

from __future__ import annotations

import json
from pathlib import Path

from local.host.__main__ import AUTH_SETTINGS
from local.host.runtime import HostConfig, LocalHost

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "infra" / "app-service-auth.json"


def test_the_bicep_and_the_host_read_the_same_file() -> None:
    assert ROOT / AUTH_SETTINGS == SETTINGS
    bicep = (ROOT / "infra" / "modules" / "function-app.bicep").read_text(encoding="utf-8")
    assert "globalValidation: loadJsonContent('../app-service-auth.json')" in bicep
    validation = json.loads(SETTINGS.read_text(encoding="utf-8"))
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"


def test_only_health_device_delivery_and_graph_notifications_are_excluded() -> None:
    import azure.functions as func

    from function_app import _blueprints

    # A FunctionApp of its own: the host indexes function_app.app once per process.
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for blueprint in _blueprints():
        app.register_functions(blueprint)
    validation = json.loads(SETTINGS.read_text(encoding="utf-8"))
    host = LocalHost(app, HostConfig(auth_enabled=True, auth_excluded_paths=tuple(validation["excludedPaths"])))
    samples = {f.name: "/api/" + f.template.template.strip("/").replace("{", "x").replace("}", "")
               .replace("?", "") for f in host.http}
    excluded = sorted(name for name, path in samples.items() if host._excluded(path))
    # Graph's notifications carry no Entra token for us: their clientState proves them (docs/notifications.md).
    assert excluded == ["device_password", "graph_lifecycle_notification", "graph_notification", "health"]
    for name in ("graph_notification", "graph_lifecycle_notification"):
        assert next(f for f in host.http if f.name == name).auth_level == "ANONYMOUS"
    delivery = next(f for f in host.http if f.name == "device_password")
    assert delivery.auth_level == "ANONYMOUS"
    assert delivery.template.template.startswith("delivery/")
    # A prefix entry covers what is under it, not look-alikes; exact entries match exactly.
    assert host._excluded("/api/delivery/connections/c/devices/d/password")
    assert not host._excluded("/api/deliveryx/a")
    assert not host._excluded("/api/health/more")
