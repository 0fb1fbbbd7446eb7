"""Every report format, byte for byte, against the golden files written from the same inputs by
tests/unit/report_golden/regenerate.py (which says when and how to rewrite them)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.htmlcheck import well_formed
from tests.unit.report_golden.cases import Case, cases
from tests.unit.report_golden.regenerate import HERE

CASES = cases()


def test_every_case_has_its_golden_files_and_no_file_is_orphaned() -> None:
    expected = {f"{case.name}{suffix}" for case in CASES for suffix in (".md", ".html")}
    present = {path.name for path in HERE.iterdir() if path.suffix in (".md", ".html")}
    assert present == expected


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_the_report_matches_its_golden_file_byte_for_byte(case: Case, suffix: str) -> None:
    render: Callable[[], str] = case.markdown if suffix == ".md" else case.html
    golden = (HERE / f"{case.name}{suffix}").read_text(encoding="utf-8")
    made = render()
    if suffix == ".html":
        well_formed(made)
    assert made == golden, f"{case.name}{suffix} differs; if meant, regenerate (see report_golden/regenerate.py)"
