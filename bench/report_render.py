"""Time to render the largest game-day report a status can hold: 100 kill records (the engine keeps
no more) and two SLI conditions with full trends (an hour of 1 s samples each, TREND_POINTS points), as
Markdown and as the HTML page with its
charts; build() included, measured with time.perf_counter, median of 20 renders after one warm-up
(which also compiles the templates)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chaosguard.api.models import ComparisonOperator
from chaosguard.cli import report
from chaosguard.decisions.samples import record_verdict
from chaosguard.decisions.slo import ConditionResult, ConditionStatus, GuardState, Verdict, VerdictKind

KILLS = 100
SAMPLES = 3600
REPEATS = 20
START = datetime(2026, 11, 22, 0, 48, 20, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def largest_experiment() -> dict[str, Any]:
    kills = [
        {
            "at": _at(1 + i * 0.5),
            "name": f"checkout-{i:03d}",
            "namespace": "shop",
            "uid": f"uid-{i}",
            "workload": f"Deployment/checkout-{i % 4}",
            "result": "Killed" if i % 10 else "Capped",
            "method": "eviction",
            "message": "eviction accepted",
            "round": i + 1,
            **({"recoveredAfterSeconds": 2.0 + (i % 7)} if i % 10 else {}),
        }
        for i in range(KILLS)
    ]
    conditions = [
        {
            "name": "error-ratio",
            "query": 'sum(rate(http_errors{app="checkout"}[1m]))',
            "operator": "<",
            "threshold": 0.05,
        },
        {"name": "latency-p99", "query": "histogram_quantile(0.99, ...)", "operator": "<", "threshold": 0.3},
    ]
    slis: list[Any] = []
    for i in range(SAMPLES):  # through the operator's own recording
        results = tuple(
            ConditionResult(
                str(c["name"]), ConditionStatus.HOLDING, 0.001 * (1 + i % 9), None, 1, "", ComparisonOperator.LT, 0.05
            )
            for c in conditions
        )
        slis = record_verdict(
            slis, Verdict(VerdictKind.HEALTHY, False, "", START + timedelta(seconds=i), GuardState(), results=results)
        )
    run = {
        "id": "r1-20261122T004820Z",
        "phase": "Completed",
        "reason": "RunCompleted",
        "message": "run r1-20261122T004820Z completed",
        "startedAt": _at(0),
        "deadline": _at(SAMPLES - 5),
        "finishedAt": _at(SAMPLES),
        "kills": kills,
        "killsTotal": KILLS,
        "slis": [sli.model_dump(by_alias=True, mode="json", exclude_none=True) for sli in slis],
    }
    return {
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "action": "pod-kill",
            "duration": "1m",
            "interval": "500ms",
            "target": {"mode": "one", "selector": {"matchLabels": {"app": "checkout"}}},
            "steadyState": {"conditions": conditions, "prometheus": {"url": "http://prometheus:9090"}},
        },
        "status": {"phase": "Completed", "lastRun": run, "history": [run]},
    }


def _median_ms(render: Callable[[], str]) -> float:
    render()
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        render()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def run() -> dict[str, tuple[float, str]]:
    experiment = largest_experiment()
    markdown = _median_ms(lambda: report.render_markdown(experiment))
    page = _median_ms(lambda: report.render_html(experiment))
    print(f"# report_render: median of {REPEATS} renders, {KILLS} kill records, 2 SLIs x {SAMPLES} samples")
    return {"report_markdown_largest": (markdown, "ms"), "report_html_largest": (page, "ms")}
