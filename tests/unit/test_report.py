"""Game-day reports from experiment objects shaped exactly as the API returns them (the shapes are
copied from status objects of real runs against the local control plane)."""

from __future__ import annotations

import copy
import html
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosguard.api.models import ComparisonOperator, SliSummary
from chaosguard.cli import report
from chaosguard.decisions.samples import TREND_POINTS, record_verdict
from chaosguard.decisions.slo import ConditionResult, ConditionStatus, GuardState, Verdict, VerdictKind
from tests.support.htmlcheck import SVG_NS, sample_circles, svgs, well_formed

NS = "shop"
BREACH_SERIES = 'demo_error_ratio{app="checkout",instance="127.0.0.1:35311",job="demo"}'
BREACH_MESSAGE = f"SLI error-ratio breached: value 0.5 {BREACH_SERIES} is not < 0.05 (for 0s, since 00:48:39Z)"


# --------------------------------------------------------------------------- realistic objects


def kill(
    name: str,
    at: str,
    result: str = "Killed",
    recovered: float | None = 8.92,
    round_: int = 1,
    message: str = "eviction accepted",
    method: str = "eviction",
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "at": at,
        "message": message,
        "method": method,
        "name": name,
        "namespace": NS,
        "result": result,
        "round": round_,
        "uid": f"uid-{name}",
        "workload": "Deployment/checkout",
    }
    if recovered is not None:
        record["recoveredAfterSeconds"] = recovered
    return record


CAP_MESSAGE = (
    "REFUSED max-percentage: killing shop/checkout-84df48c9ff-7gtsz would take 3 of 5 pods of Deployment/checkout "
    "down, above the 40% (2 pods) allowed by ChaosPolicy/cap-shop; wait for the workload to recover or add replicas"
)


def completed_run(**overrides: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "deadline": "2026-11-22T00:48:23.018473Z",
        "faults": [],
        "finishedAt": "2026-11-22T00:48:29.281274Z",
        "id": "r1-20261122T004820Z",
        "kills": [
            kill("checkout-84df48c9ff-9mnxf", "2026-11-22T00:48:20.347983Z", recovered=8.92),
            kill("checkout-84df48c9ff-5kwlb", "2026-11-22T00:48:20.550354Z", recovered=8.718),
            kill(
                "checkout-84df48c9ff-7gtsz",
                "2026-11-22T00:48:20.693643Z",
                result="Capped",
                recovered=None,
                message=CAP_MESSAGE,
                method="none",
            ),
        ],
        "killsTotal": 2,
        "message": "run r1-20261122T004820Z completed",
        "phase": "Completed",
        "reason": "RunCompleted",
        "roundsDone": 1,
        "slis": [],
        "sliState": {},
        "startedAt": "2026-11-22T00:48:20.018473Z",
        "steadyStateAfter": "",
        "steadyStateBefore": "",
        "targets": [],
        "trigger": "apply",
    }
    run.update(overrides)
    return run


def sample(at: str, status: str, value: str | None) -> dict[str, str]:
    point = {"at": at, "series": BREACH_SERIES, "status": status}
    if value is not None:
        point["value"] = value
    return point


def slis_of(samples: dict[str, list[dict[str, str]]], operator: str = "<", threshold: float = 0.05) -> list[Any]:
    """`currentRun.slis` as the operator writes it after these samples (through the writer's own
    decisions.samples), each condition's samples in time order."""
    slis: list[SliSummary] = []
    for name, points in samples.items():
        for point in points:
            value = float(point["value"]) if "value" in point else None
            result = ConditionResult(
                name, ConditionStatus(point["status"]), value, None, 1, "", ComparisonOperator(operator), threshold
            )
            at = datetime.fromisoformat(point["at"].replace("Z", "+00:00"))
            slis = record_verdict(slis, Verdict(VerdictKind.HEALTHY, False, "", at, GuardState(), results=(result,)))
    return [sli.model_dump(by_alias=True, mode="json", exclude_none=True) for sli in slis]


