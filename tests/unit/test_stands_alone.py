"""The project stands alone: nothing tracked cites a file outside the repository, and the
architecture page that comments cite exists with the sections they name."""

from __future__ import annotations

import re
import subprocess  # nosec B404 - git ls-files, fixed arguments
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Files the project once leaned on that are not part of it (spelled in pieces so this file is clean).
OUTSIDE = ("DESIGN" + ".md", "FACTS" + ".md", "../" + "shared")


def _tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)  # nosec
    names = listed.stdout.splitlines() if listed.returncode == 0 else []
    return [ROOT / n for n in names if (ROOT / n).is_file()] or [p for p in ROOT.rglob("*") if p.is_file()]


def test_no_tracked_file_cites_a_file_outside_the_repository() -> None:
    found = []
    for path in _tracked():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for needle in OUTSIDE:
            if needle in text:
                found.append(f"{path.relative_to(ROOT)}: {needle}")
    assert found == []


def test_the_architecture_page_has_the_sections_comments_cite() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^## (.+)$", page, re.MULTILINE))
    assert {"Layers", "Clouds", "Runtime topology", "Invariants", "Errors", "Limits", "Facts the code relies on",
            "Flows", "Adding a capability"} <= headings
    invariants = re.findall(r"^(\d+)\. \*\*", page, re.MULTILINE)
    assert invariants[:9] == [str(n) for n in range(1, 10)]
    cited = set()
    for path in _tracked():
        if path.suffix in (".py", ".bicep", ".md"):
            text = path.read_text(encoding="utf-8", errors="ignore")
            found = re.findall(r"docs/architecture\.md, \"?([A-Z][a-z]+(?:\s+[a-z]+)*)", text)
            cited |= {" ".join(name.split()) for name in found}
    missing = {c for c in cited if c not in headings and not c.startswith(("Invariant", "invariant"))}
    assert missing == set(), missing


def test_every_limit_and_fact_links_to_microsoft() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    limits = page[page.index("## Limits"):page.index("## Facts the code relies on")]
    rows = [r for r in limits.splitlines() if r.startswith("| ") and not r.startswith(("| limit", "|---"))]
    assert rows
    for row in rows:
        assert "https://learn.microsoft.com/" in row or row.split("|")[3].strip() == "same page", row
    facts = page[page.index("## Facts the code relies on"):page.index("## Flows")]
    for bullet in re.split(r"\n- ", facts)[1:]:
        assert "https://learn.microsoft.com/" in bullet, bullet[:80]
