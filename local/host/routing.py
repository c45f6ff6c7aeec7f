"""Azure Functions route templates: `{id}`, `{id:int}`, `{x?}`, `{*rest}`, matched the way the host does.

https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger#customize-the-http-endpoint
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}")
_CONSTRAINTS = {"int": r"-?\d+", "long": r"-?\d+", "bool": r"(?i:true|false)", "guid":
                r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                "alpha": r"[A-Za-z]+", "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?",
                "datetime": r"[0-9T:.+\-Z]+"}


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route template."""

    template: str
    pattern: re.Pattern[str] = field(compare=False)
    literal_segments: int = 0

    @classmethod
    def compile(cls, template: str) -> RouteTemplate:
        """Compile a template into an anchored regular expression."""
        parts = [p for p in template.strip("/").split("/") if p]
        regex = ""
        literals = 0
        for part in parts:
            match = _PARAM.fullmatch(part)
            if match is None:
                if "{" in part:
                    raise ValueError(f"route segment {part!r} mixes text and parameters, which is not supported")
                regex += "/" + re.escape(part)
                literals += 1
                continue
            catch_all, name, constraint, optional = match.groups()
            if catch_all:
                regex += f"(?:/(?P<{name}>.*))?"
                continue
            if constraint and constraint not in _CONSTRAINTS:
                raise ValueError(f"route constraint {constraint!r} is not supported")
            value = _CONSTRAINTS.get(constraint or "", r"[^/]+")
            regex += f"(?:/(?P<{name}>{value}))?" if optional else f"/(?P<{name}>{value})"
        # Route matching in Azure Functions (ASP.NET routing) ignores case.
        # \Z, not $: "$" also matches before a final newline ("/health\n"); DOTALL so no segment stops at one.
        return cls(template, re.compile("^" + (regex or "/?") + r"/?\Z", re.IGNORECASE | re.DOTALL), literals)

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters when `path` (without the /api prefix, starting with /) matches."""
        found = self.pattern.match(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}