def breach_run(**overrides: Any) -> dict[str, Any]:
    run = completed_run(
        id="r2-20261122T004836Z",
        startedAt="2026-11-22T00:48:36.484125Z",
        deadline="2026-11-22T00:50:36.484125Z",
        finishedAt="2026-11-22T00:48:39.618304Z",
        phase="Aborted",
        reason="SLIBreached",
        message=f"aborted by the SLI guard: {BREACH_MESSAGE}",
        kills=[
            kill("checkout-846bd5c59f-fxjjm", "2026-11-22T00:48:36.812016Z", recovered=0.215, round_=1),
            kill("checkout-846bd5c59f-sbkcr", "2026-11-22T00:48:38.620699Z", recovered=0.2, round_=2),
        ],
        roundsDone=2,
        abort={
            "at": "2026-11-22T00:48:39.611658Z",
            "condition": "error-ratio",
            "message": BREACH_MESSAGE,
            "operator": "<",
            "query": 'demo_error_ratio{app="checkout"}',
            "series": BREACH_SERIES,
            "since": "2026-11-22T00:48:39.611658Z",
            "threshold": 0.05,
            "value": "0.5",
        },
        slis=slis_of(
            {
                "error-ratio": [
                    sample("2026-11-22T00:48:36.602570Z", "Holding", "0.001"),
                    sample("2026-11-22T00:48:37.603983Z", "Holding", "0.001"),
                    sample("2026-11-22T00:48:38.610549Z", "Holding", "0.001"),
                    sample("2026-11-22T00:48:39.611658Z", "Breached", "0.5"),
                ]
            }
        ),
        sliState={"error-ratio": {BREACH_SERIES: "2026-11-22T00:48:39.611658Z"}},
    )
    run.update(overrides)
    return run


GUARDED_SPEC: dict[str, Any] = {
    "action": "pod-kill",
    "dryRun": False,
    "duration": "2m",
    "interval": "2s",
    "podKill": {"gracePeriodSeconds": 1, "respectDisruptionBudgets": True},
    "steadyState": {
        "conditions": [
            {
                "for": 0,
                "name": "error-ratio",
                "operator": "<",
                "query": 'demo_error_ratio{app="checkout"}',
                "threshold": 0.05,
            }
        ],
        "interval": "1s",
        "onUnavailable": "abort",
        "prometheus": {"timeout": "500ms", "url": "http://127.0.0.1:49149"},
        "recovery": {"timeout": "20s"},
    },
    "target": {"mode": "one", "selector": {"matchLabels": {"app": "checkout"}}},
}

PLAIN_SPEC: dict[str, Any] = {
    "action": "pod-kill",
    "dryRun": False,
    "duration": "3s",
    "podKill": {"gracePeriodSeconds": 1, "respectDisruptionBudgets": True},
    "target": {"mode": "fixed", "selector": {"matchLabels": {"app": "checkout"}}, "value": 4},
}


def experiment(
    spec: dict[str, Any],
    last: dict[str, Any] | None,
    history: list[dict[str, Any]] | None = None,
    current: dict[str, Any] | None = None,
    name: str = "checkout-pod-kill",
) -> dict[str, Any]:
    runs = [r for r in [*(history or []), last] if r is not None]
    status: dict[str, Any] = {
        "conditions": [],
        "history": copy.deepcopy(runs),
        "message": (current or last or {}).get("message", ""),
        "observedGeneration": 1,
        "phase": "Running" if current else (last or {}).get("phase", "Scheduled"),
        "runsTotal": len(runs) + (1 if current else 0),
    }
    if last is not None:
        status["lastRun"] = last
    if current is not None:
        status["currentRun"] = current
    return {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name, "namespace": NS, "generation": 1, "uid": "0b6c"},
        "spec": copy.deepcopy(spec),
        "status": status,
    }


# --------------------------------------------------------------------------- the runs the tests below report on
# (also the inputs of the golden files: tests/unit/report_golden/cases.py)


