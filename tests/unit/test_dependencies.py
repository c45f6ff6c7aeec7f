"""Dependencies mean what they say: SDKs through their public API, and a deployment package whose
runtime requirements are exactly what the deployed code imports."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import subprocess  # nosec B404 - git ls-files, fixed arguments
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("shared", "functions", "local", "function_app.py")
#: Libraries whose private names the product must not import (underscore modules or names).
SDK_ROOTS = ("azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http", "kiota_authentication_azure",
             "kiota_serialization_json", "fido2")
#: Requirements that no deployed module imports, each with the reason it is pinned anyway.
PINNED_WITHOUT_IMPORT = {
    "msgraph-sdk": "the Graph client library the Graph path is built on (msgraph-core comes with it)",
    "deprecated": "msgraph-core imports it without declaring it",
    "sniffio": "httpcore tries to import it on every request; without it each try is a failed import search",
}


def _python_files(entries: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = ROOT / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every absolute import in the file, wherever it sits."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.module, alias.name) for alias in node.names)
    return found


def _private(module: str, name: str | None) -> bool:
    parts = [*module.split("."), *([name] if name else [])]
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__")) for part in parts)


def private_imports(files: list[Path]) -> list[str]:
    """Every import of an SDK's underscore module or name, as `file: module.name`."""
    bad = []
    for path in files:
        for module, name in _imports(path):
            if module.split(".")[0] in SDK_ROOTS and _private(module, name):
                label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                bad.append(f"{label}: {module}{'.' + name if name else ''}")
    return bad


def test_no_product_module_imports_a_private_sdk_name() -> None:
    assert private_imports(_python_files(PRODUCT)) == []


def test_the_private_import_scan_sees_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from azure.data.tables.aio._authentication_async import _configure_credential\n"
                     "from azure.core.pipeline.policies import _utils\nimport msgraph._x\n"
                     "def later() -> None:\n    from kiota_http._version import VERSION\n"
                     "from azure.data.tables import __version__\nfrom fido2.server import Fido2Server\n"
                     "from shared._private import x\n", encoding="utf-8")
    assert private_imports([probe]) == [
        "probe.py: azure.data.tables.aio._authentication_async._configure_credential",
        "probe.py: azure.core.pipeline.policies._utils",
        "probe.py: msgraph._x",
        "probe.py: kiota_http._version.VERSION",
    ]


# -- the deployment package ---------------------------------------------------------------------

def _funcignore() -> list[str]:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """.funcignore follows .gitignore: a pattern without a slash matches a name at any depth (and so
    everything under it), one with a slash matches from the project root."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        if "/" in pattern:
            anchored = pattern.lstrip("/")
            if any(fnmatch.fnmatch(prefix, anchored) for prefix in prefixes):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def package_files() -> list[str]:
    """The files `func azure functionapp publish` and azd deploy: the project's files less .funcignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],  # nosec B603 B607
                            cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode == 0 and listed.stdout.strip():
        files = listed.stdout.splitlines()
    else:  # not a git checkout (an unpacked archive)
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    patterns = _funcignore()
    return sorted(f for f in files if not _ignored(f, patterns) and (ROOT / f).is_file())


def _requirement_names(text: str) -> dict[str, str]:
    """Normalised distribution name -> pinned version, from a requirements file (no includes)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
        assert match, f"requirements.txt: {line!r} is not pinned with =="
        pins[_normal(match.group(1))] = match.group(3)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _module_owners() -> dict[str, str]:
    """Dotted module or package name -> the installed distribution whose files hold it."""
    owners = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
                continue
            if file.name == "__init__.py":
                parts = parts[:-1]
            elif file.suffix in (".py", ".so", ".pyd"):
                parts = (*parts[:-1], file.name.split(".")[0])
            else:
                continue
            owners.setdefault(".".join(parts), _normal(dist.metadata["Name"]))
    return owners


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides `module` (None for the standard library and the project)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or (ROOT / top).exists() or (ROOT / f"{top}.py").exists():
        return None
    parts = module.split(".")
    # The deepest listed prefix: `azure` alone is a namespace several distributions share.
    for depth in range(len(parts), 0, -1):
        owner = _module_owners().get(".".join(parts[:depth]))
        if owner:
            return owner
    raise AssertionError(f"{module} is imported by the app but no installed distribution provides it")


def deployed_distributions() -> dict[str, set[str]]:
    """Distribution -> the deployed modules that import it."""
    users: dict[str, set[str]] = {}
    for file in package_files():
        if file.endswith(".py"):
            for module, _name in _imports(ROOT / file):
                dist = distribution_of(module)
                if dist:
                    users.setdefault(dist, set()).add(file)
    return users


def test_the_package_leaves_out_the_local_stack_tests_and_infra() -> None:
    files = package_files()
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(files)
    assert not [f for f in files if f.split("/")[0] in ("local", "tests", "bench", "infra", ".venv")]
    assert "requirements-dev.txt" not in files


def test_every_runtime_requirement_is_imported_by_the_deployed_app() -> None:
    pins = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    used = deployed_distributions()
    unused = sorted(set(pins) - set(used) - set(PINNED_WITHOUT_IMPORT))
    assert unused == [], f"requirements.txt pins packages the deployed app never imports: {unused}"
    assert set(PINNED_WITHOUT_IMPORT) <= set(pins), "a reason is kept for a requirement that is gone"


def test_everything_the_deployed_app_imports_is_pinned_in_the_runtime_requirements() -> None:
    pins = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    missing = {dist: sorted(files) for dist, files in deployed_distributions().items() if dist not in pins}
    assert missing == {}, f"imported in Azure but not pinned in requirements.txt: {missing}"


def test_local_stack_tools_are_development_requirements_only() -> None:
    runtime = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    dev = _requirement_names((ROOT / "requirements-dev.txt").read_text(encoding="utf-8"))
    for tool in ("uvicorn", "starlette", "pytest", "mypy", "ruff"):
        assert tool in dev, tool
        assert tool not in runtime, tool


def test_the_funcignore_matcher_follows_gitignore() -> None:
    assert _ignored("local/host/runtime.py", ["local"])
    assert _ignored(".venv/x.py", [".venv*"])
    assert _ignored("a/.git/config", [".git*"])
    assert not _ignored("shared/local.py", ["local"])
    assert _ignored("docs/x.md", ["/docs"])
    assert not _ignored("a/docs/x.md", ["/docs"])
    assert _ignored("infra/modules/a.bicep", ["infra/modules"])
