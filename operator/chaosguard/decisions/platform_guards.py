"""The cluster owners' guards (ChaosPolicy.spec.steadyState), compiled into SLI conditions. Pure.

Every policy that covers an experiment adds its guards to the experiment's own steady state, and
the one guard scheduler judges them together with the author's conditions: identical queries are
still asked once per tick. Each guard becomes an ordinary `SteadyStateCondition` whose name
carries the policy (`<policy>/<guard>`, which no author's DNS-label name can take), with the
policy's Prometheus endpoint, and with the phases it is checked in:

- `conditions`: before, during and after every run, like the author's.
- `errorBudgets[].minBudgetRemaining`: before a run (a budget counted over 30 days does not move
  within a run). The condition's value is the share of the budget left (1 = untouched).
- `errorBudgets[].maxBurnRate`: before and during a run. Its value is the burn rate: the error
  ratio over `burnRateWindow` divided by the budget (1 - objective); 1 spends the budget in
  exactly one window.
- `quietAlerts`: before and during a run. The query returns one series per firing alert (value 1)
  or a single 0 when none fires, so "none firing" is a real answer and not an empty result.

An author can neither drop these (they come from the policy, not the spec) nor weaken them: their
unavailability always aborts, whatever the author's `onUnavailable` says, and the run is guarded at
least as often as the shortest policy interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from chaosguard.api.durations import format_seconds, to_seconds
from chaosguard.api.models import (
    WINDOW_PLACEHOLDER,
    ChaosPolicy,
    ComparisonOperator,
    ErrorBudgetGate,
    PolicySteadyState,
    PrometheusEndpoint,
    QuietAlerts,
    SteadyStateCondition,
    slo_window_seconds,
)
from chaosguard.decisions.slo import Breach, ConditionResult, format_labels, format_value


class GuardKind(StrEnum):
    CONDITION = "condition"
    BUDGET = "error-budget"
    BURN_RATE = "burn-rate"
    QUIET_ALERTS = "quiet-alerts"


class Phase(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


_PHASES: dict[GuardKind, frozenset[Phase]] = {
    GuardKind.CONDITION: frozenset(Phase),
    GuardKind.BUDGET: frozenset({Phase.BEFORE}),
    GuardKind.BURN_RATE: frozenset({Phase.BEFORE, Phase.DURING}),
    GuardKind.QUIET_ALERTS: frozenset({Phase.BEFORE, Phase.DURING}),
}


@dataclass(frozen=True)
class PlatformCondition:
    """One policy guard as an SLI condition: `condition.name` is `<policy>/<guard>`."""

    policy: str
    kind: GuardKind
    guard: str  # the name in the policy: a condition's or an errorBudget's name, or "quietAlerts"
    field: str  # where it is set, for refusals: spec.steadyState.errorBudgets[checkout].minBudgetRemaining
    condition: SteadyStateCondition
    gate: ErrorBudgetGate | None = None

    @property
    def source(self) -> str:
        return f"ChaosPolicy/{self.policy}"

    def checked(self, phase: Phase) -> bool:
        return phase in _PHASES[self.kind]


@dataclass(frozen=True)
class PlatformGuards:
    """Every policy guard over one experiment, and the longest interval they may be checked at."""

    conditions: tuple[PlatformCondition, ...] = ()
    interval: float | None = None  # seconds; None when no policy has guards

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def at(self, phase: Phase) -> list[PlatformCondition]:
        return [guard for guard in self.conditions if guard.checked(phase)]

    def named(self, condition_name: str) -> PlatformCondition | None:
        return next((g for g in self.conditions if g.condition.name == condition_name), None)


# --------------------------------------------------------------------------- PromQL


def promql_duration(seconds: float) -> str:
    """A duration as Prometheus writes it (prometheus/common model.Duration.String()), which is how
    Sloth and Pyrra name their recording rules (`ratio_rate5m`, `burnrate1h4m`): years and weeks
    only when exact, then days, hours, minutes, seconds and milliseconds combined, so 64m is
    `1h4m`, 90s `1m30s`, 365d `1y`, 14d `2w` and 90d `90d`."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    text = ""
    for unit, size, exact in (
        ("y", 1000 * 60 * 60 * 24 * 365, True),
        ("w", 1000 * 60 * 60 * 24 * 7, True),
        ("d", 1000 * 60 * 60 * 24, False),
        ("h", 1000 * 60 * 60, False),
        ("m", 1000 * 60, False),
        ("s", 1000, False),
        ("ms", 1, False),
    ):
        if exact and ms % size != 0:
            continue
        count = ms // size
        if count > 0:
            text += f"{count}{unit}"
            ms -= count * size
    return text