def did_not_recover_run() -> dict[str, Any]:
    return completed_run(
        phase="Failed",
        reason="DidNotRecover",
        message="run r1: shop/Deployment/checkout did not recover to full Ready strength within 5m after the run; "
        "this is the finding: look at why the system does not heal on its own",
        kills=[
            kill("checkout-a", "2026-11-22T00:48:20.347983Z", recovered=42.5),
            kill("checkout-b", "2026-11-22T00:48:21.000000Z", recovered=None, round_=2),
        ],
    )


def unavailable_run() -> dict[str, Any]:
    message = (
        "SLI error-ratio unavailable (Unreachable): cannot connect to http://127.0.0.1:49149: Connection refused "
        "(onUnavailable: abort)"
    )
    return breach_run(
        reason="SLIUnavailable",
        message=f"aborted by the SLI guard: {message}",
        abort={
            "at": "2026-11-22T00:48:39.611658Z",
            "condition": "error-ratio",
            "query": 'demo_error_ratio{app="checkout"}',
            "message": message,
        },
        slis=slis_of(
            {
                "error-ratio": [
                    sample("2026-11-22T00:48:36.602570Z", "Holding", "0.001"),
                    sample("2026-11-22T00:48:37.603983Z", "Holding", "0.001"),
                    {"at": "2026-11-22T00:48:38.610549Z", "status": "Unavailable"},
                    {"at": "2026-11-22T00:48:39.611658Z", "status": "Unavailable"},
                ]
            }
        ),
    )


def near_miss_experiment() -> dict[str, Any]:
    run = completed_run(
        slis=slis_of(
            {
                "error-ratio": [
                    sample("2026-11-22T00:48:20.1Z", "Holding", "0.001"),
                    sample("2026-11-22T00:48:21.1Z", "Pending", "0.2"),
                    {"at": "2026-11-22T00:48:22.1Z", "status": "Unavailable"},
                    sample("2026-11-22T00:48:23.1Z", "Holding", "0.001"),
                ]
            }
        ),
        steadyStateAfter="could not be checked (onUnavailable: continue): SLI error-ratio unavailable",
    )
    spec = copy.deepcopy(GUARDED_SPEC)
    spec["steadyState"]["conditions"][0]["for"] = "10s"
    return experiment(spec, run)


def clean_guarded_run() -> dict[str, Any]:
    return completed_run(
        kills=[kill("checkout-a", "2026-11-22T00:48:20.347983Z", recovered=1.5)],
        killsTotal=1,
        slis=slis_of({"error-ratio": [sample("2026-11-22T00:48:20.1Z", "Holding", "0.001")]}),
        steadyStateAfter="held again at 2026-11-22T00:48:29.2+00:00",
    )


def ended_by(reason: str, message: str) -> dict[str, Any]:
    run = completed_run(phase="Aborted", reason=reason, message=message)
    if reason == "SteadyStateNotHeld":
        run["kills"] = []
    return run


def dry_run_experiment() -> dict[str, Any]:
    dry = completed_run(
        kills=[kill("checkout-a", "2026-11-22T00:48:20.3Z", result="WouldKill", recovered=None, method="dry-run")],
        killsTotal=0,
    )
    return experiment({**PLAIN_SPEC, "dryRun": True}, dry)


def latency_spec_and_run() -> tuple[dict[str, Any], dict[str, Any]]:
    faults = [
        {
            "namespace": NS,
            "name": "checkout-a",
            "uid": "uid-a",
            "workload": "Deployment/checkout",
            "container": "chaosguard-latency-r1",
            "state": "Removed",
            "injectedAt": "2026-11-22T00:48:20.5Z",
            "deadline": "2026-11-22T00:48:23.0Z",
            "removedAt": "2026-11-22T00:48:21.7Z",
            "removedBy": "abort (exec clear)",
            "message": "",
        },
        {
            "namespace": NS,
            "name": "checkout-b",
            "uid": "uid-b",
            "workload": "Deployment/checkout",
            "container": "chaosguard-latency-r1",
            "state": "Active",
            "injectedAt": "2026-11-22T00:48:20.6Z",
            "deadline": "2026-11-22T00:48:23.0Z",
        },
    ]
    spec = {
        "action": "latency",
        "latency": {"delay": "200ms"},
        "duration": "3s",
        "target": {"mode": "all", "selector": {"matchLabels": {"app": "checkout"}}},
    }
    run = completed_run(
        kills=[], killsTotal=0, injectionsTotal=2, faults=faults, phase="Aborted", reason="AbortRequested"
    )
    return spec, run


