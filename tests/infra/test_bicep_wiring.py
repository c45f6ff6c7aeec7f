"""What a Bicep build would catch between files, checked without the Bicep CLI: each module call
passes only parameters the module declares and every required one, each `<module>.outputs.<name>`
exists, main.parameters.json names only real parameters, and parameters are described the Azure
Verified Modules way (`Required.` / `Optional.`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.bicep_files import INFRA, bicep_files

MAIN = (INFRA / "main.bicep").read_text(encoding="utf-8")
_PARAM = re.compile(r"^param\s+(\w+)\s+(\w+)(\s*=)?", re.MULTILINE)
_OUTPUT = re.compile(r"^output\s+(\w+)\s+", re.MULTILINE)
_MODULE = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s*=\s*(?:if\s*\([^)]*\)\s*)?\{", re.MULTILINE)


def _params(text: str) -> dict[str, bool]:
    """Parameter name -> whether it has a default."""
    return {name: bool(default) for name, _type, default in _PARAM.findall(text)}


def _module_calls() -> list[tuple[str, Path, set[str]]]:
    calls = []
    for match in _MODULE.finditer(MAIN):
        body = MAIN[match.end() : MAIN.index("\n}", match.end())]
        params_block = body[body.index("params: {") : body.index("\n  }", body.index("params: {"))]
        passed = set(re.findall(r"^    (\w+):", params_block, re.MULTILINE))
        calls.append((match.group(1), INFRA / match.group(2), passed))
    return calls


def test_every_module_is_called_once() -> None:
    called = sorted(path.name for _, path, _ in _module_calls())
    modules = sorted(p.name for p in (INFRA / "modules").glob("*.bicep"))
    assert called == modules


@pytest.mark.parametrize(("symbol", "path", "passed"), _module_calls(), ids=lambda v: v if isinstance(v, str) else "")
def test_module_call_matches_its_parameters(symbol: str, path: Path, passed: set[str]) -> None:
    declared = _params(path.read_text(encoding="utf-8"))
    unknown = sorted(passed - set(declared))
    missing = sorted(n for n, has_default in declared.items() if not has_default and n not in passed)
    assert not unknown, f"{symbol} passes parameters {path.name} does not declare: {unknown}"
    assert not missing, f"{symbol} leaves out required parameters of {path.name}: {missing}"


def test_module_outputs_exist() -> None:
    outputs = {symbol: set(_OUTPUT.findall(path.read_text(encoding="utf-8"))) for symbol, path, _ in _module_calls()}
    for symbol, name in re.findall(r"\b(\w+)!?\.outputs\.(\w+)", MAIN):
        assert name in outputs[symbol], f"{symbol}.outputs.{name} is not an output of the module"


def test_parameters_file_names_real_parameters() -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    declared = _params(MAIN)
    assert set(document["parameters"]) <= set(declared)
    required = {n for n, has_default in declared.items() if not has_default}
    assert required <= set(document["parameters"])


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_parameters_are_described(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for match in _PARAM.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        decorators = []
        for line in reversed(before):
            if not line.startswith(("@", "  ", "])", "})", "]")):
                break
            decorators.append(line)
        description = next((d for d in decorators if d.startswith("@description(")), "")
        name, has_default = match.group(1), bool(match.group(3))
        assert description, f"{path.name}: parameter {name} has no @description"
        expected = "Optional." if has_default else "Required."
        assert description.startswith(f"@description('{expected}"), f"{path.name}: {name} should say {expected}"


def test_workbook_shows_each_activity() -> None:
    workbook = json.loads((INFRA / "modules" / "workbook.json").read_text(encoding="utf-8"))
    assert workbook["version"] == "Notebook/1.0"
    titles = {item["content"].get("title", "") for item in workbook["items"] if item["type"] == 3}
    for activity in ("Sync", "Rotation", "Enrollment", "Revocation"):
        assert any(t.startswith(activity) for t in titles), f"the workbook has no {activity} panel"
    assert "loadTextContent('workbook.json')" in (INFRA / "modules" / "workbook.bicep").read_text(encoding="utf-8")


def test_alerts_cover_the_operational_failures() -> None:
    alerts = (INFRA / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    keys = set(re.findall(r"^\s*key: '([^']+)'", alerts, re.MULTILINE))
    assert keys == {"poison-messages", "rotation-failures", "sustained-throttling", "certificate-expiry"}
    assert "poisonQueues: poisonQueues" in MAIN
