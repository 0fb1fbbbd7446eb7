"""ChaosPolicy.spec.steadyState compiled into conditions, the queries, the words, and the rule that
the owners' guards abort when they cannot be judged whatever the author's onUnavailable says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from chaosguard.api.models import ChaosPolicy, ErrorBudgetGate, OnUnavailable, PolicySteadyState, SteadyStateCondition
from chaosguard.decisions.platform_guards import (
    GuardKind,
    Phase,
    alerts_query,
    budget_query,
    budget_refusal_text,
    burn_rate_query,
    describe,
    expected_rules,
    next_start_estimate,
    platform_guards,
    promql_duration,
    unmeasured_text,
)
from chaosguard.decisions.runs import verdict_condition
from chaosguard.decisions.slo import (
    ConditionResult,
    ConditionStatus,
    GuardState,
    Sample,
    UnavailableKind,
    evaluate,
    ok,
    unavailable,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PROM = {"url": "http://prometheus.monitoring:9090"}


def policy(name: str, **steady_state: Any) -> ChaosPolicy:
    return ChaosPolicy.model_validate(
        {"metadata": {"name": name}, "spec": {"steadyState": {"prometheus": PROM, **steady_state}}}
    )


def gate(**fields: Any) -> ErrorBudgetGate:
    return ErrorBudgetGate.model_validate({"name": "checkout", **fields})


def test_every_guard_becomes_a_condition_named_for_its_policy_with_the_policy_endpoint() -> None:
    payments = policy(
        "payments",
        interval="2s",
        conditions=[{"name": "errors", "query": "x", "operator": "<", "threshold": 0.01}],
        errorBudgets=[
            {
                "name": "checkout",
                "sloth": {"service": "checkout", "slo": "availability"},
                "minBudgetRemaining": 25,
                "maxBurnRate": 10,
            }
        ],
    )
    quiet = policy("quiet", interval="10s", quietAlerts={"matchers": ['severity="critical"']})
    guards = platform_guards([quiet, payments], ["shop"])
    names = [g.condition.name for g in guards.conditions]
    assert names == ["payments/errors", "payments/checkout:budget", "payments/checkout:burn-rate", "quiet/quietAlerts"]
    assert all(
        g.condition.prometheus is not None and g.condition.prometheus.url == PROM["url"] for g in guards.conditions
    )
    assert guards.interval == 2.0  # the shortest policy interval
    assert [g.kind for g in guards.at(Phase.BEFORE)] == [
        GuardKind.CONDITION,
        GuardKind.BUDGET,
        GuardKind.BURN_RATE,
        GuardKind.QUIET_ALERTS,
    ]
    assert [g.condition.name for g in guards.at(Phase.DURING)] == [
        "payments/errors",
        "payments/checkout:burn-rate",
        "quiet/quietAlerts",
    ]
    assert [g.condition.name for g in guards.at(Phase.AFTER)] == ["payments/errors"]
    budget = guards.named("payments/checkout:budget")
    assert budget is not None and budget.condition.threshold == 0.25 and budget.condition.operator.value == ">="
    assert budget.field == "spec.steadyState.errorBudgets[checkout].minBudgetRemaining"
    assert not platform_guards([ChaosPolicy.model_validate({"metadata": {"name": "plain"}})], ["shop"])


def test_a_condition_named_quiet_alerts_is_not_taken_for_the_quiet_alerts_guard() -> None:
    payments = policy(
        "payments",
        conditions=[{"name": "quiet-alerts", "query": "x", "operator": "<", "threshold": 0.01}],
        quietAlerts={"matchers": ['severity="critical"']},
    )
    guards = platform_guards([payments], ["shop"])
    names = [g.condition.name for g in guards.conditions]
    assert len(set(names)) == 2, names
    condition, quiet = (guards.named(name) for name in names)
    assert condition is not None and condition.kind is GuardKind.CONDITION and condition.guard == "quiet-alerts"
    assert quiet is not None and quiet.kind is GuardKind.QUIET_ALERTS


def test_queries_for_raw_metrics_put_each_window_in_place() -> None:
    events = gate(
        errorQuery='sum(rate(req_total{code=~"5.."}[{{.window}}]))',
        totalQuery="sum(rate(req_total[{{.window}}]))",
        objective=99.9,
        window="4w",
        minBudgetRemaining=50,
        maxBurnRate=14.4,
        burnRateWindow="1h",
    )
    assert budget_query(events) == (
        '1 - ((sum(rate(req_total{code=~"5.."}[4w]))) / (sum(rate(req_total[4w])))) / 0.001'
    )
    assert burn_rate_query(events) == '((sum(rate(req_total{code=~"5.."}[1h]))) / (sum(rate(req_total[1h])))) / 0.001'
    ratio = gate(ratioQuery="avg(err:ratio[{{.window}}])", objective=99, maxBurnRate=2)
    assert burn_rate_query(ratio) == "(avg(err:ratio[5m])) / 0.01"


def test_sloth_and_pyrra_recording_rules_are_used_by_their_names() -> None:
    sloth = gate(sloth={"service": "checkout", "slo": "availability"}, minBudgetRemaining=10, maxBurnRate=10)
    selector = '{sloth_service="checkout",sloth_slo="availability"}'
    assert budget_query(sloth) == f"slo:period_error_budget_remaining:ratio{selector}"
    assert burn_rate_query(sloth) == (
        f"slo:sli_error:ratio_rate5m{selector} / on(sloth_id, sloth_service, sloth_slo) group_left() "
        f"slo:error_budget:ratio{selector}"
    )
    pyrra = gate(
        pyrra={"slo": "checkout", "metric": "http_requests"}, minBudgetRemaining=10, maxBurnRate=10, burnRateWindow="1h"
    )
    assert budget_query(pyrra) == (
        '(pyrra_availability{slo="checkout"} - on(slo) pyrra_objective{slo="checkout"})'
        ' / on(slo) (1 - pyrra_objective{slo="checkout"})'
    )
    assert burn_rate_query(pyrra).startswith('http_requests:burnrate1h{slo="checkout"} / on(slo) group_left()')


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (300, "5m"),
        (3600, "1h"),
        (2592000, "30d"),
        (1209600, "2w"),
        (90, "1m30s"),
        (3840, "1h4m"),
        (31536000, "1y"),
        (7776000, "90d"),  # not 12w6d: weeks only when exact
        (694800, "8d1h"),  # 1w1d1h: weeks not exact, so days
        (93784, "1d2h3m4s"),
        (1.5, "1s500ms"),
        (0, "0s"),
    ],
)
def test_windows_are_written_as_prometheus_and_so_sloth_and_pyrra_name_their_rules(seconds: float, text: str) -> None:
    assert promql_duration(seconds) == text


def test_quiet_alerts_count_firing_alerts_and_answer_zero_when_none_fires() -> None:
    quiet = PolicySteadyState.model_validate(
        {
            "prometheus": PROM,
            "quietAlerts": {"matchers": ['severity="critical"', 'team=~"pay.*"'], "targetNamespacesOnly": True},
        }
    ).quiet_alerts
    assert quiet is not None
    assert alerts_query(quiet, ["shop", "payments", "shop"]) == (
        '(ALERTS{alertstate="firing",severity="critical",team=~"pay.*",namespace=~"payments|shop"}) or on() vector(0)'
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"objective": 99.9, "minBudgetRemaining": 5}, "exactly one SLI source"),
        ({"errorQuery": "a[{{.window}}]", "objective": 99.9, "minBudgetRemaining": 5}, "go together"),
        ({"ratioQuery": "a[5m]", "objective": 99.9, "minBudgetRemaining": 5}, "must contain {{.window}}"),
        ({"ratioQuery": "a[{{.window}}]", "minBudgetRemaining": 5}, "objective is required"),
        ({"ratioQuery": "a[{{.window}}]", "objective": 99.9}, "minBudgetRemaining, maxBurnRate or both"),
        ({"sloth": {"service": "s", "slo": "x"}, "objective": 99, "maxBurnRate": 2}, "record their own objective"),
        ({"ratioQuery": "a[{{.window}}]", "objective": 99.9, "maxBurnRate": 2, "window": "30 days"}, "window"),
    ],
)
def test_a_gate_that_cannot_mean_anything_is_refused_with_the_fix(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("{", r"\{").replace("}", r"\}")):
        gate(**fields)


def test_quiet_alert_matchers_must_be_promql_matchers() -> None:
    with pytest.raises(ValidationError, match="matchers"):
        PolicySteadyState.model_validate({"prometheus": PROM, "quietAlerts": {"matchers": ["severity=critical"]}})
    with pytest.raises(ValidationError, match="set its url"):
        PolicySteadyState.model_validate({"quietAlerts": {}})


def test_the_next_start_estimate_follows_the_budget_back_and_says_when_it_is_not_coming() -> None:
    # 80% of the budget spent, burning at 0.2x now, 50% needed, 30-day window.
    seconds = next_start_estimate(0.2, 0.2, 0.5, 30 * 86400)
    assert seconds == pytest.approx((0.8 - 0.5) * 30 * 86400 / (0.8 - 0.2))
    assert next_start_estimate(0.2, 1.5, 0.5, 30 * 86400) is None  # burning faster than the mean: not recovering
    assert next_start_estimate(0.2, None, 0.5, 30 * 86400) is None
    assert next_start_estimate(0.7, 3.0, 0.5, 30 * 86400) == 0.0


def test_a_budget_refusal_says_the_budget_left_the_burn_rate_and_when() -> None:
    payments = policy(
        "payments",
        errorBudgets=[
            {"name": "checkout", "ratioQuery": "r[{{.window}}]", "objective": 99.9, "minBudgetRemaining": 50}
        ],
    )
    [budget] = platform_guards([payments], ["shop"]).conditions
    text = budget_refusal_text(budget, 0.2, 0.2)
    assert text.startswith("error budget checkout (ChaosPolicy/payments): 20% of the 30d budget left")
    assert "minimum of 50% (spec.steadyState.errorBudgets[checkout].minBudgetRemaining)" in text
    assert "burn rate 0.2x over 5m" in text
    assert "a run could start in about 360h" in text
    assert "unknown" in budget_refusal_text(budget, None, None)
    unmeasured_burn = budget_refusal_text(budget, 0.2, None)
    assert "not recovering" not in unmeasured_burn, unmeasured_burn
    assert "burn rate unknown over 5m; the burn rate cannot be measured" in unmeasured_burn, unmeasured_burn


def test_sloth_gates_take_only_the_burn_rate_windows_sloth_records() -> None:
    sloth = {"sloth": {"service": "s", "slo": "x"}, "maxBurnRate": 2}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d", "60m"):
        gate(**sloth, burnRateWindow=window)  # 60m is 1h: the same rule
    gate(**sloth, window="28d", burnRateWindow="28d")  # the SLO period is recorded too
    with pytest.raises(
        ValidationError, match=r"no slo:sli_error:ratio_rate15m.*5m, 30m, 1h, 2h, 6h, 1d, 3d or the SLO"
    ):
        gate(**sloth, burnRateWindow="15m")
    gate(pyrra={"slo": "x", "metric": "m"}, maxBurnRate=2, burnRateWindow="15m")  # Pyrra's own windows vary


def test_an_unmeasured_sloth_or_pyrra_gate_names_the_recording_rules_it_expected() -> None:
    payments = policy(
        "payments",
        errorBudgets=[
            {"name": "checkout", "sloth": {"service": "c", "slo": "a"}, "minBudgetRemaining": 50, "maxBurnRate": 2},
            {"name": "orders", "pyrra": {"slo": "o", "metric": "http"}, "maxBurnRate": 2, "burnRateWindow": "64m"},
        ],
    )
    sloth_budget, sloth_burn, pyrra_burn = platform_guards([payments], ["shop"]).conditions
    empty = ConditionResult("x", ConditionStatus.UNAVAILABLE, None, None, 0, "the query returned no series")
    selector = '{sloth_service="c",sloth_slo="a"}'
    assert unmeasured_text(sloth_burn, empty).endswith(
        f"expected Sloth's recording rules slo:sli_error:ratio_rate5m{selector}, slo:error_budget:ratio{selector}"
    )
    assert f"slo:period_error_budget_remaining:ratio{selector}" in budget_refusal_text(sloth_budget, None, None)
    assert 'http:burnrate1h4m{slo="o"}' in (expected_rules(pyrra_burn) or "")


def test_validate_and_plan_lines_name_each_guard_and_its_policy() -> None:
    payments = policy(
        "payments",
        errorBudgets=[{"name": "checkout", "ratioQuery": "r[{{.window}}]", "objective": 99.9, "maxBurnRate": 10}],
        quietAlerts={},
    )
    lines = describe(platform_guards([payments], ["shop"]))
    assert lines[0].startswith("ChaosPolicy/payments error budget checkout: not started, and aborted, above a 10x")
    assert lines[1].startswith("ChaosPolicy/payments quiet alerts: not started, and aborted, while a matching alert")


def _condition(name: str, threshold: float = 1.0) -> SteadyStateCondition:
    return SteadyStateCondition.model_validate(
        {"name": "placeholder", "query": "q", "operator": "<", "threshold": threshold, "prometheus": PROM}
    ).model_copy(update={"name": name})  # policy guards carry names no author can write


def test_a_policy_guard_that_cannot_be_judged_aborts_even_when_the_author_says_continue() -> None:
    author, owner = _condition("mine"), _condition("payments/errors")
    outcomes = {"mine": ok(Sample({}, 0.5)), "payments/errors": unavailable(UnavailableKind.TIMEOUT, "slow")}
    verdict = evaluate([author, owner], outcomes, GuardState(), NOW, OnUnavailable.CONTINUE, {"payments/errors"})
    assert verdict.abort and "a ChaosPolicy guard" in verdict.message
    only_author = {"mine": unavailable(UnavailableKind.TIMEOUT, "slow"), "payments/errors": ok(Sample({}, 0.5))}
    assert not evaluate(
        [author, owner], only_author, GuardState(), NOW, OnUnavailable.CONTINUE, {"payments/errors"}
    ).abort


def test_an_abort_decided_by_an_unavailable_policy_guard_is_reported_as_that_guard() -> None:
    """Both unavailable, the author says continue: the policy's rule decided, so the abort is its."""
    author, owner = _condition("mine"), _condition("payments/errors")
    outcomes = {n: unavailable(UnavailableKind.TIMEOUT, f"{n} slow") for n in ("mine", "payments/errors")}
    verdict = evaluate([author, owner], outcomes, GuardState(), NOW, OnUnavailable.CONTINUE, {"payments/errors"})
    assert verdict.abort and verdict.unavailable[0].condition == "mine"
    assert verdict_condition(verdict, {"payments/errors"}) == "payments/errors"
    assert verdict_condition(verdict) == "mine"  # no policy guards: the first unavailable one
