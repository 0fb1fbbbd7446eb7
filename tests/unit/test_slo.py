"""The SLO guard's pure decision: operators, `for`, several series, unavailability, evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosguard.api.models import ComparisonOperator, OnUnavailable, SteadyStateCondition, SteadyStateSpec
from chaosguard.decisions.slo import (
    GuardState,
    QueryOk,
    QueryOutcome,
    Sample,
    UnavailableKind,
    Verdict,
    VerdictKind,
    evaluate,
    format_labels,
    holds,
    ok,
    series_key,
    unavailable,
)

T0 = datetime(2026, 3, 3, 14, 2, 5, tzinfo=UTC)


def condition(
    name: str = "checkout-error-ratio",
    operator: str = "<",
    threshold: float = 0.01,
    for_: str = "0",
    query: str = 'demo_error_ratio{app="checkout"}',
) -> SteadyStateCondition:
    return SteadyStateCondition.model_validate(
        {"name": name, "query": query, "operator": operator, "threshold": threshold, "for": for_}
    )


def run(
    conditions: list[SteadyStateCondition],
    outcomes: Mapping[str, QueryOutcome],
    state: GuardState | None = None,
    now: datetime = T0,
    on_unavailable: OnUnavailable = OnUnavailable.ABORT,
) -> Verdict:
    return evaluate(conditions, outcomes, state or GuardState(), now, on_unavailable)


def app(name: str, **extra: str) -> dict[str, str]:
    return {"app": name, **extra}


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("operator", "value", "threshold", "expected"),
    [
        ("<", 0.009, 0.01, True),
        ("<", 0.01, 0.01, False),
        ("<", 0.011, 0.01, False),
        ("<=", 0.009, 0.01, True),
        ("<=", 0.01, 0.01, True),
        ("<=", 0.011, 0.01, False),
        (">", 0.99, 0.995, False),
        (">", 0.995, 0.995, False),
        (">", 0.999, 0.995, True),
        (">=", 0.99, 0.995, False),
        (">=", 0.995, 0.995, True),
        (">=", 0.999, 0.995, True),
        ("==", 1.0, 1.0, True),
        ("==", 0.0, 1.0, False),
        ("!=", 1.0, 1.0, False),
        ("!=", 0.0, 1.0, True),
        ("<", math.inf, 0.01, False),
        (">", math.inf, 0.01, True),
        ("<", -math.inf, 0.01, True),
        ("<", math.nan, 0.01, False),
        ("!=", math.nan, 0.01, True),  # NaN never reaches holds() in evaluate(): it is unavailable
    ],
)
def test_holds_table(operator: str, value: float, threshold: float, expected: bool) -> None:
    assert holds(value, ComparisonOperator(operator), threshold) is expected


@pytest.mark.parametrize(
    ("operator", "healthy_value", "breaching_value"),
    [
        ("<", 0.0, 0.01),
        ("<=", 0.01, 0.02),
        (">", 0.02, 0.01),
        (">=", 0.01, 0.0),
        ("==", 0.01, 0.0),
        ("!=", 0.0, 0.01),
    ],
)
def test_every_operator_through_evaluate(operator: str, healthy_value: float, breaching_value: float) -> None:
    cond = condition(operator=operator, threshold=0.01)
    good = run([cond], {cond.name: ok(Sample(app("checkout"), healthy_value))})
    assert good.kind is VerdictKind.HEALTHY and not good.abort
    bad = run([cond], {cond.name: ok(Sample(app("checkout"), breaching_value))})
    assert bad.kind is VerdictKind.BREACHED and bad.abort
    assert bad.breach is not None and bad.breach.operator is ComparisonOperator(operator)
    assert f"is not {operator} 0.01" in bad.message


# --------------------------------------------------------------------------- messages and breach details


def test_breach_message_names_series_value_operator_threshold_for_and_since() -> None:
    cond = condition(for_="10s")
    sample = ok(Sample(app("checkout"), 0.034))
    first = run([cond], {cond.name: sample}, now=T0)
    assert first.kind is VerdictKind.HEALTHY and not first.abort
    assert first.pending and first.pending[0].since == T0
    assert "breaching" in first.message and "for 0s of 10s" in first.message
    later = run([cond], {cond.name: sample}, first.state, now=T0 + timedelta(seconds=10))
    assert later.kind is VerdictKind.BREACHED and later.abort
    assert later.message == (
        'SLI checkout-error-ratio breached: value 0.034 {app="checkout"} is not < 0.01 (for 10s, since 14:02:05Z)'
    )
    breach = later.breach
    assert breach is not None
    assert (breach.condition, breach.query, dict(breach.labels), breach.value) == (
        "checkout-error-ratio",
        'demo_error_ratio{app="checkout"}',
        {"app": "checkout"},
        0.034,
    )
    assert (breach.operator, breach.threshold, breach.since, breach.at) == (
        ComparisonOperator.LT,
        0.01,
        T0,
        T0 + timedelta(seconds=10),
    )
    assert later.reason == "SLIBreached"


def test_value_close_to_threshold_is_shown_in_full() -> None:
    cond = condition(operator="<", threshold=0.01)
    verdict = run([cond], {cond.name: ok(Sample({}, 0.0100000001))})
    assert "value 0.0100000001 {} is not < 0.01" in verdict.message


def test_labels_are_formatted_like_promql() -> None:
    assert format_labels({"b": "2", "__name__": "up", "a": 'say "hi"\\'}) == 'up{a="say \\"hi\\"\\\\",b="2"}'
    assert format_labels({}) == "{}"


def test_naive_now_is_refused() -> None:
    cond = condition()
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate([cond], {}, GuardState(), datetime(2026, 1, 1), OnUnavailable.ABORT)


# --------------------------------------------------------------------------- several series


def test_every_series_must_hold_and_the_breach_names_the_offender() -> None:
    cond = condition(query='demo_error_ratio{app=~".+"}')
    outcome = ok(Sample(app("cart"), 0.001), Sample(app("checkout"), 0.2), Sample(app("search"), 0.0))
    verdict = run([cond], {cond.name: outcome})
    assert verdict.kind is VerdictKind.BREACHED
    assert verdict.breach is not None and verdict.breach.labels == {"app": "checkout"}
    assert '{app="checkout"}' in verdict.message


def test_several_breaching_series_are_all_reported() -> None:
    cond = condition()
    outcome = ok(Sample(app("a"), 0.5), Sample(app("b"), 0.6))
    verdict = run([cond], {cond.name: outcome})
    assert {b.labels["app"] for b in verdict.breaches} == {"a", "b"}
    assert "and 1 more breaching series" in verdict.message


def test_for_is_tracked_per_series() -> None:
    cond = condition(for_="10s")
    s1 = run([cond], {cond.name: ok(Sample(app("a"), 0.5), Sample(app("b"), 0.0))}, now=T0)
    s2 = run(
        [cond],
        {cond.name: ok(Sample(app("a"), 0.5), Sample(app("b"), 0.5))},
        s1.state,
        T0 + timedelta(seconds=5),
    )
    assert s2.kind is VerdictKind.HEALTHY and len(s2.pending) == 2
    s3 = run(
        [cond],
        {cond.name: ok(Sample(app("a"), 0.0), Sample(app("b"), 0.5))},
        s2.state,
        T0 + timedelta(seconds=10),
    )
    # a recovered before its 10s; b has only breached for 5s
    assert s3.kind is VerdictKind.HEALTHY
    assert [p.labels["app"] for p in s3.pending] == ["b"]
    s4 = run(
        [cond],
        {cond.name: ok(Sample(app("a"), 0.0), Sample(app("b"), 0.5))},
        s3.state,
        T0 + timedelta(seconds=15),
    )
    assert s4.kind is VerdictKind.BREACHED and s4.breach is not None and s4.breach.labels == {"app": "b"}
    assert s4.breach.since == T0 + timedelta(seconds=5)


def test_series_gone_from_a_successful_result_is_forgotten() -> None:
    cond = condition(for_="10s")
    s1 = run([cond], {cond.name: ok(Sample(app("a"), 0.5), Sample(app("b"), 0.0))})
    assert series_key(app("a")) in s1.state.breaching_since[cond.name]
    s2 = run([cond], {cond.name: ok(Sample(app("b"), 0.0))}, s1.state, T0 + timedelta(seconds=5))
    assert s2.state.breaching_since == {}


# --------------------------------------------------------------------------- unavailability


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (
            unavailable(UnavailableKind.UNREACHABLE, "cannot connect to http://p:9090: Connection refused"),
            "Unreachable",
        ),
        (unavailable(UnavailableKind.TIMEOUT, "no answer from http://p:9090 within 2s"), "Timeout"),
        (
            unavailable(UnavailableKind.HTTP_ERROR, "HTTP 400 from http://p:9090: bad_data: parse error"),
            "HTTPError",
        ),
        (QueryOk(()), "EmptyResult"),
        (ok(Sample(app("checkout"), math.nan)), "NaN"),
    ],
)
@pytest.mark.parametrize("mode", [OnUnavailable.ABORT, OnUnavailable.CONTINUE])
def test_unavailable_aborts_only_with_abort(outcome: QueryOutcome, kind: str, mode: OnUnavailable) -> None:
    cond = condition()
    verdict = run([cond], {cond.name: outcome}, on_unavailable=mode)
    assert verdict.kind is VerdictKind.UNAVAILABLE
    assert verdict.abort is (mode is OnUnavailable.ABORT)
    assert verdict.unavailable[0].condition == cond.name
    assert verdict.unavailable[0].kind.value == kind
    assert f"SLI checkout-error-ratio unavailable ({kind})" in verdict.message
    assert f"onUnavailable: {mode.value}" in verdict.message
    assert verdict.reason == "SLIUnavailable"


def test_missing_outcome_is_unavailable() -> None:
    cond = condition()
    verdict = run([cond], {})
    assert verdict.abort and verdict.unavailable[0].kind is UnavailableKind.NOT_QUERIED


def test_nan_series_among_healthy_ones_is_unavailable_and_named() -> None:
    cond = condition()
    verdict = run([cond], {cond.name: ok(Sample(app("a"), 0.0), Sample(app("b"), math.nan))})
    assert verdict.kind is VerdictKind.UNAVAILABLE
    assert verdict.unavailable[0].labels == {"app": "b"}
    assert '{app="b"} is NaN' in verdict.message


def test_a_counted_breach_wins_over_unavailability_even_with_continue() -> None:
    errors, latency = condition("errors"), condition("latency", threshold=0.5)
    outcomes: dict[str, QueryOutcome] = {
        errors.name: unavailable(UnavailableKind.TIMEOUT, "slow"),
        latency.name: ok(Sample({}, 2.0)),
    }
    verdict = run([errors, latency], outcomes, on_unavailable=OnUnavailable.CONTINUE)
    assert verdict.kind is VerdictKind.BREACHED and verdict.abort
    assert verdict.breach is not None and verdict.breach.condition == "latency"
    assert [u.condition for u in verdict.unavailable] == ["errors"]


def test_unavailability_neither_confirms_nor_resets_the_for_timer() -> None:
    cond = condition(for_="10s")
    s1 = run([cond], {cond.name: ok(Sample({}, 0.5))}, now=T0)
    s2 = run(
        [cond],
        {cond.name: unavailable(UnavailableKind.UNREACHABLE, "down")},
        s1.state,
        T0 + timedelta(seconds=5),
        OnUnavailable.CONTINUE,
    )
    assert s2.state == s1.state and not s2.abort
    s3 = run([cond], {cond.name: ok(Sample({}, 0.5))}, s2.state, T0 + timedelta(seconds=10))
    assert s3.kind is VerdictKind.BREACHED and s3.breach is not None and s3.breach.since == T0


def test_state_of_removed_conditions_is_dropped_and_future_since_is_clamped() -> None:
    cond = condition(for_="10s")
    stale = GuardState({"gone": {"{}": T0}, cond.name: {"{}": T0 + timedelta(hours=1)}})
    verdict = run([cond], {cond.name: ok(Sample({}, 0.5))}, stale, T0)
    assert set(verdict.state.breaching_since) == {cond.name}
    assert verdict.state.breaching_since[cond.name]["{}"] == T0


# --------------------------------------------------------------------------- state on the wire


def test_state_round_trips_through_its_wire_form() -> None:
    state = GuardState({"errors": {'{app="a"}': T0, "{}": T0 + timedelta(seconds=1.5)}, "empty": {}})
    wire = state.to_wire()
    assert wire == {"errors": {'{app="a"}': "2026-03-03T14:02:05Z", "{}": "2026-03-03T14:02:06.500000Z"}}
    assert GuardState.from_wire(wire).to_wire() == wire
    assert GuardState.from_wire(None) == GuardState()


def test_works_with_conditions_from_a_steady_state_spec() -> None:
    spec = SteadyStateSpec.model_validate(
        {
            "prometheus": {"url": "http://prometheus.monitoring:9090"},
            "conditions": [
                {"name": "errors", "query": "x", "operator": "<", "threshold": 0.01},
                {"name": "latency", "query": "y", "operator": "<=", "threshold": 0.3, "for": "30s"},
            ],
        }
    )
    outcomes: dict[str, QueryOutcome] = {"errors": ok(Sample({}, 0.0)), "latency": ok(Sample({}, 0.1))}
    verdict = evaluate(spec.conditions, outcomes, GuardState(), T0, spec.on_unavailable)
    assert verdict.kind is VerdictKind.HEALTHY and verdict.message == "steady state holds: all 2 SLI conditions hold"


# --------------------------------------------------------------------------- properties

values = st.one_of(st.floats(min_value=-10, max_value=10, allow_nan=False), st.sampled_from([0.0, 1.0, -1.0]))
operators = st.sampled_from(list(ComparisonOperator))
gaps = st.integers(min_value=1, max_value=8)


@st.composite
def tick_history(draw: Any) -> tuple[ComparisonOperator, float, int, list[tuple[int, float]]]:
    """Operator, threshold, `for` in whole seconds, and (time offset, value) ticks."""
    operator = draw(operators)
    threshold = draw(st.sampled_from([0.0, 1.0, -1.0]))
    for_seconds = draw(st.integers(min_value=0, max_value=20))
    steps = draw(st.lists(st.tuples(gaps, values), min_size=1, max_size=25))
    ticks, offset = [], 0
    for gap, value in steps:
        offset += gap
        ticks.append((offset, value))
    return operator, threshold, for_seconds, ticks


@given(tick_history())
@settings(max_examples=300, deadline=None)
def test_for_matches_a_reference_model(
    history: tuple[ComparisonOperator, float, int, list[tuple[int, float]]],
) -> None:
    """Breached at tick i ⟺ the series breached at every tick from some j ≤ i and t_i - t_j ≥ for."""
    operator, threshold, for_seconds, ticks = history
    cond = condition(operator=operator.value, threshold=threshold, for_=f"{for_seconds}s" if for_seconds else "0")
    state = GuardState()
    run_start: int | None = None  # reference: first tick of the current unbroken breaching run
    for offset, value in ticks:
        breaching = not holds(value, operator, threshold)
        run_start = (run_start if run_start is not None else offset) if breaching else None
        expected = run_start is not None and offset - run_start >= for_seconds
        verdict = run([cond], {cond.name: ok(Sample({}, value))}, state, T0 + timedelta(seconds=offset))
        assert (verdict.kind is VerdictKind.BREACHED) is expected
        assert verdict.abort is expected
        if expected:
            assert verdict.breach is not None and verdict.breach.since == T0 + timedelta(seconds=run_start or 0)
        assert bool(verdict.pending) is (breaching and not expected)
        # the state survives the trip through the object's status
        state = GuardState.from_wire(verdict.state.to_wire())


label_values = st.text(alphabet="abcxyz", min_size=1, max_size=3)


@given(
    st.dictionaries(label_values, values, min_size=1, max_size=6),
    operators,
    st.sampled_from([0.0, 1.0]),
    st.randoms(use_true_random=False),
)
@settings(max_examples=300, deadline=None)
def test_a_query_holds_only_when_every_series_holds(
    series: dict[str, float], operator: ComparisonOperator, threshold: float, rnd: Any
) -> None:
    cond = condition(operator=operator.value, threshold=threshold)
    samples = [Sample({"pod": name}, value) for name, value in series.items()]
    rnd.shuffle(samples)
    verdict = run([cond], {cond.name: ok(*samples)})
    offenders = {name for name, value in series.items() if not holds(value, operator, threshold)}
    assert (verdict.kind is VerdictKind.BREACHED) is bool(offenders)
    assert {b.labels["pod"] for b in verdict.breaches} == offenders
    if offenders:
        assert verdict.breach is not None and verdict.breach.labels["pod"] in offenders
        assert not holds(verdict.breach.value, operator, threshold)
    else:
        assert verdict.kind is VerdictKind.HEALTHY and not verdict.abort


@given(
    st.lists(st.tuples(gaps, st.dictionaries(label_values, values, max_size=4)), min_size=1, max_size=15),
    st.integers(min_value=0, max_value=12),
)
@settings(max_examples=200, deadline=None)
def test_multi_series_for_matches_per_series_reference(
    steps: list[tuple[int, dict[str, float]]], for_seconds: int
) -> None:
    """Each series has its own timer; a series missing from a result restarts from scratch."""
    cond = condition(operator="<", threshold=1.0, for_=f"{for_seconds}s" if for_seconds else "0")
    state, offset = GuardState(), 0
    starts: dict[str, int] = {}
    for gap, series in steps:
        offset += gap
        outcome: QueryOutcome = ok(*(Sample({"pod": n}, v) for n, v in series.items()))
        verdict = run([cond], {cond.name: outcome}, state, T0 + timedelta(seconds=offset))
        if not series:  # an empty result is unavailable: timers neither confirmed nor reset
            assert verdict.kind is VerdictKind.UNAVAILABLE and verdict.state == state
            continue
        starts = {
            name: starts.get(name, offset) for name, value in series.items() if not holds(value, cond.operator, 1.0)
        }
        expected = {name for name, start in starts.items() if offset - start >= for_seconds}
        assert {b.labels["pod"] for b in verdict.breaches} == expected
        assert (verdict.kind is VerdictKind.BREACHED) is bool(expected)
        state = verdict.state


def test_a_nan_sample_keeps_that_series_timer() -> None:
    cond = condition(for_="10s")
    s1 = run([cond], {cond.name: ok(Sample(app("a"), 0.5))}, now=T0)
    s2 = run([cond], {cond.name: ok(Sample(app("a"), math.nan))}, s1.state, T0 + timedelta(seconds=5))
    assert s2.kind is VerdictKind.UNAVAILABLE and s2.state == s1.state
    s3 = run([cond], {cond.name: ok(Sample(app("a"), 0.5))}, s2.state, T0 + timedelta(seconds=10))
    assert s3.kind is VerdictKind.BREACHED and s3.breach is not None and s3.breach.since == T0
