"""Rotation under faults on the real stack (a smaller round of `python -m bench.rotation_faults_stack`):
the simulator and the vault emulator inject 429s, 5xx, dropped connections and ambiguous writes, and
workers are killed mid-rotation. No password is lost, every rotation is recorded, the audit chains
verify, and no password reaches a log line or the audit log."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from bench.rotation import Stack, _connection
from bench.rotation_faults_stack import exercise
from tests.fixtures.entra import EntraFixture
from tests.fixtures.vault import VaultFixture


async def test_rotations_under_injected_faults_and_kills_lose_nothing(
        entra: EntraFixture, vault: VaultFixture, azurite_connection_string: str, tls_files: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack = Stack(entra.tenant_id, entra.url, vault.url, azurite_connection_string, str(tls_files.ca))
    conn = _connection(entra.tenant_id).model_copy(update={"name": f"f{random.randrange(10**6)}"})
    report = await exercise(stack, conn, entra_admin=entra.admin, vault_faults=vault.running.set_faults, rounds=4,
                            output=lambda: caplog.text)
    assert report.ok, report.line()
    assert len(report.outcomes) == 120
    assert "rotated" in report.outcomes.values()
    assert "refused" in report.outcomes.values()
