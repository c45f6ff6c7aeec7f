"""Services keep their storage in repositories: no table, row or store in any service module (docs/architecture.md,
Layers). Only the ports module names the entity store, for the adapters that implement repositories on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "shared" / "services"
#: Every service module but the ports.
ON_REPOSITORIES = sorted(p.stem for p in SERVICES.glob("*.py") if p.stem not in ("ports", "__init__"))
FORBIDDEN = {"Table", "Entity", "EntityStore", "BatchEntityStore", "TRANSACTION_ROWS"}


@pytest.mark.parametrize("name", ON_REPOSITORIES)
def test_the_service_names_no_table_row_or_store(name: str) -> None:
    tree = ast.parse((SERVICES / f"{name}.py").read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert not (names | imported) & FORBIDDEN