def partition_spec_and_run() -> tuple[dict[str, Any], dict[str, Any]]:
    faults = [
        {
            "namespace": NS,
            "name": "checkout-a",
            "uid": "uid-a",
            "workload": "Deployment/checkout",
            "container": "chaosguard-partition-r1",
            "impairment": "partition (both) from 10.1.0.0/16 ports 5432",
            "state": "Removed",
            "injectedAt": "2026-11-22T00:48:20.5Z",
            "deadline": "2026-11-22T00:48:23.0Z",
            "removedAt": "2026-11-22T00:48:23.0Z",
            "removedBy": "deadline (the injector's own timer)",
        },
        {
            "namespace": NS,
            "name": "checkout-b",
            "uid": "uid-b",
            "container": "chaosguard-partition-r1",
            "impairment": "partition (both) from 10.1.0.0/16 ports 5432",
            "state": "Failed",
            "message": "the node's kernel lacks a tc module a partition needs",
        },
    ]
    spec = {
        "action": "partition",
        "partition": {"destinationCIDRs": ["10.1.0.0/16"], "ports": [5432]},
        "duration": "3s",
        "target": {"mode": "all", "selector": {"matchLabels": {"app": "checkout"}}},
    }
    run = completed_run(kills=[], killsTotal=0, injectionsTotal=1, faults=faults)
    return spec, run


def in_progress_experiment() -> dict[str, Any]:
    current = breach_run(finishedAt=None, phase="Running", reason="", message="run r2 until 00:50:36", abort=None)
    return experiment(GUARDED_SPEC, completed_run(), current=current)


NASTY = 'pod <script>alert(1)</script> | code=~"5..|4.." : # ;'


def hostile_experiment() -> dict[str, Any]:
    run = completed_run(message=NASTY, kills=[kill("checkout-a", "2026-11-22T00:48:20.3Z", message=NASTY)])
    return experiment(PLAIN_SPEC, run, name="x")


def policy_guard_run() -> dict[str, Any]:
    run = breach_run(reason="PolicySLIBreached")
    run["abort"] = {**run["abort"], "condition": "payments/error-ratio", "policy": "payments"}
    run["slis"] = [{**sli, "name": "payments/error-ratio"} for sli in run["slis"]]
    return run


# --------------------------------------------------------------------------- checks


def threshold_y(svg: Element) -> float:
    line = next(line for line in svg.iter(f"{SVG_NS}line") if line.get("class") == "threshold")
    return float(line.get("y1") or "nan")


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"no section {title!r} in:\n{markdown}"
    return match.group(1)


# --------------------------------------------------------------------------- a completed run


