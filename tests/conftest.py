"""Test configuration: every module under tests/fixtures is a pytest plugin of shared fixtures.

Servers (Azurite, the Entra simulator, the vault emulator, the function host) are started by
session fixtures on free ports of 127.0.0.1 and stopped when the session ends.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
)
