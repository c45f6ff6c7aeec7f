"""OData literals for Graph query options."""

from __future__ import annotations


def quote(value: str) -> str:
    """A string literal for `$filter`: single quotes around, inner quotes doubled (OData ABNF)."""
    return "'" + value.replace("'", "''") + "'"


def any_of(field: str, values: list[str]) -> str:
    """`field in ('a','b')`, the filter form Graph accepts for up to 15 values per clause."""
    return f"{field} in ({','.join(quote(v) for v in values)})"