def test_markdown_of_a_completed_run_has_kills_recovery_timeline_and_the_cap() -> None:
    text = report.render_markdown(experiment(PLAIN_SPEC, completed_run()))

    assert text.startswith("# Game day: shop/checkout-pod-kill, run r1-20261122T004820Z\n")
    assert "| Action | pod-kill |" in text
    assert "| Targets | 4 pods matching app=checkout in shop |" in text
    assert "| Recovery | p50 8.8s, max 8.9s |" in text
    kills = section(text, "Kills")
    assert "| 1 | 00:48:20.347 | checkout-84df48c9ff-9mnxf | Deployment/checkout | Killed | eviction | 8.9s |" in kills
    assert "| checkout-84df48c9ff-7gtsz | Deployment/checkout | Capped | none | - |" in kills
    assert "| Deployment/checkout | 2 | 8.8s | 8.9s | - |" in kills

    timeline = section(text, "Timeline")
    gantt = re.search(r"```mermaid\n(gantt\n.*?)\n```", timeline, re.S)
    assert gantt, timeline
    assert "dateFormat YYYY-MM-DD HH:mm:ss.SSS" in gantt.group(1)
    assert len(re.findall(r":milestone, k\d+, ", gantt.group(1))) == 3  # every kill record, capped too
    assert "after checkout-84df48c9ff-9mnxf, back in 8.9s :v1, 2026-11-22 00:48:20.347, 2026-11-22 00:48:29.267" in (
        gantt.group(1)
    )
    rows = [line for line in timeline.splitlines() if line.startswith("| 00:")]
    assert rows[0].startswith("| 00:48:20.018 | +0.0s | run r1-20261122T004820Z started")
    assert "killed pod checkout-84df48c9ff-9mnxf of Deployment/checkout by eviction" in rows[1]
    # both kills came back in one check of the operator: one recovery line, not two
    recoveries = [row for row in rows if "back at full Ready strength" in row]
    assert len(recoveries) == 1 and "8.9s after the first of 2 pods were killed" in recoveries[0]
    assert rows[-1].startswith("| 00:48:29.281 | +9.3s | run Completed (RunCompleted)")
    assert [row.split(" | ")[0] for row in rows] == sorted(row.split(" | ")[0] for row in rows)

    next_steps = section(text, "What to look at next")
    assert "1 kill(s) were stopped by the blast-radius cap" in next_steps and CAP_MESSAGE in next_steps
    assert "This run had no SLI guard" in next_steps
    assert "## SLIs" not in text


def test_html_of_a_completed_run_is_well_formed_and_self_contained() -> None:
    page = report.render_html(experiment(PLAIN_SPEC, completed_run()))
    text = well_formed(page)
    assert "checkout-84df48c9ff-9mnxf" in text and "checkout-84df48c9ff-5kwlb" in text
    assert "8.9s" in text and "8.7s" in text and "p50 8.8s, max 8.9s" in text
    assert CAP_MESSAGE in text
    assert '<span class="badge Completed">Completed</span>' in page
    assert svgs(page) == []  # no steadyState: no chart


# --------------------------------------------------------------------------- an SLI breach


def test_breach_report_quotes_the_reason_verbatim_and_names_query_and_threshold() -> None:
    obj = experiment(GUARDED_SPEC, breach_run())
    text = report.render_markdown(obj)

    outcome = section(text, "Outcome")
    assert f"```text\naborted by the SLI guard: {BREACH_MESSAGE}\n```" in outcome
    assert "**Aborted**, reason `SLIBreached`" in outcome
    next_steps = section(text, "What to look at next")
    assert "SLI error-ratio breached and aborted the run" in next_steps
    assert '`demo_error_ratio{app="checkout"}` returned 0.5' in next_steps and "`< 0.05`" in next_steps
    assert "no SLI guard" not in next_steps
    slis = section(text, "SLIs")
    assert "### error-ratio" in slis
    assert '`demo_error_ratio{app="checkout"}` `< 0.05`; 4 sample(s)' in slis
    assert "| 00:48:36.602 to 00:48:38.602 | 3 | Holding | 0.001 |" in slis  # the trend's 1 s slots
    assert "| 00:48:39.602 | 1 | Breached | 0.5 |" in slis
    assert "last 0.5, worst 0.5 at 00:48:39.611" in slis  # the summary keeps the exact moment
    assert "section SLI error-ratio\n    Breached :crit, " in text

    page = report.render_html(obj)
    visible = well_formed(page)
    assert f"aborted by the SLI guard: {BREACH_MESSAGE}" in visible  # verbatim once unescaped
    assert html.escape(BREACH_MESSAGE) in page  # and escaped in the source
    assert "<code>demo_error_ratio{app=&quot;checkout&quot;}</code> returned 0.5" in page  # `x` becomes <code>