def _over(query: str, window: str) -> str:
    return query.replace(WINDOW_PLACEHOLDER, window)


def _error_ratio(gate: ErrorBudgetGate, window: str) -> str:
    if gate.ratio_query is not None:
        return f"({_over(gate.ratio_query, window)})"
    assert gate.error_query is not None and gate.total_query is not None  # the model checks the pair
    return f"(({_over(gate.error_query, window)}) / ({_over(gate.total_query, window)}))"


def _sloth_selector(gate: ErrorBudgetGate) -> str:
    assert gate.sloth is not None
    return f'{{sloth_service="{_quote(gate.sloth.service)}",sloth_slo="{_quote(gate.sloth.slo)}"}}'


def _pyrra_selector(gate: ErrorBudgetGate) -> str:
    assert gate.pyrra is not None
    return f'{{slo="{_quote(gate.pyrra.slo)}"}}'


def budget_query(gate: ErrorBudgetGate) -> str:
    """The share of the error budget left over the SLO window (1 untouched, 0 spent, below 0 overspent)."""
    if gate.sloth is not None:
        return f"slo:period_error_budget_remaining:ratio{_sloth_selector(gate)}"
    if gate.pyrra is not None:
        selector = _pyrra_selector(gate)
        return (
            f"(pyrra_availability{selector} - on(slo) pyrra_objective{selector})"
            f" / on(slo) (1 - pyrra_objective{selector})"
        )
    assert gate.objective is not None
    budget = _budget(gate.objective)
    return f"1 - {_error_ratio(gate, promql_duration(slo_window_seconds(gate.window)))} / {budget}"


def burn_rate_query(gate: ErrorBudgetGate) -> str:
    """The error ratio over the burn-rate window, in units of the budget (1: spent in exactly one window)."""
    window = promql_duration(slo_window_seconds(gate.burn_rate_window))
    if gate.sloth is not None:
        selector = _sloth_selector(gate)
        return (
            f"slo:sli_error:ratio_rate{window}{selector}"
            f" / on(sloth_id, sloth_service, sloth_slo) group_left() slo:error_budget:ratio{selector}"
        )
    if gate.pyrra is not None:
        selector = _pyrra_selector(gate)
        return f"{gate.pyrra.metric}:burnrate{window}{selector} / on(slo) group_left() (1 - pyrra_objective{selector})"
    assert gate.objective is not None
    return f"{_error_ratio(gate, window)} / {_budget(gate.objective)}"


def _budget(objective_percent: float) -> str:
    return repr(round(1 - objective_percent / 100, 12))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alerts_query(quiet: QuietAlerts, target_namespaces: Sequence[str]) -> str:
    """One series per matching firing alert (value 1), or a single 0 when none fires."""
    matchers = ['alertstate="firing"', *quiet.matchers]
    if quiet.target_namespaces_only:
        matchers.append(f'namespace=~"{"|".join(sorted(set(target_namespaces)))}"')
    return f"(ALERTS{{{','.join(matchers)}}}) or on() vector(0)"


# --------------------------------------------------------------------------- compiling policies


def _condition(
    name: str, query: str, operator: ComparisonOperator, threshold: float, endpoint: PrometheusEndpoint | None
) -> SteadyStateCondition:
    # The name `<policy>/<guard>` is deliberately not a DNS label, so it can never equal an author's
    # condition name; it is built here, never parsed from user input, hence model_construct.
    return SteadyStateCondition.model_construct(
        name=name, query=query, operator=operator, threshold=threshold, for_="0", prometheus=endpoint
    )


