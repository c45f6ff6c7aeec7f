"""What the workbook and the alerts of infra/ would show, computed from the telemetry items the app sends.

Each captured custom event becomes a row of `customEvents` (the workbook queries Application Insights)
and of `AppEvents` (the alerts query the workspace). Each query's source and `extend`/`where` stages
are evaluated by a small interpreter of the KQL they use (`==`, `=~`, `!=`, `in`, `in~`, `startswith`,
`has`, `contains` and negations, `and`, `or`, parentheses, `tostring()`); later stages only aggregate.
https://learn.microsoft.com/kusto/query/datatypes-string-operators
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared.topology import Queue

INFRA = Path(__file__).resolve().parents[1] / "infra"


def tables(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The captured custom events as the tables the queries read."""
    events = [i for i in items if i.get("data", {}).get("baseType") == "EventData"]
    custom = [{"name": e["data"]["baseData"]["name"], "customDimensions": e["data"]["baseData"].get("properties", {}),
               "timestamp": e["time"]} for e in events]
    workspace = [{"Name": r["name"], "Properties": r["customDimensions"], "TimeGenerated": r["timestamp"]}
                 for r in custom]
    return {"customEvents": custom, "AppEvents": workspace, "traces": [], "AppTraces": []}


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>==|=~|!=|!~|\(|\)|,|=)|(?P<word>[!A-Za-z_~][\w.~]*))')
_OPS = {"==", "=~", "!=", "!~", "in", "in~", "!in", "startswith", "!startswith", "has", "!has", "contains",
        "!contains"}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        assert match, f"cannot read {text[pos:]!r}"
        out.append(match.group(match.lastgroup or ""))
        pos = match.end()
    return out


def _terms(value: str) -> set[str]:
    return {t.lower() for t in re.split(r"[^0-9A-Za-z]+", value) if t}


def _compare(left: Any, op: str, right: Any) -> bool:
    left = "" if left is None else str(left)
    negate = op.startswith("!") and op not in ("!=", "!~")
    base = op[1:] if negate else op
    if base in ("in", "in~"):
        values = [str(v) for v in right]
        found = left in values if base == "in" else left.lower() in [v.lower() for v in values]
    elif base == "==":
        found = left == right
    elif base == "!=":
        found = left != right
    elif base == "=~":
        found = left.lower() == str(right).lower()
    elif base == "!~":
        found = left.lower() != str(right).lower()
    elif base == "startswith":
        found = left.lower().startswith(str(right).lower())
    elif base == "has":  # a whole term (https://learn.microsoft.com/kusto/query/has-operator)
        found = _terms(str(right)) <= _terms(left) and str(right).lower() in left.lower()
    elif base == "contains":
        found = str(right).lower() in left.lower()
    else:
        raise AssertionError(f"operator {op} is not interpreted")
    return not found if negate else found


class _Where:
    def __init__(self, tokens: list[str], row: dict[str, Any]) -> None:
        self.tokens, self.pos, self.row = tokens, 0, row

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expr(self) -> bool:
        value = self.conj()
        while self.peek() == "or":
            self.take()
            value = self.conj() or value
        return value

    def conj(self) -> bool:
        value = self.atom()
        while self.peek() == "and":
            self.take()
            value = self.atom() and value
        return value

    def atom(self) -> bool:
        if self.peek() == "(":
            self.take()
            value = self.expr()
            assert self.take() == ")"
            return value
        left = self.operand()
        op = self.take()
        assert op in _OPS, f"unknown operator {op}"
        if op.lstrip("!") in ("in", "in~"):
            assert self.take() == "("
            values = [self.operand()]
            while self.peek() == ",":
                self.take()
                values.append(self.operand())
            assert self.take() == ")"
            return _compare(left, op, values)
        return _compare(left, op, self.operand())

    def operand(self) -> Any:
        token = self.take()
        if token.startswith('"'):
            return json.loads(token)
        if token == "tostring":
            assert self.take() == "("
            value = self.operand()
            assert self.take() == ")"
            return "" if value is None else str(value)
        return _lookup(self.row, token)


def _lookup(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _split_pipes(query: str) -> list[str]:
    stages, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(query):
        if ch == '"' and (i == 0 or query[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif not quoted and depth == 0 and ch == "|":
            stages.append(query[start:i].strip())
            start = i + 1
    return [*stages, query[start:].strip()]


def run(query: str, tables: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows left after the query's source, `extend` and `where` stages (later stages only aggregate)."""
    source, *stages = _split_pipes(query)
    names = [n.strip() for n in source.removeprefix("union ").split(",")]
    rows = [dict(r) for n in names for r in tables[n]]
    for stage in stages:
        verb, _, rest = stage.partition(" ")
        if verb == "where":
            rows = [r for r in rows if (w := _Where(_tokens(rest), r)).expr() and w.peek() is None]
        elif verb == "extend":
            for assignment in re.split(r",\s*(?=\w+\s*=)", rest):
                name, _, expression = assignment.partition("=")
                for r in rows:
                    r[name.strip()] = _Where(_tokens(expression.strip()), r).operand()
        elif verb in ("summarize", "order", "project", "top", "take", "render"):
            break
        else:
            raise AssertionError(f"stage {verb!r} is not interpreted: {stage}")
    return rows


def workbook_queries() -> dict[str, str]:
    """Each workbook panel's query by panel name."""
    workbook = json.loads((INFRA / "modules" / "workbook.json").read_text(encoding="utf-8"))
    return {i["name"]: i["content"]["query"] for i in workbook["items"] if i["type"] == 3}


def alert_queries() -> dict[str, str]:
    """Each log alert's query by key, with the Bicep interpolations of the poison queues filled in."""
    text = (INFRA / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    poison = ", ".join(f'"{q.poison}"' for q in Queue)
    found = re.findall(r"key: '([^']+)'.*?query: '((?:[^'\\]|\\.)*)'", text, re.S)
    return {key: query.replace("\\'", "'").replace("${poisonList}", poison) for key, query in found}