def test_breach_chart_draws_every_sample_on_the_right_side_of_the_threshold() -> None:
    page = report.render_html(experiment(GUARDED_SPEC, breach_run()))
    (chart,) = svgs(page)
    circles = sample_circles(chart)
    assert [c.get("data-value") for c in circles] == ["0.001", "0.001", "0.001", "0.5"]
    assert [c.get("class") for c in circles] == ["sample Holding"] * 3 + ["sample Breached"]
    xs = [float(c.get("cx") or "nan") for c in circles]
    assert xs == sorted(xs) and len(set(xs)) == 4
    line = threshold_y(chart)
    ys = [float(c.get("cy") or "nan") for c in circles]
    assert all(y > line for y in ys[:3]), (ys, line)  # 0.001 < 0.05: below the line (SVG y grows downwards)
    assert ys[3] < line
    width, height = (float(v) for v in (chart.get("viewBox") or "").split()[2:])
    assert all(0 <= x <= width for x in xs) and all(0 <= y <= height for y in ys)
    polyline = next(chart.iter(f"{SVG_NS}polyline"))
    assert len((polyline.get("points") or "").split()) == 4
    marks = [m for m in chart.iter(f"{SVG_NS}line") if m.get("class") == "kill-mark"]
    kill_marks = [m for m in marks if m.find(f"{SVG_NS}title") is not None]  # the legend's mark has no title
    assert len(kill_marks) == 2


def test_the_chart_of_an_hour_long_run_spans_the_whole_run_and_keeps_its_breach() -> None:
    """An hour at 1 s is 3,600 samples; status keeps a trend of at most TREND_POINTS points that still
    starts at the first sample, ends at the last, and shows the one breach (with its value)."""
    start = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)
    points = [
        sample(
            (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "Breached" if i == 3599 else ("Pending" if i == 1800 else "Holding"),
            "0.5" if i == 3599 else ("0.07" if i == 1800 else f"{0.001 * (1 + i % 5):.3f}"),
        )
        for i in range(3600)
    ]
    run = breach_run(
        startedAt="2026-11-22T00:00:00Z",
        deadline="2026-11-22T02:00:00Z",
        finishedAt="2026-11-22T00:59:59.5Z",
        kills=[],
        killsTotal=0,
        slis=slis_of({"error-ratio": points}),
    )
    obj = experiment(GUARDED_SPEC, run)
    (chart,) = svgs(report.render_html(obj))
    circles = sample_circles(chart)
    assert 16 < len(circles) <= TREND_POINTS
    xs = [float(c.get("cx") or "nan") for c in circles]
    assert xs[0] == pytest.approx(report.ChartBox().left, abs=1)  # from the run's start ...
    assert xs[-1] >= report.ChartBox().right - report.ChartBox().plot_width / TREND_POINTS  # ... to its end
    assert [c.get("data-value") for c in circles if c.get("class") == "sample Breached"] == ["0.5"]
    assert [c.get("data-value") for c in circles if c.get("class") == "sample Pending"] == ["0.07"]
    text = report.render_markdown(obj)
    assert "; 3600 sample(s)." in text and "last 0.5, worst 0.5 at 00:59:59.000" in text


# --------------------------------------------------------------------------- what to look at next


def test_slow_and_missing_recovery_become_findings_with_commands() -> None:
    run = did_not_recover_run()
    text = report.render_markdown(experiment(PLAIN_SPEC, run))
    next_steps = section(text, "What to look at next")
    assert "1 killed pod(s) not back to full Ready strength: Deployment/checkout" in next_steps
    assert "`kubectl describe deployment/checkout -n shop`" in next_steps
    assert "Deployment/checkout took 42.5s to recover" in next_steps
    assert "| checkout-b | Deployment/checkout | Killed | eviction | not recovered |" in section(text, "Kills")
    assert "```text\nrun r1: shop/Deployment/checkout did not recover" in section(text, "Outcome")
    assert "after checkout-b, not recovered :crit, " in text

    page = report.render_html(experiment(PLAIN_SPEC, run))
    well_formed(page)
    assert '<li class="bad"><strong>1 killed pod(s) not back to full Ready strength' in page


def test_prometheus_unavailable_is_explained_and_unmeasured_samples_are_still_drawn() -> None:
    obj = experiment(GUARDED_SPEC, unavailable_run())
    next_steps = section(report.render_markdown(obj), "What to look at next")
    assert "Prometheus could not answer" in next_steps and "Connection refused" in next_steps
    assert 'Query: `demo_error_ratio{app="checkout"}`' in next_steps

    page = report.render_html(obj)
    well_formed(page)
    (chart,) = svgs(page)
    circles = sample_circles(chart)
    assert [c.get("class") for c in circles] == ["sample Holding"] * 2 + ["sample Unavailable"] * 2
    bottom = max(float(c.get("cy") or "nan") for c in circles)
    assert [float(c.get("cy") or "nan") for c in circles[2:]] == [bottom, bottom]


def test_unavailable_samples_under_continue_and_near_misses_are_findings() -> None:
    text = report.render_markdown(near_miss_experiment())
    next_steps = section(text, "What to look at next")
    assert "SLI error-ratio was unavailable in 1 of 4 samples" in next_steps
    assert "SLI error-ratio breached briefly, shorter than its `for` (10s): a near miss" in next_steps
    assert "up to 0.2 at 00:48:21.100 UTC" in next_steps
    assert "Steady state after the run: could not be checked" in section(text, "Outcome")


def test_a_clean_guarded_run_says_nothing_stood_out() -> None:
    findings = report.build(experiment(GUARDED_SPEC, clean_guarded_run())).findings
    assert [f.title for f in findings] == ["Nothing stood out"]
    assert "within 1.5s and every SLI held" in findings[0].detail


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        ("AbortRequested", "aborted on request: game day over", "Aborted by hand"),
        (
            "Suspended",
            "REFUSED suspended: chaos is suspended by ChaosPolicy/chaosguard-emergency-stop; nothing starts until "
            "spec.suspend is set back to false",
            "chaosguard abort --all --undo",
        ),
        ("SteadyStateNotHeld", "the steady state does not hold before the run", "nothing was injected"),
    ],
)
def test_how_a_run_ended_shapes_the_advice(reason: str, message: str, expected: str) -> None:
    text = report.render_markdown(experiment(GUARDED_SPEC, ended_by(reason, message)))
    assert expected in section(text, "What to look at next")
    assert f"```text\n{message}\n```" in section(text, "Outcome")


