"""Services write audit records through a bound AuditContext (shared/services/audit_context.py): no service
module builds a record by hand with `.record(connection=...)`, so no record can miss its run or carry
another job's correlation id (docs/architecture.md, Invariants, 5)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "shared" / "services"
BINDER = "audit_context.py"


def hand_built_records(source: str) -> list[int]:
    """Lines of calls `<anything>.record(..., connection=..., ...)` in `source`."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record"
            and any(keyword.arg == "connection" for keyword in node.keywords)]


def test_no_service_builds_an_audit_record_by_hand() -> None:
    found = {f"{path.name}:{line}" for path in sorted(SERVICES.glob("*.py")) if path.name != BINDER
             for line in hand_built_records(path.read_text(encoding="utf-8"))}
    assert not found, f"bind an AuditContext and call ctx.record(action, target, outcome, ...) instead: {found}"


def test_the_check_sees_a_hand_built_record() -> None:
    source = 'async def f(sink):\n    await sink.record(connection="c", actor="a", action="x", target="t")\n'
    assert hand_built_records(source) == [2]
    assert hand_built_records((SERVICES / BINDER).read_text(encoding="utf-8"))  # the one place that may
