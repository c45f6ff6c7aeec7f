"""Services that moved their storage into repositories keep it there: no table, row or store in them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "shared" / "services"
#: Services whose stored state goes through the repositories of shared.services.ports.
ON_REPOSITORIES = ("directory", "sync", "federation", "notifications", "status", "events")
FORBIDDEN = {"Table", "Entity", "EntityStore", "BatchEntityStore", "TRANSACTION_ROWS"}


@pytest.mark.parametrize("name", ON_REPOSITORIES)
def test_the_service_names_no_table_row_or_store(name: str) -> None:
    tree = ast.parse((SERVICES / f"{name}.py").read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert not (names | imported) & FORBIDDEN
