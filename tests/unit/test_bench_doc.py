"""docs/performance.md: the generated tables, then the hand-written findings that every
regeneration appends from benchmarks/FINDINGS.md; the dated history is docs/performance-log.md."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.report import write_doc

ROOT = Path(__file__).resolve().parents[2]
FINDINGS = ROOT / "benchmarks" / "FINDINGS.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_a_regenerated_page_ends_with_the_hand_written_findings(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "performance.md"
    write_doc({}, doc)
    text = doc.read_text()
    assert text.startswith("# Performance\n")
    assert text.endswith("\n" + FINDINGS.read_text().strip() + "\n")


def test_the_page_in_the_repository_carries_the_current_findings() -> None:
    # After an edit to benchmarks/FINDINGS.md: `streamclf bench --doc-only` rewrites the page.
    page = (DOCS / "performance.md").read_text()
    assert page.endswith("\n" + FINDINGS.read_text().strip() + "\n")


def test_links_between_the_page_and_its_log_resolve() -> None:
    for path in (FINDINGS, DOCS / "performance-log.md"):
        links = LINK.findall(path.read_text())
        assert any(link.startswith("performance") for link in links), path
        for link in links:
            if "://" in link:
                continue
            target, _, anchor = link.partition("#")
            file = DOCS / target  # FINDINGS.md is read as part of docs/performance.md
            assert file.exists(), f"{path.name}: {link}"
            if anchor:
                headings = [line for line in file.read_text().splitlines()
                            if line.startswith("#")]
                assert anchor in {_anchor(h) for h in headings}, f"{path.name}: {link}"
