"""What status keeps of an SLI's samples: the summary (latest, worst, counts) and the bounded trend
that spans the whole run (decisions.samples)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosguard.api.models import (
    ChaosExperimentStatus,
    ComparisonOperator,
    OnUnavailable,
    SliSummary,
    SliTrend,
    SteadyStateCondition,
)
from chaosguard.decisions.samples import (
    TREND_POINTS,
    badness,
    merge_summaries,
    merge_trends,
    record_verdict,
    sample_write_interval,
    statuses_changed,
    trend_points,
    trend_with,
    without_trends,
)
from chaosguard.decisions.slo import (
    ConditionResult,
    ConditionStatus,
    GuardState,
    QueryOutcome,
    Sample,
    UnavailableKind,
    Verdict,
    VerdictKind,
    evaluate,
    ok,
    unavailable,
)

T0 = datetime(2026, 3, 3, 14, 0, 0, tzinfo=UTC)
H, P, B, U = ConditionStatus.HOLDING, ConditionStatus.PENDING, ConditionStatus.BREACHED, ConditionStatus.UNAVAILABLE


def condition(name: str, operator: str = "<", threshold: float = 0.05, for_: str = "0") -> SteadyStateCondition:
    return SteadyStateCondition.model_validate(
        {"name": name, "query": f"{name}_query", "operator": operator, "threshold": threshold, "for": for_}
    )


def result(status: ConditionStatus, value: float | None, name: str = "errors") -> ConditionResult:
    return ConditionResult(name, status, value, None, 1, "", ComparisonOperator.LT, 0.05)


def feed(values: Sequence[tuple[ConditionStatus, float | None]], step: float = 1.0) -> SliSummary:
    slis: list[SliSummary] = []
    for tick, (status, value) in enumerate(values):
        verdict_at = T0 + timedelta(seconds=tick * step)
        slis = [
            s
            for s in record_verdict(slis, _verdict(verdict_at, result(status, value)), first_step=step)
            if s.name == "errors"
        ]
    return slis[0]


def _verdict(at: datetime, *results: ConditionResult) -> Verdict:
    return Verdict(VerdictKind.HEALTHY, False, "", at, GuardState(), results=results)


@pytest.mark.parametrize(
    ("operator", "worse", "better"),
    [("<", 0.2, 0.1), ("<=", 0.2, 0.1), (">", 0.1, 0.2), (">=", 0.1, 0.2), ("==", 0.9, 0.06), ("!=", 0.05, 0.5)],
)
def test_worse_means_farther_on_the_wrong_side_of_the_threshold(operator: str, worse: float, better: float) -> None:
    assert badness(worse, operator, 0.05) > badness(better, operator, 0.05)
    assert badness(math.nan, operator, 0.05) == badness(None, operator, 0.05) == -math.inf


def test_the_summary_says_latest_worst_and_counts() -> None:
    summary = feed([(H, 0.001), (P, 0.2), (U, None), (B, 0.09), (H, 0.002)])
    assert (summary.status, summary.value, summary.at) == ("Holding", "0.002", T0 + timedelta(seconds=4))
    assert (summary.worst, summary.worst_at) == ("0.2", T0 + timedelta(seconds=1))
    assert (summary.samples, summary.breaching, summary.unavailable) == (5, 2, 1)
    assert (summary.operator, summary.threshold) == ("<", 0.05)


def test_the_trend_spans_the_whole_run_in_at_most_its_points_and_keeps_the_breach() -> None:
    ticks = 3600  # an hour at 1 s
    breach_tick = 1234
    values = [(B, 0.5) if tick == breach_tick else (H, 0.001 + (tick % 7) / 10000) for tick in range(ticks)]
    summary = feed(values)
    trend = summary.trend
    assert trend is not None and trend.start == T0
    points = trend_points(trend)
    assert 16 < len(points) <= TREND_POINTS
    assert points[0].at == T0 and points[-1].at >= T0 + timedelta(seconds=ticks - 1 - trend.step)
    assert trend.step == 128  # 1 s doubled until 32 points cover the hour
    [breached] = [p for p in points if p.status == "Breached"]
    assert (
        breached.raw == "0.5"
        and abs((breached.at - (T0 + timedelta(seconds=breach_tick))).total_seconds()) <= trend.step
    )
    assert all(p.status == "Holding" and p.value is not None and p.value <= 0.0017 for p in points if p is not breached)
    # the worst of each merged stretch is kept: for "<" the highest value
    assert max(p.value or 0 for p in points if p is not breached) == pytest.approx(0.0016)
    assert (summary.samples, summary.breaching, summary.worst) == (ticks, 1, "0.5")


def test_empty_slots_and_unavailable_points_read_as_no_value() -> None:
    trend = None
    for tick, (status, value) in enumerate([(H, 0.01), (U, None), (U, math.nan), (H, math.inf)]):
        trend = trend_with(trend, T0 + timedelta(seconds=2 * tick), status, value, "<", 0.05, first_step=1.0)
    assert trend is not None
    assert trend.statuses == "H-U-U-H"
    assert trend.values == "0.01 - - - NaN - +Inf"
    assert [(p.status, p.raw, p.value) for p in trend_points(trend)] == [
        ("Holding", "0.01", 0.01),
        ("Unavailable", "", None),
        ("Unavailable", "NaN", None),
        ("Holding", "+Inf", math.inf),
    ]


def test_a_trend_written_wrong_is_read_not_trusted() -> None:
    trend = SliTrend(start=T0, step=1.0, statuses="HBX", values="0.1")
    assert [(p.status, p.raw) for p in trend_points(trend)] == [("Holding", "0.1"), ("Breached", "")]


def test_two_replicas_trends_merge_into_one_on_the_coarser_grid() -> None:
    ours = None
    theirs = None
    for tick in range(40):
        at = T0 + timedelta(seconds=tick)
        ours = trend_with(ours, at, H, 0.01, "<", 0.05)
        if tick >= 20:  # the other replica started guarding later, and saw a breach ours did not
            status, value = (P, 0.3) if tick == 30 else (H, 0.02)
            theirs = trend_with(theirs, at + timedelta(milliseconds=40), status, value, "<", 0.05)
    merged = merge_trends(ours, theirs, "<", 0.05)
    assert merged is not None and merged.start == T0 and merged.step >= max(ours.step, theirs.step)  # type: ignore[union-attr]
    points = trend_points(merged)
    assert len(points) <= TREND_POINTS and points[-1].at >= T0 + timedelta(seconds=32)
    assert any(p.status == "Pending" and p.raw == "0.3" for p in points)
    assert merge_trends(ours, None, "<", 0.05) is ours


def test_two_replicas_summaries_merge_without_double_counting() -> None:
    ours = feed([(H, 0.01)] * 10)
    theirs = feed([(H, 0.01)] * 8 + [(P, 0.4)] * 4).model_copy()
    other = SliSummary(name="latency", status="Holding", value="0.2", samples=3)
    merged = merge_summaries([ours], [theirs, other])
    assert [s.name for s in merged] == ["errors", "latency"]
    errors = merged[0]
    assert (errors.samples, errors.breaching, errors.worst, errors.value) == (12, 4, "0.4", "0.4")
    assert errors.at == theirs.at and errors.worst_at == theirs.worst_at
    assert merge_summaries([ours], []) == [ours]


def test_history_keeps_the_summary_without_the_trend() -> None:
    summary = feed([(H, 0.01), (P, 0.2)])
    [kept] = without_trends([summary])
    assert kept.trend is None and (kept.samples, kept.worst) == (2, "0.2")


def test_the_verdicts_deciding_value_is_what_the_summary_records() -> None:
    errors, latency = condition("errors", threshold=0.01), condition("latency", threshold=1.0)
    slis: list[SliSummary] = []
    state = GuardState()
    for i in range(75):
        outcomes: dict[str, QueryOutcome] = {
            errors.name: ok(Sample({"app": "a"}, 0.001), Sample({"app": "b"}, 0.009)),
            latency.name: unavailable(UnavailableKind.TIMEOUT, "slow") if i % 2 else ok(Sample({}, math.inf)),
        }
        verdict = evaluate([errors, latency], outcomes, state, T0 + timedelta(seconds=i), OnUnavailable.CONTINUE)
        state = verdict.state
        slis = record_verdict(slis, verdict)
    by_name = {s.name: s for s in slis}
    # the healthy series nearest to its threshold is the one recorded
    assert by_name["errors"].value == "0.009" and by_name["errors"].samples == 75
    assert by_name["latency"].worst == "+Inf" and by_name["latency"].status == "Breached"
    assert (by_name["latency"].breaching, by_name["latency"].unavailable) == (38, 37)
    assert by_name["latency"].value == "+Inf" and by_name["latency"].at == T0 + timedelta(seconds=74)


def test_a_status_written_before_the_summaries_still_loads_and_drops_the_old_samples() -> None:
    """An object of the previous version carries `sliSamples` in currentRun, lastRun and history: the
    operator adopts such statuses after an upgrade, so they must load; the samples are left behind
    (the next write of the run replaces them with summaries)."""
    old_samples = {"errors": [{"at": "2026-03-03T14:00:00Z", "status": "Holding", "value": "0.001", "series": "{}"}]}
    run = {"id": "r1", "phase": "Running", "sliSamples": old_samples, "sliState": {}, "seal": "abc"}
    raw = {
        "phase": "Running",
        "currentRun": run,
        "lastRun": {**run, "id": "r0", "phase": "Completed"},
        "history": [{**run, "id": "r0", "phase": "Completed"}],
    }
    status = ChaosExperimentStatus.model_validate(raw)
    assert status.current_run is not None and status.current_run.slis == [] and status.current_run.seal == "abc"
    wire = status.model_dump(by_alias=True, mode="json")
    assert "sliSamples" not in json.dumps(wire)
    assert wire["currentRun"]["slis"] == [] and wire["history"][0]["slis"] == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.2, max_value=30),
            st.sampled_from(list(ConditionStatus)),
            st.one_of(st.none(), st.floats(min_value=-5, max_value=5)),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_any_run_fits_and_its_span_and_worst_survive(
    samples: list[tuple[float, ConditionStatus, float | None]],
) -> None:
    trend = None
    at = T0
    for gap, status, value in samples:
        at += timedelta(seconds=gap)
        trend = trend_with(trend, at, status, value, "<", 0.05)
    assert trend is not None
    points = trend_points(trend)
    assert len(trend.statuses) <= TREND_POINTS and len(trend.values.split()) == len(trend.statuses)
    assert points[0].at == trend.start and abs((points[-1].at - at).total_seconds()) <= trend.step / 2 + 1e-6
    worst_status = max((s for _, s, _ in samples), key=lambda s: "HUPB".index(s.value[0]))
    assert worst_status.value in {p.status for p in points}
    finite = [v for _, _, v in samples if v is not None]
    if finite:
        assert max(p.value for p in points if p.value is not None) == pytest.approx(float(f"{max(finite):.4g}"))


def test_sample_writes_keep_their_floor_until_the_runs_outgrow_the_budget() -> None:
    assert sample_write_interval(1, floor=5.0, budget=20.0) == 5.0
    assert sample_write_interval(100, floor=5.0, budget=20.0) == 5.0  # 100 runs / 5 s = 20 writes/s: fits
    assert sample_write_interval(1000, floor=5.0, budget=20.0) == 50.0  # every run still gets a turn


def test_only_a_changed_status_is_news_to_a_reader_not_a_fresher_number() -> None:
    now = feed([(H, 0.001), (H, 0.002)])
    written = [feed([(H, 0.001)]).model_dump(by_alias=True, mode="json")]
    assert not statuses_changed(written, [now])
    assert statuses_changed(written, [feed([(H, 0.001), (P, 0.2)])])
    assert statuses_changed([], [now])  # never written: the first summary is news
    assert statuses_changed(None, [now])
    assert not statuses_changed(None, [])
