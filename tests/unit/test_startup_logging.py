"""One start-up path: importing `function_app` configures logging, masking and correlation ids itself.

In Azure the Python worker imports `function_app` with its own handler already on the root logger (it
forwards every line to the Functions host); no local host is involved. Both cases run in a fresh
interpreter here. The masking set is bounded and its entries expire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared import logs

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Zq7!mK2#pL9@xW4$"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"

LOG_LINES = f"""
import logging
from shared import logs
logs.register_secret({PASSWORD!r})
with logs.correlation("corr-start"):
    logging.getLogger("functions.test").info("delivered %s with Authorization: Bearer {JWT}", {PASSWORD!r})
    logging.getLogger("functions.test").debug("a debug line")
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "APPLICATIONINSIGHTS_"))}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, check=True)


def test_importing_function_app_alone_logs_json_masked_with_correlation_ids() -> None:
    done = _run("import function_app\n" + LOG_LINES, LOG_FORMAT="json", LOG_LEVEL="INFO")
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    line = next(ln for ln in lines if ln["logger"] == "functions.test")
    assert line["correlationId"] == "corr-start"
    assert PASSWORD not in done.stderr
    assert JWT not in done.stderr
    assert logs.MASK in line["message"]
    assert "a debug line" not in done.stderr  # LOG_LEVEL is applied


def test_the_workers_handler_gets_masking_and_format_when_function_app_is_imported() -> None:
    worker = """
import logging, sys
forward = logging.StreamHandler(sys.stdout)  # stands in for the worker's handler that forwards to the host
logging.getLogger().addHandler(forward)
import function_app
assert logging.getLogger().handlers == [forward], logging.getLogger().handlers  # no second console in Azure
"""
    done = _run(worker + LOG_LINES, LOG_FORMAT="text", LOG_LEVEL="DEBUG")
    assert "[corr-start] functions.test: delivered" in done.stdout
    assert "a debug line" in done.stdout
    assert PASSWORD not in done.stdout
    assert JWT not in done.stdout


def test_the_masking_set_is_bounded() -> None:
    secrets = logs.ExpiringSecrets(limit=3, ttl=60)
    for n in range(1000):
        secrets.add(f"secret-value-{n:04d}")
    assert len(secrets) == 3
    assert set(secrets.values()) == {"secret-value-0999", "secret-value-0998", "secret-value-0997"}
    assert logs.SECRETS.limit <= 256


def test_masked_values_expire() -> None:
    now = [1000.0]
    secrets = logs.ExpiringSecrets(limit=10, ttl=60, clock=lambda: now[0])
    secrets.add("first-secret")
    now[0] += 30
    secrets.add("second-secret")
    assert set(secrets.values()) == {"first-secret", "second-secret"}
    now[0] += 31
    assert secrets.values() == ["second-secret"]
    secrets.add("second-secret")  # registering again renews it
    now[0] += 59
    assert secrets.values() == ["second-secret"]
    now[0] += 2
    assert secrets.values() == []
    assert len(secrets) == 0
    secrets.add("short")  # too short to mask safely
    assert secrets.values() == []
