"""The pure parts of `chaosguard apply`: reading the outcome from a status, the event lines, the JUnit case."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xmlschema

from chaosguard.cli import apply as cli_apply
from chaosguard.cli import junit
from chaosguard.cli.apply import Applied, Baseline, Outcome, Seen, decide, new_events, refusal_lines

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).resolve().parents[1] / "support" / "junit-10.xsd"))
APPLIED = Applied("shop", "checkout-kill", Baseline(2, frozenset({"r1"})), created=True)


def experiment(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "checkout-kill", "namespace": "shop", "generation": 2}, "spec": spec, "status": status}


def test_the_operators_joined_refusals_become_validates_lines() -> None:
    message = "REFUSED max-duration: 10m is over 5m; shorten it; REFUSED namespace-opt-in: label shop"
    assert refusal_lines(message) == [
        "REFUSED max-duration: 10m is over 5m; shorten it",
        "REFUSED namespace-opt-in: label shop",
    ]
    assert refusal_lines("an approver is missing") == ["REFUSED policy: an approver is missing"]


def test_a_refusal_counts_only_once_the_operator_judged_the_applied_generation() -> None:
    stale = experiment({"phase": "Rejected", "observedGeneration": 1, "message": "REFUSED x: old"})
    assert decide(stale, APPLIED.baseline) is None
    fresh = experiment({"phase": "Rejected", "observedGeneration": 2, "message": "REFUSED x: new"})
    outcome = decide(fresh, APPLIED.baseline)
    assert outcome is not None and outcome.code == cli_apply.EXIT_REFUSED and outcome.lines == ("REFUSED x: new",)


def test_only_a_run_newer_than_the_baseline_ends_the_wait() -> None:
    old = {"id": "r1", "phase": "Completed"}
    replaced = {"id": "r1", "phase": "Aborted", "reason": "SpecChanged"}  # the applied edit stopped the old run
    assert decide(experiment({"phase": "Pending", "lastRun": replaced}), APPLIED.baseline) is None
    assert (
        decide(experiment({"phase": "Running", "lastRun": old, "currentRun": {"id": "r2"}}), APPLIED.baseline) is None
    )
    assert decide(experiment({"phase": "Completed", "lastRun": old}), APPLIED.baseline) is None
    aborted = {
        "id": "r2",
        "phase": "Aborted",
        "reason": "SLIBreached",
        "message": "aborted by the SLI guard",
        "startedAt": "2026-11-24T14:00:00Z",
        "finishedAt": "2026-11-24T14:00:42Z",
        "abort": {"condition": "errors", "operator": "<", "threshold": 0.01, "value": "0.2", "at": "x"},
    }
    outcome = decide(experiment({"phase": "Aborted", "lastRun": aborted}), APPLIED.baseline)
    assert outcome is not None
    assert (outcome.code, outcome.verdict, outcome.run_id, outcome.seconds) == (1, "Aborted", "r2", 42.0)
    assert outcome.lines == ("SLI errors: 0.2 (healthy while < 0.01)",)
    completed = decide(experiment({"phase": "Completed", "lastRun": {**aborted, "phase": "Completed"}}), Baseline(2))
    assert completed is not None and completed.code == cli_apply.EXIT_COMPLETED


def test_each_event_is_reported_once() -> None:
    run = {
        "id": "r2",
        "deadline": "2026-11-24T14:05:00Z",
        "kills": [{"uid": "u1", "round": 1, "result": "Killed", "namespace": "shop", "name": "p1", "method": "evict"}],
        "faults": [{"namespace": "shop", "name": "p2", "state": "Active"}],
        "slis": [
            {"name": "errors", "status": "Holding", "value": "0.001", "at": "2026-11-24T14:00:01Z", "samples": 1},
            {"name": "policy/quiet", "operator": ">", "threshold": 0.9, "status": "Pending", "value": "0.8"},
        ],
    }
    spec = {"steadyState": {"conditions": [{"name": "errors", "operator": "<", "threshold": 0.01}]}}
    seen = Seen()
    lines = new_events(seen, experiment({"phase": "Running", "currentRun": run}, **spec))
    assert lines == [
        "phase Running",
        "run r2 (apply), deadline 2026-11-24T14:05:00Z",
        "kill shop/p1 (-): Killed by evict",
        "fault shop/p2: Active",
        "SLI errors=0.001 (healthy while < 0.01: Holding)",
        "SLI policy/quiet=0.8 (healthy while > 0.9: Pending)",
    ]
    assert new_events(seen, experiment({"phase": "Running", "currentRun": run}, **spec)) == []
    run["kills"][0]["recoveredAfterSeconds"] = 8.25
    assert new_events(seen, experiment({"phase": "Running", "currentRun": run}, **spec)) == [
        "recovered shop/p1: full Ready strength 8.2s after shop/p1"
    ]


def test_junit_cases_are_valid_for_every_outcome(tmp_path: Path) -> None:
    outcomes = [
        Outcome(0, "Completed", "run r2 Completed", run_id="r2", seconds=61.5),
        Outcome(1, "Aborted", "run r2 Aborted (SLIBreached): aborted", ("SLI errors: 0.2",), "r2", 12.0),
        Outcome(2, "Rejected", "refused", ("REFUSED max-duration: too long",)),
        Outcome(3, "TimedOut", "did not end within --timeout 10m; aborted", seconds=600.0),
    ]
    cases = [cli_apply.junit_case(APPLIED, outcome) for outcome in outcomes]
    path = tmp_path / "junit.xml"
    path.write_text(junit.render(cases, datetime(2026, 11, 24, 14, tzinfo=UTC)))
    SCHEMA.validate(str(path))
    root = ElementTree.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "1")
    elements = root.findall("./testsuite/testcase")
    assert [e.get("name") for e in elements] == ["r2", "r2", "checkout-kill (Rejected)", "checkout-kill (TimedOut)"]
    failure = elements[1].find("failure")
    assert failure is not None and failure.get("message") == "run r2 Aborted (SLIBreached): aborted"
    assert "SLI errors: 0.2" in (failure.text or "")
    error = elements[2].find("error")
    assert error is not None and error.get("message") == "REFUSED max-duration: too long"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_live_line_is_redrawn_and_cleared_before_each_event() -> None:
    run = {"id": "r2", "deadline": "2026-11-24T14:05:00Z", "kills": [{"result": "Killed"}], "faults": []}
    line = cli_apply.live_line(
        experiment({"phase": "Running", "currentRun": run}), 65.0, datetime(2026, 11, 24, 14, 4, 30, tzinfo=UTC)
    )
    assert line == "1m5s | Running | 1 killed, 0 faults active | ends in 30s"
    out = Terminal()
    console = cli_apply.Console(out, started=0.0)
    console.draw(line)
    console.event("phase Completed")
    written = out.getvalue()
    assert written.startswith("\r\x1b[K" + line + "\r\x1b[K[")
    assert written.endswith("] phase Completed\n")
    quiet = io.StringIO()
    cli_apply.Console(quiet, started=0.0).draw(line)
    assert quiet.getvalue() == ""
