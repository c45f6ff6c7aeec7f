"""Logging: JSON lines or text, a correlation id on every line, and secrets masked in every record.

`configure()` installs one handler on the root logger. The masking filter runs on the handler, so it
sees every record from every library: it replaces registered secret values, bearer tokens and JWTs,
`password=`/`client_secret=` style pairs, JSON members named like secrets, and PEM private keys, in
the message, its arguments and the exception text.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MASK = "***"
correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")

_SECRET_WORDS = r"(?:password|passwd|pwd|client_?secret|clientSecret|secret|access_?token|refresh_?token|" \
                r"id_?token|client_assertion|api_?key|x-functions-key|code)"  # noqa: S105 - names, not values
_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     "-----PRIVATE KEY " + MASK + "-----"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r'(?i)("' + _SECRET_WORDS + r'"\s*:\s*)"(?:[^"\\]|\\.)*"'), r'\1"' + MASK + '"'),
    (re.compile(r"(?i)('" + _SECRET_WORDS + r"'\s*:\s*)'(?:[^'\\]|\\.)*'"), r"\1'" + MASK + "'"),
    (re.compile(r"(?i)\b(" + _SECRET_WORDS + r")=([^&\s,;\"']+)"), r"\1=" + MASK),
]

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears from now on (values shorter than 6 are ignored)."""
    if value and len(value) >= 6:
        with _lock:
            _registered.add(value)


def mask(text: str) -> str:
    """`text` with every known secret replaced."""
    with _lock:
        values = sorted(_registered, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Rewrites each record so no secret leaves the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the message (arguments merged in) and the exception text; always keep the record."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = mask(message)
        record.args = None
        if record.exc_info:
            record.exc_text = mask("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        dims = getattr(record, "custom_dimensions", None)
        if isinstance(dims, dict):
            record.custom_dimensions = json.loads(mask(json.dumps(dims, default=str)))
        record.correlation_id = correlation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        body: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "correlationId": getattr(record, "correlation_id", correlation_id.get()),
        }
        dims = getattr(record, "custom_dimensions", None)
        if isinstance(dims, dict):
            body.update({k: v for k, v in dims.items() if v is not None})
        if record.exc_text:
            body["exception"] = record.exc_text
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines with the correlation id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(correlation_id)s] %(name)s: %(message)s")


def configure(*, fmt: str = "text", level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Install the masked handler on the root logger (replacing one installed before)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bridge", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(SecretMaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


@contextmanager
def correlation(value: str) -> Iterator[str]:
    """Run a block with `value` as the correlation id of every log line."""
    token = correlation_id.set(value)
    try:
        yield value
    finally:
        correlation_id.reset(token)
