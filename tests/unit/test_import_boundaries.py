"""docs/architecture.md, Layers: dependencies point inward; shared/domain is pure."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_DOMAIN = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "httpx",
                       "aiohttp", "requests", "shared.adapters", "shared.services", "functions", "local",
                       "starlette", "uvicorn", "socket", "urllib.request", "http.client")
SDKS = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "kiota_authentication_azure")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_domain_imports_no_sdk_nor_outer_layer() -> None:
    assert _violations("shared/domain", FORBIDDEN_IN_DOMAIN) == []


def test_only_adapters_import_sdks() -> None:
    bad = [v for v in _violations("shared", SDKS) if not v.startswith("shared/adapters/")]
    assert bad == []


def test_shared_never_imports_functions_runtime() -> None:
    assert _violations("shared", ("azure.functions", "functions", "local")) == []


def test_services_do_not_import_adapters() -> None:
    assert _violations("shared/services", ("shared.adapters",)) == []


def test_adapters_take_types_from_the_ports_never_from_a_service_module() -> None:
    services = [f"shared.services.{p.stem}" for p in (ROOT / "shared/services").glob("*.py")
                if p.stem not in ("ports", "__init__")]
    assert _violations("shared/adapters", tuple(services)) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import azure.identity\nfrom shared.adapters import graph\n")
    assert _imports(sample) == ["azure.identity", "shared.adapters"]
