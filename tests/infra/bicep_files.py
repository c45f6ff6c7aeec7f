"""Where the Bicep lives, and how the infrastructure checks read it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INFRA_VENV = ROOT / ".venv-infra"
CHECKOV = INFRA_VENV / "bin" / "checkov"

_LINE_COMMENT = re.compile(r"^\s*//.*$", re.MULTILINE)


def bicep_files() -> list[Path]:
    """Every Bicep file under infra/, sorted so test ids are stable."""
    return sorted(INFRA.rglob("*.bicep"))


def bicep_text(*, comments: bool = False) -> str:
    """The text of every Bicep file, joined; without whole-line comments unless asked for."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in bicep_files())
    return text if comments else _LINE_COMMENT.sub("", text)


def quoted_strings(text: str) -> set[str]:
    """Every single-quoted Bicep string literal in `text` (interpolations left as written)."""
    return set(re.findall(r"'((?:[^'\\\n]|\\.)*)'", text))


def bicep_block(text: str, header: str) -> str:
    """The body of the top-level block that starts with `header` (e.g. `var tables = [`)."""
    start = text.index(header) + len(header)
    closing = "\n]" if header.rstrip().endswith("[") else "\n}"
    return text[start : text.index(closing, start)]


def bicep_string_list(text: str, header: str) -> list[str]:
    """The strings of a top-level `var name = [ ... ]` array, in order."""
    return re.findall(r"'([^'\n]*)'", bicep_block(text, header))


def bicep_map_of_lists(text: str, header: str) -> dict[str, list[str]]:
    """A top-level `var name = { key: [ 'a' 'b' ] ... }` object, as key to strings."""
    body = bicep_block(text, header)
    return {
        key: re.findall(r"'([^'\n]*)'", values)
        for key, values in re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*\[(.*?)\]", body, re.MULTILINE | re.DOTALL)
    }
