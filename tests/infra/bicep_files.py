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