def _compile(policy: str, guards: PolicySteadyState, target_namespaces: Sequence[str]) -> list[PlatformCondition]:
    endpoint = guards.prometheus
    base = "spec.steadyState"
    compiled: list[PlatformCondition] = []
    for condition in guards.conditions:
        named = condition.model_copy(
            update={"name": f"{policy}/{condition.name}", "prometheus": condition.prometheus or endpoint}
        )
        field = f"{base}.conditions[{condition.name}]"
        compiled.append(PlatformCondition(policy, GuardKind.CONDITION, condition.name, field, named))
    for gate in guards.error_budgets:
        field = f"{base}.errorBudgets[{gate.name}]"
        gates = (
            (GuardKind.BUDGET, "budget", "minBudgetRemaining", ComparisonOperator.GE, gate.min_budget_remaining, 100),
            (GuardKind.BURN_RATE, "burn-rate", "maxBurnRate", ComparisonOperator.LE, gate.max_burn_rate, 1),
        )
        for kind, suffix, setting, operator, limit, unit in gates:
            if limit is None:
                continue
            query = budget_query(gate) if kind is GuardKind.BUDGET else burn_rate_query(gate)
            condition = _condition(
                gate_condition_name(policy, gate.name, suffix), query, operator, limit / unit, endpoint
            )
            compiled.append(PlatformCondition(policy, kind, gate.name, f"{field}.{setting}", condition, gate))
    if guards.quiet_alerts is not None:
        condition = _condition(
            # camelCase, which no condition's (DNS-label) name can be: never mistaken for one.
            f"{policy}/quietAlerts",
            alerts_query(guards.quiet_alerts, target_namespaces),
            ComparisonOperator.EQ,
            0.0,
            endpoint,
        )
        compiled.append(
            PlatformCondition(policy, GuardKind.QUIET_ALERTS, "quietAlerts", f"{base}.quietAlerts", condition)
        )
    return compiled


def gate_condition_name(policy: str, gate: str, suffix: str) -> str:
    """`<policy>/<gate>:budget` or `<policy>/<gate>:burn-rate`: the condition one setting of a gate becomes."""
    return f"{policy}/{gate}:{suffix}"


def burn_rate_condition(guard: PlatformCondition) -> SteadyStateCondition:
    """The burn rate of a budget gate as a condition of its own, to say it in a refusal even when
    the gate sets no maxBurnRate."""
    assert guard.gate is not None
    limit = guard.gate.max_burn_rate if guard.gate.max_burn_rate is not None else math.inf
    name = gate_condition_name(guard.policy, guard.guard, "burn-rate")
    return _condition(name, burn_rate_query(guard.gate), ComparisonOperator.LE, limit, guard.condition.prometheus)


def platform_guards(policies: Iterable[ChaosPolicy], target_namespaces: Sequence[str]) -> PlatformGuards:
    """Every guard of the policies that cover an experiment (pass `applicable_policies`)."""
    compiled: list[PlatformCondition] = []
    intervals: list[float] = []
    for policy in sorted(policies, key=lambda p: p.metadata.name):
        guards = policy.spec.steady_state
        if guards is None:
            continue
        compiled.extend(_compile(policy.metadata.name, guards, target_namespaces))
        intervals.append(to_seconds(guards.interval))
    return PlatformGuards(tuple(compiled), min(intervals) if intervals else None)


# --------------------------------------------------------------------------- words for people


def next_start_estimate(
    budget_left: float, burn_rate: float | None, min_left: float, window_seconds: float
) -> float | None:
    """Seconds until the budget is back above `min_left` (shares, 0-1), or None if it is not coming back.

    The budget spent equals the mean burn rate over the window. As time passes, new errors add at
    the current burn rate and old ones leave the window, at the window's mean rate as far as we
    can know: so the spent share moves at (burn - spent) / window. An estimate, said as one.
    """
    spent, allowed = 1 - budget_left, 1 - min_left
    if spent <= allowed:
        return 0.0
    if burn_rate is None or burn_rate >= spent:
        return None
    return (spent - allowed) * window_seconds / (spent - burn_rate)


def _percent(share: float) -> str:
    return f"{format_value(round(share * 100, 2))}%"


def budget_refusal_text(guard: PlatformCondition, budget_left: float | None, burn_rate: float | None) -> str:
    """Why a run may not start for a spent budget: the budget left, the burn rate, and when it could."""
    gate = guard.gate
    assert gate is not None and gate.min_budget_remaining is not None
    minimum = gate.min_budget_remaining / 100
    window = slo_window_seconds(gate.window)
    left = "unknown" if budget_left is None else _percent(budget_left)
    burn = "unknown" if burn_rate is None else f"{format_value(round(burn_rate, 3))}x"
    text = (
        f"error budget {gate.name} ({guard.source}): {left} of the {gate.window} budget left, "
        f"below the minimum of {_percent(minimum)} ({guard.field}); "
        f"burn rate {burn} over {gate.burn_rate_window}"
    )
    if budget_left is None:
        rules = expected_rules(guard)
        text += "; a run starts once the budget can be measured and is above the minimum"
        return text + (f" ({rules})" if rules is not None else "")
    if burn_rate is None:
        return text + (
            "; the burn rate cannot be measured, so when the budget recovers cannot be estimated; a run starts "
            "once it is back above the minimum"
        )
    wait = next_start_estimate(budget_left, burn_rate, minimum, window)
    if wait is None:
        return text + "; at this burn rate the budget is not recovering, so no run can start until it drops"
    return text + f"; at this burn rate a run could start in about {format_seconds(max(wait, 1.0))}"


