"""Every Bicep file parses with tree-sitter-bicep, with no ERROR or MISSING node.

There is no Bicep CLI offline; tree-sitter-bicep follows the Bicep grammar, so a file it cannot
parse would not build either. One exception: tree-sitter-bicep 1.1.0 (the newest release) predates
the `extension <alias>` statement that the Microsoft Graph extension needs, so that statement, and
only in exactly the form `extension <alias from bicepconfig.json>`, is blanked before parsing (the
line keeps its length, so reported positions stay true).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from tests.infra.bicep_files import INFRA, bicep_files

BICEP = Language(tree_sitter_bicep.language())
EXTENSION_ALIASES = set(json.loads((INFRA / "bicepconfig.json").read_text(encoding="utf-8"))["extensions"])
_EXTENSION = re.compile(rb"^extension[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", re.MULTILINE)


def _without_extension_statements(source: bytes) -> bytes:
    """`source` with each `extension <alias>` line blanked; an alias not configured is left to fail."""

    def blank(match: re.Match[bytes]) -> bytes:
        if match.group(1).decode() not in EXTENSION_ALIASES:
            return match.group(0)
        return b" " * len(match.group(0))

    return _EXTENSION.sub(blank, source)


def _problems(node: Node) -> Iterator[str]:
    """Each ERROR or MISSING node below `node`, as `line:column kind`."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            row, col = current.start_point
            kind = "MISSING " + current.type if current.is_missing else "ERROR"
            yield f"{row + 1}:{col + 1} {kind}"
        if current.has_error:
            stack.extend(current.children)


def test_there_is_bicep_to_check() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in bicep_files()}
    assert "main.bicep" in names
    assert any(n.startswith("modules/") for n in names)


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses_cleanly(path: Path) -> None:
    tree = Parser(BICEP).parse(_without_extension_statements(path.read_bytes()))
    problems = list(_problems(tree.root_node))
    assert not problems, f"{path.relative_to(INFRA)}: {problems}"


def test_a_broken_file_is_caught() -> None:
    tree = Parser(BICEP).parse(b"resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n")
    assert list(_problems(tree.root_node))


def test_only_configured_extensions_are_blanked() -> None:
    assert _without_extension_statements(b"extension microsoftGraphV1\n").strip() == b""
    unknown = _without_extension_statements(b"extension somethingElse\n")
    assert list(_problems(Parser(BICEP).parse(unknown).root_node))
