"""Rotation under random Graph, Key Vault and worker faults: no password is ever lost.

The full run (1,000 rotations) is `python -m bench.rotation_faults`; here a smaller one per seed.
"""

from __future__ import annotations

import pytest

import shared.domain.rotation as policy
from bench.rotation_faults import run


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_rotations_under_faults_keep_every_password_deliverable(seed: int) -> None:
    report = await run(300, seed=seed)
    assert report.kills > 0, report.line()
    assert report.graph_writes_applied > 0, report.line()
    assert report.lost_passwords == 0, report.line()
    assert report.unresolved == 0, report.line()
    assert report.poisoned_without_audit == 0, report.line()
    assert report.secrets_in_output == 0, report.line()
    assert report.completed + report.refused + report.failed_with_reason == report.rotations


async def test_the_suite_notices_a_protocol_that_forgets_possibly_current_versions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_view = policy.view

    def forgetful(versions: list[policy.VersionInfo]) -> policy.VersionView:
        return policy.VersionView(current=real_view(versions).current, possibly_current=[])

    monkeypatch.setattr(policy, "view", forgetful)
    report = await run(500, seed=3)
    assert report.lost_passwords > 0, report.line()