def breach_text(guard: PlatformCondition, breach: Breach) -> str:
    """A policy guard's breach in its own terms (the condition text for plain conditions)."""
    if guard.kind is GuardKind.QUIET_ALERTS:
        alert = breach.labels.get("alertname", "an alert")
        return (
            f"alert {alert} is firing ({format_labels(breach.labels)}), and {guard.source} allows no chaos "
            f"while a matching alert fires ({guard.field})"
        )
    if guard.kind is GuardKind.BURN_RATE:
        assert guard.gate is not None
        return (
            f"error budget {guard.guard} burns at {format_value(round(breach.value, 3))}x over "
            f"{guard.gate.burn_rate_window}, above the maximum of {format_value(breach.threshold)}x "
            f"({guard.source} {guard.field})"
        )
    if guard.kind is GuardKind.BUDGET:
        return (
            f"error budget {guard.guard}: {_percent(breach.value)} left, below the minimum of "
            f"{_percent(breach.threshold)} ({guard.source} {guard.field})"
        )
    return f"{breach.message} ({guard.source} {guard.field})"


def expected_rules(guard: PlatformCondition) -> str | None:
    """For a Sloth or Pyrra gate: the recording rules its query reads, for a refusal when it found
    no series (None for other guards)."""
    gate = guard.gate
    if gate is None or (gate.sloth is None and gate.pyrra is None):
        return None
    window = promql_duration(slo_window_seconds(gate.burn_rate_window))
    budget = guard.kind is GuardKind.BUDGET
    if gate.sloth is not None:
        selector = _sloth_selector(gate)
        rules = (
            ["slo:period_error_budget_remaining:ratio"]
            if budget
            else [f"slo:sli_error:ratio_rate{window}", "slo:error_budget:ratio"]
        )
        return f"expected Sloth's recording rules {', '.join(r + selector for r in rules)}"
    assert gate.pyrra is not None
    selector = _pyrra_selector(gate)
    if budget:
        return (
            f"expected Pyrra's generic recording rules pyrra_availability{selector} and pyrra_objective{selector} "
            "(pyrra --generic-rules)"
        )
    return (
        f"expected Pyrra's recording rules {gate.pyrra.metric}:burnrate{window}{selector} and pyrra_objective{selector}"
    )


def unmeasured_text(guard: PlatformCondition, result: ConditionResult) -> str:
    text = f"{guard.source} {guard.field} could not be checked, so nothing may run: {result.detail}"
    rules = expected_rules(guard)
    if rules is not None and result.series == 0:
        text += f"; {rules}"
    return text


def describe(guards: PlatformGuards) -> list[str]:
    """One line per guard, for `chaosguard validate` and `plan`: what it demands and when."""
    lines = []
    for guard in guards.conditions:
        gate = guard.gate
        if guard.kind is GuardKind.BUDGET and gate is not None and gate.min_budget_remaining is not None:
            what = (
                f"error budget {gate.name}: starts only with at least {format_value(gate.min_budget_remaining)}% "
                f"of the {gate.window} budget left"
            )
        elif guard.kind is GuardKind.BURN_RATE and gate is not None and gate.max_burn_rate is not None:
            what = (
                f"error budget {gate.name}: not started, and aborted, above a {format_value(gate.max_burn_rate)}x "
                f"burn rate over {gate.burn_rate_window}"
            )
        elif guard.kind is GuardKind.QUIET_ALERTS:
            what = "quiet alerts: not started, and aborted, while a matching alert fires"
        else:
            condition = guard.condition
            lines.append(
                f"{guard.source} condition {guard.guard}: holds while {condition.query} {condition.operator.value} "
                f"{format_value(condition.threshold)}, before, during and after the run"
            )
            continue
        lines.append(f"{guard.source} {what}, asking {guard.condition.query}")
    return lines


__all__ = [
    "GuardKind",
    "Phase",
    "PlatformCondition",
    "PlatformGuards",
    "alerts_query",
    "breach_text",
    "budget_query",
    "budget_refusal_text",
    "burn_rate_condition",
    "burn_rate_query",
    "describe",
    "expected_rules",
    "next_start_estimate",
    "platform_guards",
    "promql_duration",
    "unmeasured_text",
]