def test_dry_run_and_no_targets() -> None:
    assert "This was a dry run: 1 pod(s) would have been killed" in report.render_markdown(dry_run_experiment())

    empty = completed_run(kills=[], killsTotal=0)
    next_steps = section(report.render_markdown(experiment(PLAIN_SPEC, empty)), "What to look at next")
    assert "No pod was chosen" in next_steps and "chaosguard plan" in next_steps


def test_latency_faults_appear_in_timeline_and_table_and_a_leftover_is_flagged() -> None:
    spec, run = latency_spec_and_run()
    text = report.render_markdown(experiment(spec, run))
    timeline = section(text, "Timeline")
    assert "latency injected into pod checkout-a (container chaosguard-latency-r1)" in timeline
    assert "latency removed from pod checkout-a by abort (exec clear)" in timeline
    assert "section Faults" in timeline
    assert "| shop/checkout-b | Deployment/checkout | Active | 00:48:20.600 |" in section(text, "Faults")
    next_steps = section(text, "What to look at next")
    assert "Latency in pod shop/checkout-b is recorded as still Active" in next_steps
    assert "No pod was chosen" not in next_steps
    well_formed(report.render_html(experiment(spec, run)))


# --------------------------------------------------------------------------- choosing the run


def test_the_last_run_is_the_default_and_older_runs_can_be_chosen() -> None:
    first, second = completed_run(), breach_run()
    obj = experiment(GUARDED_SPEC, second, history=[first])
    assert report.build(obj).run.id == "r2-20261122T004836Z"
    older = report.build(obj, "r1-20261122T004820Z")
    assert older.run.id == "r1-20261122T004820Z" and older.run.phase.value == "Completed"
    assert older.run_ids == ("r1-20261122T004820Z", "r2-20261122T004836Z")
    with pytest.raises(report.ReportError, match=r"has no run 'r9'.*r1-20261122T004820Z, r2-20261122T004836Z"):
        report.build(obj, "r9")


