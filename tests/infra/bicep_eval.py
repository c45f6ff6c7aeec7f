"""A small evaluator for the expressions main.bicep decides grants with, so tests can ask what a given
set of parameters deploys: parameters with their defaults (and azd's, from main.parameters.json),
one-line `var`s and `output`s, the members of a `var name = { ... }` object, `&&`, `||`, `!`,
`empty()`, `a ? b : c`, parentheses and literals. Anything else is refused, not guessed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"\s*(?:(&&|\|\||[!?:()\[\],{}])|('(?:[^'\\\n]|\\.)*')|(\d+)|([A-Za-z_]\w*))")
_AZD = re.compile(r"^\$\{(\w+)(?:=(.*))?\}$")


class BicepModel:
    """The top-level declarations of one Bicep file, evaluated under chosen parameter values."""

    def __init__(self, bicep: Path, parameters_file: Path | None = None,
                 azd_environment: dict[str, str] | None = None) -> None:
        self.text = bicep.read_text(encoding="utf-8")
        self.params: dict[str, Any] = {}
        self.types: dict[str, str] = {}
        for name, kind, default in re.findall(r"^param (\w+) (\w+)(?: = (.+))?$", self.text, re.MULTILINE):
            self.types[name] = kind
            self.params[name] = self._literal(default) if default else None
        if parameters_file:
            env = azd_environment or {}
            for name, entry in json.loads(parameters_file.read_text(encoding="utf-8"))["parameters"].items():
                match = _AZD.match(str(entry["value"]))
                raw = env.get(match.group(1), match.group(2) or "") if match else entry["value"]
                self.params[name] = self._typed(name, raw)
        self.exprs = dict(re.findall(r"^var (\w+) = (.+)$", self.text, re.MULTILINE))
        self.outputs = dict(re.findall(r"^output (\w+) \w+ = (.+)$", self.text, re.MULTILINE))

    def _typed(self, name: str, raw: Any) -> Any:
        if self.types.get(name) == "bool" and isinstance(raw, str):
            return raw.lower() == "true"
        if self.types.get(name) == "int" and isinstance(raw, str):
            return int(raw)
        return raw

    @staticmethod
    def _literal(text: str) -> Any:
        text = text.strip()
        if text in ("true", "false"):
            return text == "true"
        if text == "[]":
            return []
        if text == "{}":
            return {}
        if text.startswith("'") and text.endswith("'"):
            return text[1:-1]
        if text.isdigit():
            return int(text)
        return None  # an expression default (e.g. resourceGroup().location): not needed here

    def with_params(self, **values: Any) -> BicepModel:
        """The same file with some parameters set."""
        copy = object.__new__(BicepModel)
        copy.__dict__.update(self.__dict__)
        copy.params = {**self.params, **values}
        return copy

    def var(self, name: str) -> Any:
        """A one-line `var`, evaluated."""
        return self.evaluate(self.exprs[name])

    def output(self, name: str) -> Any:
        """An `output`, evaluated."""
        return self.evaluate(self.outputs[name])

    def object_var(self, name: str) -> dict[str, Any]:
        """A top-level `var name = { key: expr ... }` object whose members are one line each."""
        start = self.text.index(f"var {name} = {{\n") + len(f"var {name} = {{\n")
        body = self.text[start:self.text.index("\n}", start)]
        return {key: self.evaluate(expr) for key, expr in re.findall(r"^\s*(\w+): (.+)$", body, re.MULTILINE)}

    def evaluate(self, expression: str) -> Any:
        """The value of one expression."""
        tokens = [next(t for t in m.groups() if t is not None) for m in _TOKEN.finditer(expression)]
        if "".join(tokens).replace(" ", "") != re.sub(r"\s", "", expression):
            raise ValueError(f"cannot read {expression!r}")
        value, rest = self._ternary(tokens)
        if rest:
            raise ValueError(f"unexpected {rest[0]!r} in {expression!r}")
        return value

    def _ternary(self, tokens: list[str]) -> tuple[Any, list[str]]:
        condition, rest = self._or(tokens)
        if rest[:1] == ["?"]:
            yes, rest = self._ternary(rest[1:])
            if rest[:1] != [":"]:
                raise ValueError("a ternary without ':'")
            no, rest = self._ternary(rest[1:])
            return (yes if condition else no), rest
        return condition, rest

    def _or(self, tokens: list[str]) -> tuple[Any, list[str]]:
        value, rest = self._and(tokens)
        while rest[:1] == ["||"]:
            other, rest = self._and(rest[1:])
            value = bool(value) or bool(other)
        return value, rest

    def _and(self, tokens: list[str]) -> tuple[Any, list[str]]:
        value, rest = self._not(tokens)
        while rest[:1] == ["&&"]:
            other, rest = self._not(rest[1:])
            value = bool(value) and bool(other)
        return value, rest

    def _not(self, tokens: list[str]) -> tuple[Any, list[str]]:
        if tokens[:1] == ["!"]:
            value, rest = self._not(tokens[1:])
            return not value, rest
        return self._primary(tokens)

    def _primary(self, tokens: list[str]) -> tuple[Any, list[str]]:
        head, rest = tokens[0], tokens[1:]
        if head == "(":
            value, rest = self._ternary(rest)
            return value, rest[1:]
        if head == "[" and rest[:1] == ["]"]:
            return [], rest[1:]
        if head.startswith("'"):
            return head[1:-1], rest
        if head.isdigit():
            return int(head), rest
        if head in ("true", "false"):
            return head == "true", rest
        if rest[:1] == ["("]:
            argument, rest = self._ternary(rest[1:])
            if head != "empty" or rest[:1] != [")"]:
                raise ValueError(f"function {head}() is not understood here")
            return not argument, rest[1:]
        if head in self.params:
            return self.params[head], rest
        if head in self.exprs:
            return self.var(head), rest
        raise ValueError(f"unknown name {head}")
