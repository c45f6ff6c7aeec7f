"""Checks an answer of the bridge against the API description (docs/openapi.json).

`conforms(response)` finds the operation by method and path, the described answer by status (exact,
then `4XX`/`5XX`), and checks its media type and body with the description's JSON Schema. Tests hook
it into their HTTP clients (`httpx.Client(event_hooks=CHECK_ANSWERS)`), so every answer of a flow is
checked.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


class NonConforming(AssertionError):
    """An answer the API description does not allow."""


@functools.cache
def spec() -> dict[str, Any]:
    """The checked-in description."""
    loaded: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _operations() -> list[tuple[str, re.Pattern[str], str]]:
    prefix = spec()["servers"][0]["url"].rstrip("/")
    found = []
    for path, item in spec()["paths"].items():
        pattern = re.compile("^" + re.escape(prefix) + re.sub(r"\\\{[A-Za-z_]+\\\}", "[^/]+", re.escape(path))
                             + "/?$", re.IGNORECASE)
        found.extend((method.upper(), pattern, path) for method in item)
    return found


@functools.cache
def _validator(ref: str) -> Any:
    return jsonschema_rs.validator_for({"$ref": ref, "components": spec()["components"]})


def described(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The described answer of `method path` for `status`; None when the route is not the bridge's."""
    for op_method, pattern, template in _operations():
        if op_method == method.upper() and pattern.match(path):
            responses = spec()["paths"][template][method.lower()]["responses"]
            answer = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
            if answer is None:
                raise NonConforming(f"{method} {path}: status {status} is not described ({sorted(responses)})")
            return dict(answer)
    return None


def conforms(response: httpx.Response) -> None:
    """Raise NonConforming unless `response` is one the description allows."""
    request = response.request
    answer = described(request.method, request.url.path, response.status_code)
    if answer is None:
        # No operation has that path: the host's own 404/405, which are problem+json too.
        if response.status_code in (404, 405):
            return
        raise NonConforming(f"{request.method} {request.url.path} is not described")
    content = answer.get("content")
    if not content:
        if response.content:
            raise NonConforming(f"{request.method} {request.url.path} -> {response.status_code}: a body where "
                                "none is described")
        return
    media = (response.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in content:
        raise NonConforming(f"{request.method} {request.url.path} -> {response.status_code}: {media!r}, described "
                            f"{sorted(content)}")
    ref = content[media]["schema"]["$ref"]
    errors = [f"{'/'.join(str(p) for p in e.instance_path)}: {e.message}"
              for e in _validator(ref).iter_errors(response.json())]
    if errors:
        raise NonConforming(f"{request.method} {request.url.path} -> {response.status_code} does not match "
                            f"{ref}: {errors[:5]}")


def _check(response: httpx.Response) -> None:
    response.read()
    conforms(response)


#: `httpx.Client(event_hooks=CHECK_ANSWERS)`: every answer is checked as it arrives.
CHECK_ANSWERS: dict[str, list[Any]] = {"response": [_check]}
