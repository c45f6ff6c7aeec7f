"""Logging: JSON lines or text, a correlation id on every line, and secrets masked in every record.

`configure()` runs once per process, at start-up (`shared.bootstrap.start()`, which `function_app`
calls on import, so in Azure and under the local host alike). It puts the masking filter and the
`LOG_FORMAT` formatter on every handler of the root logger: in Azure that is the Python worker's
handler, which forwards each line to the Functions host and Application Insights; a process with no
handler yet (a plain `import function_app`) gets one writing to stderr. The filter sees every record
from every library: it replaces registered secret values, bearer tokens and JWTs,
`password=`/`client_secret=` style pairs, JSON members named like secrets, and PEM private keys, in
the message, its arguments and the exception text.

Registered values are kept in a bounded set whose entries expire (`ExpiringSecrets`): masking is
meant for the log lines of the request that handled the value, not for the life of the worker.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
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

#: Values registered for masking are dropped after this many seconds ...
SECRET_TTL_SECONDS = 900.0
#: ... and no more than this many are kept (the oldest goes first).
SECRET_LIMIT = 256
#: Shorter values are not registered: they would mask ordinary words.
SECRET_MIN_LENGTH = 6


class ExpiringSecrets:
    """A bounded set of values to mask, each for `ttl` seconds after it was last registered."""

    def __init__(self, *, limit: int = SECRET_LIMIT, ttl: float = SECRET_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.ttl = ttl
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Mask `value` for the next `ttl` seconds (values shorter than SECRET_MIN_LENGTH are ignored)."""
        if not value or len(value) < SECRET_MIN_LENGTH:
            return
        with self._lock:
            self._expiry.pop(value, None)
            self._expiry[value] = self._clock() + self.ttl
            while len(self._expiry) > self.limit:
                self._expiry.popitem(last=False)

    def values(self) -> list[str]:
        """The live values, longest first (expired ones are dropped here)."""
        now = self._clock()
        with self._lock:
            # Entries are in registration order, so expired ones are at the front.
            while self._expiry and next(iter(self._expiry.values())) <= now:
                self._expiry.popitem(last=False)
            live = list(self._expiry)
        return sorted(live, key=len, reverse=True)

    def __len__(self) -> int:
        """How many values are held (expired ones included until the next read)."""
        return len(self._expiry)


SECRETS = ExpiringSecrets()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears for the next SECRET_TTL_SECONDS."""
    SECRETS.add(value)


def mask(text: str) -> str:
    """`text` with every known secret replaced."""
    for value in SECRETS.values():
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


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def _mark(handler: logging.Handler, fmt: str) -> logging.Handler:
    """Give `handler` the masking filter (once) and the formatter of `fmt`."""
    if not any(isinstance(f, SecretMaskingFilter) for f in handler.filters):
        handler.addFilter(SecretMaskingFilter())
    handler.setFormatter(_formatter(fmt))
    return handler


def console(*, fmt: str = "text", stream: Any = None) -> logging.Handler:
    """Add (or replace) this process's own console handler on the root logger, masked."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_bridge", False):
            root.removeHandler(handler)
    handler = _mark(logging.StreamHandler(stream or sys.stderr), fmt)
    handler._bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    return handler


def configure(*, fmt: str = "text", level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Mask, format and correlate every line of the process; returns the console handler.

    Every handler already on the root logger (the Python worker's in Azure, the local host's console)
    gets the masking filter and the `fmt` formatter. A console handler writing to `stream` is added when
    `stream` is given, or (to stderr) when the root logger has no handler at all; in Azure none is added,
    since the worker's handler already forwards every line. Returns the console handler of this module,
    else the first handler of the root logger.
    """
    root = logging.getLogger()
    if stream is not None or not root.handlers:
        console(fmt=fmt, stream=stream)
    ours = next((h for h in root.handlers if getattr(h, "_bridge", False)), root.handlers[0])
    for handler in root.handlers:
        _mark(handler, fmt)
    root.setLevel(level)
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return ours


@contextmanager
def correlation(value: str) -> Iterator[str]:
    """Run a block with `value` as the correlation id of every log line."""
    token = correlation_id.set(value)
    try:
        yield value
    finally:
        correlation_id.reset(token)
