"""JUnit XML for CI systems: one test case per experiment run, as `chaosguard apply --junit` writes it.

The shape is the one Jenkins, GitLab, GitHub test reporters and Surefire read (the `junit-10.xsd`
schema): `<testsuites><testsuite><testcase>`, an Aborted or Failed run as a `<failure>` whose
message is the abort reason, a refused or invalid experiment (no run at all) as an `<error>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

SUITE_NAME = "chaosguard"


@dataclass(frozen=True)
class Case:
    """One run's verdict. `problem` is "" for a pass, "failure" for a run that ended badly (Aborted,
    Failed, timed out, interrupted) and "error" when the experiment never ran (refused, invalid)."""

    classname: str  # namespace/experiment
    name: str  # the run id, or what happened instead of a run
    seconds: float
    problem: str = ""
    kind: str = ""  # the phase or verdict, e.g. Aborted
    message: str = ""  # one line: the reason and what to look at
    detail: str = ""  # the body of the failure element: the full story
    output: str = ""  # system-out: the progress lines


def _time(seconds: float) -> str:
    return f"{max(0.0, seconds):.3f}"


def render(cases: Sequence[Case], timestamp: datetime) -> str:
    failures = sum(1 for case in cases if case.problem == "failure")
    errors = sum(1 for case in cases if case.problem == "error")
    total = sum(case.seconds for case in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": str(errors)}
    root = ElementTree.Element("testsuites", {"name": SUITE_NAME, **counts, "time": _time(total)})
    suite_attributes = {"skipped": "0", "time": _time(total), "timestamp": timestamp.isoformat(timespec="seconds")}
    suite = ElementTree.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts, **suite_attributes})
    for case in cases:
        element = ElementTree.SubElement(
            suite, "testcase", {"classname": case.classname, "name": case.name, "time": _time(case.seconds)}
        )
        if case.problem:
            problem = ElementTree.SubElement(element, case.problem, {"type": case.kind, "message": case.message})
            problem.text = case.detail or case.message
        if case.output:
            ElementTree.SubElement(element, "system-out").text = case.output
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