def test_lastrun_wins_over_its_trimmed_copy_in_history() -> None:
    full = completed_run()
    trimmed = copy.deepcopy(full)
    trimmed["kills"] = trimmed["kills"][-1:]
    obj = experiment(PLAIN_SPEC, full)
    obj["status"]["history"] = [trimmed]
    assert len(report.build(obj).run.kills) == 3


def test_a_run_in_progress_is_reported_as_such() -> None:
    obj = in_progress_experiment()
    day = report.build(obj)
    assert day.in_progress and day.run.id == "r2-20261122T004836Z"
    text = report.markdown(day)
    assert "**Running (in progress)**" in text and "This run is still in progress" in text
    assert "not back to full Ready strength" not in text  # recovery is still being tracked
    well_formed(report.html_page(day))


def test_an_experiment_without_runs_cannot_be_reported() -> None:
    obj = experiment(PLAIN_SPEC, None)
    obj["status"] = {"phase": "Rejected", "message": "REFUSED suspended: chaos is suspended by ChaosPolicy/x"}
    with pytest.raises(report.ReportError, match=r"shop/checkout-pod-kill has no run .*phase Rejected: REFUSED"):
        report.render_markdown(obj)
    with pytest.raises(report.ReportError, match="unknown report format 'pdf'"):
        report.render(experiment(PLAIN_SPEC, completed_run()), "pdf")


# --------------------------------------------------------------------------- escaping


def test_hostile_text_is_escaped_in_every_format() -> None:
    obj = hostile_experiment()
    page = report.render_html(obj)
    assert "<script" not in page
    assert NASTY in well_formed(page)
    text = report.render_markdown(obj)
    row = next(line for line in section(text, "Kills").splitlines() if "checkout-a" in line)
    assert row.count(" | ") == 7  # the pipes in the message are escaped, the table keeps its 8 columns
    gantt = re.search(r"```mermaid\n(.*?)\n```", text, re.S)
    assert gantt
    for line in gantt.group(1).splitlines()[4:]:
        if line.strip().startswith(("section", "%%")):
            continue
        assert line.count(":") >= 1 and "#" not in line and ";" not in line, line


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=20))
def test_nice_scale_covers_the_values_with_round_ticks(values: list[float]) -> None:
    low, high, ticks = report.nice_scale(values)
    assert low <= min(values) and high >= max(values) and low < high
    assert ticks == sorted(ticks) and ticks[0] == low and ticks[-1] == high
    assert 2 <= len(ticks) <= 12
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 or max(steps) - min(steps) <= 1e-6 * max(abs(high), abs(low), 1)


def test_an_abort_by_a_policy_guard_names_the_policy_and_who_owns_the_threshold() -> None:
    run = policy_guard_run()
    next_steps = section(report.render_markdown(experiment(PLAIN_SPEC, run)), "What to look at next")
    assert "SLI payments/error-ratio (a guard of ChaosPolicy/payments) breached and aborted the run" in next_steps
    assert "ChaosPolicy/payments owns this guard" in next_steps


def test_a_partition_shows_its_impairment_and_kind_in_the_timeline_and_findings() -> None:
    spec, run = partition_spec_and_run()
    text = report.render_markdown(experiment(spec, run))
    timeline = section(text, "Timeline")
    assert (
        "partition (both) from 10.1.0.0/16 ports 5432 injected into pod checkout-a "
        "(container chaosguard-partition-r1)" in timeline
    ), timeline
    assert "partition removed from pod checkout-a by deadline (the injector's own timer)" in timeline
    assert "Partition in pod shop/checkout-b failed" in section(text, "What to look at next")
    well_formed(report.render_html(experiment(spec, run)))


def test_a_latency_run_counts_its_injections_and_kills_no_pod() -> None:
    spec, run = latency_spec_and_run()
    text = report.markdown(report.build(experiment(spec, run)))
    assert "| Faults injected | 2 |" in text
    assert "Pods killed" not in text
