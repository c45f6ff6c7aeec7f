"""docs/architecture.md, Layers: dependencies point inward; shared/domain is pure; shared/bootstrap.py is the
only place that wires; the triggers in functions/ parse, call one service method and map the result."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_DOMAIN = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "httpx",
                       "aiohttp", "requests", "shared.adapters", "shared.services", "functions", "local",
                       "starlette", "uvicorn", "socket", "urllib.request", "http.client")
SDKS = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "kiota_authentication_azure")
#: The Functions runtime is the one SDK a trigger imports.
FUNCTIONS_RUNTIME = "azure.functions"
#: Adapters implement the ports and import no use case. Until the ports they still borrow from a service
#: module move into shared/services/ports.py, these imports are the known exceptions (none may be added).
ADAPTERS_BORROW = ("shared.services.devices", "shared.services.notifications", "shared.services.sync")
#: At most this many statements in a trigger's body (after its docstring, nested ones counted): an HTTP
#: route parses, calls one service method and maps the result; a queue or timer trigger does the same inside
#: its correlation and job.
MAX_TRIGGER_STATEMENTS = {"http": 5, "other": 8}
#: What only shared/bootstrap.py builds: the per-connection adapters and the services bound to them.
BUILT_IN_THE_ROOT = ("ConnectionTester(", "HttpsMetadataSource(", "FederationService(", "GraphGateway(",
                     "ssl_context(", "BulkRunner(", "GraphDirectoryReader(", "GraphPasskeyDirectory(")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def _violations(folder: str, forbidden: tuple[str, ...], *, allowed: tuple[str, ...] = (),
                root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / folder).rglob("*.py")):
        for name in _imports(path):
            if _within(name, forbidden) and not _within(name, allowed):
                bad.append(f"{path.relative_to(root)} imports {name}")
    return bad


def _functions_violations(root: Path = ROOT) -> list[str]:
    return _violations("functions", ("shared.adapters", *SDKS), allowed=(FUNCTIONS_RUNTIME,), root=root)


def _domain_settings_violations(root: Path = ROOT) -> list[str]:
    return _violations("shared/domain", ("shared.config", "shared.bootstrap"), root=root)


def _adapter_violations(root: Path = ROOT) -> list[str]:
    return _violations("shared/adapters", ("shared.services", "shared.bootstrap", "functions"),
                       allowed=("shared.services.ports", *ADAPTERS_BORROW), root=root)


def _builders(root: Path = ROOT) -> list[str]:
    paths = [*sorted((root / "functions").glob("*.py")), root / "shared" / "cli.py"]
    return [f"{path.relative_to(root)} builds {built[:-1]}" for path in paths if path.exists()
            for built in BUILT_IN_THE_ROOT if built in path.read_text(encoding="utf-8")]


def _trigger_kind(node: ast.stmt) -> str | None:
    """"http" for a function registered with `route`/`scim_route`, "other" for one registered with a Blueprint
    decorator (queue, timer, warm-up), None for anything else."""
    if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
        return None
    names = [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]
    if any(n in ("route", "scim_route") for n in names):
        return "http"
    return "other" if any(n.startswith("bp.") for n in names) else None


def _statements(node: ast.AsyncFunctionDef | ast.FunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return sum(1 for top in body for inner in ast.walk(top) if isinstance(inner, ast.stmt))


def _long_triggers(root: Path = ROOT) -> list[str]:
    long = []
    for path in sorted((root / "functions").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            kind = _trigger_kind(node)
            if kind is None:
                continue
            assert isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
            count, limit = _statements(node), MAX_TRIGGER_STATEMENTS[kind]
            if count > limit:
                long.append(f"{path.relative_to(root)}: {node.name} has {count} statements (at most {limit})")
    return long


def test_domain_imports_no_sdk_nor_outer_layer() -> None:
    assert _violations("shared/domain", FORBIDDEN_IN_DOMAIN) == []


def test_domain_does_not_depend_on_settings() -> None:
    assert _domain_settings_violations() == []


def test_only_adapters_import_sdks() -> None:
    bad = [v for v in _violations("shared", SDKS) if not v.startswith("shared/adapters/")]
    assert bad == []


def test_shared_never_imports_functions_runtime() -> None:
    assert _violations("shared", ("azure.functions", "functions", "local")) == []


def test_services_do_not_import_adapters() -> None:
    assert _violations("shared/services", ("shared.adapters",)) == []


def test_adapters_import_only_the_ports_of_services() -> None:
    assert _adapter_violations() == []


def test_functions_import_no_adapter_nor_sdk_but_the_functions_runtime() -> None:
    assert _functions_violations() == []


def test_only_the_composition_root_builds_adapters_and_bound_services() -> None:
    assert _builders() == []


def test_triggers_are_short() -> None:
    assert _long_triggers() == []


def test_adapters_take_types_from_the_ports_never_from_a_service_module() -> None:
    services = [f"shared.services.{p.stem}" for p in (ROOT / "shared/services").glob("*.py")
                if p.stem not in ("ports", "__init__")]
    assert _violations("shared/adapters", tuple(services)) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import azure.identity\nfrom shared.adapters import graph\n")
    assert _imports(sample) == ["azure.identity", "shared.adapters"]


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checkers_see_each_new_violation(tmp_path: Path) -> None:
    http_limit = MAX_TRIGGER_STATEMENTS["http"]
    _write(tmp_path, "functions/ok.py", "import azure.functions as func\nfrom shared.bootstrap import bridge\n")
    _write(tmp_path, "functions/bad.py", "from shared.adapters.identity import ssl_context\nimport azure.identity\n"
           "context = ssl_context(settings)\n")
    _write(tmp_path, "shared/cli.py", "tester = ConnectionTester(gateway, gateway.token_claims)\n")
    _write(tmp_path, "shared/domain/bad.py", "from shared.config import Connection\n")
    _write(tmp_path, "shared/adapters/ok.py", "from shared.services.ports import GraphApi\n")
    _write(tmp_path, "shared/adapters/bad.py", "from shared.services.rotation import RotationService\n")
    _write(tmp_path, "functions/long.py", "@route(bp, 'x', 'GET')\nasync def long(call):\n    '''Doc.'''\n"
           + "".join(f"    a{i} = {i}\n" for i in range(http_limit + 1)))
    _write(tmp_path, "functions/short.py", "@bp.timer_trigger(arg_name='t', schedule='x')\nasync def short(t):\n"
           "    if t:\n        return\n\n\ndef helper():\n" + "    x = 1\n" * 20)
    assert _functions_violations(tmp_path) == ["functions/bad.py imports shared.adapters.identity",
                                               "functions/bad.py imports azure.identity"]
    assert _domain_settings_violations(tmp_path) == ["shared/domain/bad.py imports shared.config"]
    assert _adapter_violations(tmp_path) == ["shared/adapters/bad.py imports shared.services.rotation"]
    assert _builders(tmp_path) == ["functions/bad.py builds ssl_context", "shared/cli.py builds ConnectionTester"]
    assert _long_triggers(tmp_path) == [f"functions/long.py: long has {http_limit + 1} statements "
                                        f"(at most {http_limit})"]


def test_bench_never_imports_tests() -> None:
    # Benchmarks ship with the product and run without the test tree: what they share with tests (the
    # in-memory stand-ins, the login stand-in) lives in local/.
    assert _violations("bench", ("tests",)) == []
