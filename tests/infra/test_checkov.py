"""checkov (bicep framework, offline) finds no failed check and no parsing error in infra/.

checkov exits 0 when it cannot parse a file, so the JSON summary's `parsing_errors` is read too.
Every skip is an inline `// checkov:skip=ID:reason` inside the resource, and each must give a reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.infra.bicep_files import CHECKOV, INFRA, bicep_text

pytestmark = pytest.mark.skipif(
    not CHECKOV.exists(), reason="checkov is not installed: run `make infra-tools` (make test does)"
)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One checkov run over infra/, as its JSON report."""
    done = subprocess.run(
        [str(CHECKOV), "--directory", str(INFRA), "--framework", "bicep", "--skip-download",
         "--output", "json", "--quiet", "--compact"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    data = json.loads(done.stdout)
    # One report for one framework; a list appears only when several frameworks ran.
    assert isinstance(data, dict), "expected a single bicep report"
    return data


def test_checkov_parsed_every_file(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors", summary)
    assert summary["resource_count"] > 20


def test_checkov_finds_no_failed_check(report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)


def test_every_skip_is_justified() -> None:
    skips = re.findall(r"checkov:skip=([A-Z0-9_]+)(:?)([^\n]*)", bicep_text(comments=True))
    assert skips
    for check_id, colon, reason in skips:
        assert colon, f"{check_id} is skipped without a reason"
        assert len(reason.strip()) >= 20, f"{check_id} is skipped without a real reason"


def test_skips_are_listed_in_the_deploy_guide() -> None:
    guide = (INFRA.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    for check_id in set(re.findall(r"checkov:skip=([A-Z0-9_]+)", bicep_text(comments=True))):
        assert check_id in guide, f"{check_id} is skipped in the Bicep but not explained in docs/deploy.md"
