"""Writes the golden report files from the current code: `.venv/bin/python -m tests.unit.report_golden.regenerate`.

Run it only when a change of the report's output is meant, then read the diff of the golden files: it is
the change every user will see. tests/unit/test_report_golden.py compares the code's output with them."""

from __future__ import annotations

from pathlib import Path

from tests.unit.report_golden.cases import cases

HERE = Path(__file__).parent


def main() -> None:
    for case in cases():
        for suffix, render in ((".md", case.markdown), (".html", case.html)):
            (HERE / f"{case.name}{suffix}").write_text(render(), encoding="utf-8")
    print(f"wrote {2 * len(cases())} golden files in {HERE}")


if __name__ == "__main__":
    main()
