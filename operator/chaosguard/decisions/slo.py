"""The SLO guard's decision: given the latest query outcomes, is the steady state holding?

Pure code: no I/O, no clock, no Kubernetes and no HTTP. The Prometheus client
(`chaosguard.clients.prometheus`) turns queries into `QueryOutcome`s; `evaluate` turns those, the
conditions of `spec.steadyState` and the persisted `GuardState` into a `Verdict`. The state is a
plain value that goes in and comes back out, so the operator can keep it in the object's status
and an operator restarted mid-run resumes the `for` timers where they were.

Rules (DESIGN.md "SLI guard", notes/faults.md section 6):

- A condition holds when `value <operator> threshold` holds for **every** series its query
  returns; the breach names the offending series.
- A breach counts once it has persisted at least `for` (0: the first breaching sample counts).
  A healthy sample of a series resets its timer; a series that drops out of a successful result
  is forgotten (as Prometheus does for alerts). A query that could not be evaluated, or a NaN
  sample, neither confirms nor resets a timer: it is unknown, not healthy.
- Unreachable, HTTP error, timeout, an empty result or NaN make a condition unavailable. With
  `onUnavailable: abort` that aborts; with `continue` it is reported but does not abort.
- A counted breach wins over unavailability: it aborts in both modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from chaosguard.api.durations import format_seconds, to_seconds
from chaosguard.api.models import ComparisonOperator, OnUnavailable, SteadyStateCondition

# --------------------------------------------------------------------------- query outcomes


@dataclass(frozen=True)
class Sample:
    """One series of an instant-vector result: its labels and its value (may be NaN or ±Inf)."""

    labels: Mapping[str, str]
    value: float


class UnavailableKind(StrEnum):
    UNREACHABLE = "Unreachable"  # connection refused, DNS, TLS
    TIMEOUT = "Timeout"  # no answer within the endpoint's timeout
    HTTP_ERROR = "HTTPError"  # non-200, including PromQL errors (bad_data, execution)
    BAD_RESPONSE = "BadResponse"  # not a Prometheus answer, or not an instant vector/scalar
    EMPTY = "EmptyResult"  # the query returned no series
    NAN = "NaN"  # a series whose value is NaN (e.g. 0/0 with no traffic)
    INVALID_REQUEST = "InvalidRequest"  # the endpoint cannot be queried as configured (URL, header, CA)
    NOT_QUERIED = "NotQueried"  # no outcome was supplied for a condition


@dataclass(frozen=True)
class QueryOk:
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class QueryUnavailable:
    kind: UnavailableKind
    detail: str


QueryOutcome = QueryOk | QueryUnavailable


def ok(*samples: Sample) -> QueryOk:
    return QueryOk(tuple(samples))


def unavailable(kind: UnavailableKind, detail: str) -> QueryUnavailable:
    return QueryUnavailable(kind, detail)


# --------------------------------------------------------------------------- comparison and formatting

_COMPARE: dict[ComparisonOperator, Callable[[float, float], bool]] = {
    ComparisonOperator.LT: lambda v, t: v < t,
    ComparisonOperator.LE: lambda v, t: v <= t,
    ComparisonOperator.GT: lambda v, t: v > t,
    ComparisonOperator.GE: lambda v, t: v >= t,
    ComparisonOperator.EQ: lambda v, t: v == t,
    ComparisonOperator.NE: lambda v, t: v != t,
}


def holds(value: float, operator: ComparisonOperator, threshold: float) -> bool:
    """`value <operator> threshold`, exactly as written (no tolerance for ==/!=). False for NaN."""
    return _COMPARE[operator](value, threshold)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(labels: Mapping[str, str]) -> str:
    """PromQL-style selector text: `name{a="1",b="2"}`, labels sorted; `{}` for none."""
    name = labels.get("__name__", "")
    inner = ",".join(f'{key}="{_escape(labels[key])}"' for key in sorted(labels) if key != "__name__")
    return f"{name}{{{inner}}}"


def series_key(labels: Mapping[str, str]) -> str:
    """The stable identity of a series inside `GuardState` (its full label set)."""
    return format_labels(labels)


def format_value(value: float, reference: float | None = None) -> str:
    """Short text for a value; full precision when the short form would look equal to `reference`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = f"{value:.6g}"
    if reference is not None and value != reference and text == f"{reference:.6g}":
        return repr(value)
    return text


def format_time(at: datetime) -> str:
    """`14:02:05Z` (UTC), the form used in verdict messages."""
    return at.astimezone(UTC).strftime("%H:%M:%SZ")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _seconds_text(seconds: float) -> str:
    return format_seconds(seconds) if seconds > 0 else "0s"


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class GuardState:
    """Since when each (condition, series) has been breaching. A plain, persistable value.

    `breaching_since[condition_name][series_key] = first breaching sample's evaluation time`.
    """

    breaching_since: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)

    def to_wire(self) -> dict[str, dict[str, str]]:
        """JSON-friendly form for the object's status (RFC 3339 UTC timestamps)."""
        return {
            condition: {key: _iso(since) for key, since in sorted(series.items())}
            for condition, series in sorted(self.breaching_since.items())
            if series
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Mapping[str, str]] | None) -> GuardState:
        if not data:
            return cls()
        return cls(
            {condition: {key: _parse_iso(since) for key, since in series.items()} for condition, series in data.items()}
        )


# --------------------------------------------------------------------------- verdict


class VerdictKind(StrEnum):
    HEALTHY = "Healthy"
    BREACHED = "Breached"
    UNAVAILABLE = "Unavailable"


class ConditionStatus(StrEnum):
    HOLDING = "Holding"
    PENDING = "Pending"  # breaching, but not yet for `for`
    BREACHED = "Breached"  # breaching for at least `for`: counts
    UNAVAILABLE = "Unavailable"


@dataclass(frozen=True)
class Breach:
    """One series of one condition that does not hold."""

    condition: str
    query: str
    labels: Mapping[str, str]
    value: float
    operator: ComparisonOperator
    threshold: float
    for_seconds: float
    since: datetime
    at: datetime

    @property
    def elapsed_seconds(self) -> float:
        return max(0.0, (self.at - self.since).total_seconds())

    @property
    def counts(self) -> bool:
        return self.elapsed_seconds >= self.for_seconds

    @property
    def message(self) -> str:
        value = format_value(self.value, self.threshold)
        comparison = f"value {value} {format_labels(self.labels)} is not {self.operator.value} "
        comparison += format_value(self.threshold)
        if self.counts:
            timing = f"for {_seconds_text(self.elapsed_seconds)}, since {format_time(self.since)}"
            return f"SLI {self.condition} breached: {comparison} ({timing})"
        timing = (
            f"for {_seconds_text(self.elapsed_seconds)} of {_seconds_text(self.for_seconds)}, "
            f"since {format_time(self.since)}"
        )
        return f"SLI {self.condition} breaching: {comparison} ({timing})"


@dataclass(frozen=True)
class Unavailability:
    condition: str
    query: str
    kind: UnavailableKind
    detail: str
    labels: Mapping[str, str] | None = None  # the NaN series, for kind NaN

    @property
    def message(self) -> str:
        return f"SLI {self.condition} unavailable ({self.kind.value}): {self.detail}"


@dataclass(frozen=True)
class ConditionResult:
    """What one condition looked like at this evaluation, for status and evidence.

    `value`/`labels` are the deciding series: the longest-breaching one when it does not hold,
    otherwise the healthy series nearest to its threshold. None when nothing was measured.
    """

    condition: str
    status: ConditionStatus
    value: float | None
    labels: Mapping[str, str] | None
    series: int
    detail: str = ""
    operator: ComparisonOperator | None = None  # the condition's, so that readers can tell worse from better
    threshold: float | None = None


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    abort: bool
    message: str
    at: datetime
    state: GuardState
    breaches: tuple[Breach, ...] = ()  # counted breaches, longest-standing first
    pending: tuple[Breach, ...] = ()  # breaching, not yet for `for`
    unavailable: tuple[Unavailability, ...] = ()
    results: tuple[ConditionResult, ...] = ()

    @property
    def breach(self) -> Breach | None:
        return self.breaches[0] if self.breaches else None

    @property
    def reason(self) -> str:
        """A CamelCase reason for Events and status conditions."""
        if self.kind is VerdictKind.BREACHED:
            return "SLIBreached"
        if self.kind is VerdictKind.UNAVAILABLE:
            return "SLIUnavailable"
        return "SLIHealthy"


# --------------------------------------------------------------------------- evaluation


@dataclass
class _ConditionEvaluation:
    result: ConditionResult
    state: dict[str, datetime]
    breaches: list[Breach]
    pending: list[Breach]
    unavailable: list[Unavailability]


def _margin(value: float, threshold: float) -> float:
    return abs(value - threshold) if math.isfinite(value) else math.inf


def _evaluate_condition(
    condition: SteadyStateCondition,
    outcome: QueryOutcome | None,
    previous: Mapping[str, datetime],
    now: datetime,
) -> _ConditionEvaluation:
    name, query = condition.name, condition.query
    if outcome is None:
        outcome = QueryUnavailable(UnavailableKind.NOT_QUERIED, "no query outcome for this condition")
    if isinstance(outcome, QueryOk) and not outcome.samples:
        outcome = QueryUnavailable(UnavailableKind.EMPTY, f"the query returned no series: {query}")
    if isinstance(outcome, QueryUnavailable):
        # Unknown: keep the timers as they were, neither confirmed nor reset.
        return _ConditionEvaluation(
            ConditionResult(
                name,
                ConditionStatus.UNAVAILABLE,
                None,
                None,
                0,
                outcome.detail,
                condition.operator,
                condition.threshold,
            ),
            dict(previous),
            [],
            [],
            [Unavailability(name, query, outcome.kind, outcome.detail)],
        )

    for_seconds = to_seconds(condition.for_)
    state: dict[str, datetime] = {}
    breaching: list[Breach] = []
    nans: list[Unavailability] = []
    healthy: list[Sample] = []
    for sample in outcome.samples:
        key = series_key(sample.labels)
        if math.isnan(sample.value):
            if key in previous:
                state[key] = previous[key]
            nans.append(
                Unavailability(
                    name,
                    query,
                    UnavailableKind.NAN,
                    f"series {format_labels(sample.labels)} is NaN (no data, e.g. 0/0 without traffic)",
                    dict(sample.labels),
                )
            )
        elif holds(sample.value, condition.operator, condition.threshold):
            healthy.append(sample)
        else:
            since = min(previous.get(key, now), now)  # a since in the future would delay the abort
            state[key] = since
            breaching.append(
                Breach(
                    name,
                    query,
                    dict(sample.labels),
                    sample.value,
                    condition.operator,
                    condition.threshold,
                    for_seconds,
                    since,
                    now,
                )
            )
    breaching.sort(key=lambda b: (b.since, series_key(b.labels)))
    counted = [b for b in breaching if b.counts]
    pending = [b for b in breaching if not b.counts]
    count = len(outcome.samples)
    if counted:
        first = counted[0]
        result = ConditionResult(name, ConditionStatus.BREACHED, first.value, first.labels, count, first.message)
    elif nans:
        result = ConditionResult(name, ConditionStatus.UNAVAILABLE, math.nan, nans[0].labels, count, nans[0].detail)
    elif pending:
        first = pending[0]
        result = ConditionResult(name, ConditionStatus.PENDING, first.value, first.labels, count, first.message)
    else:
        nearest = min(healthy, key=lambda s: _margin(s.value, condition.threshold))
        result = ConditionResult(name, ConditionStatus.HOLDING, nearest.value, dict(nearest.labels), count)
    result = replace(result, operator=condition.operator, threshold=condition.threshold)
    return _ConditionEvaluation(result, state, counted, pending, nans)


def evaluate(
    conditions: Sequence[SteadyStateCondition],
    outcomes_by_condition_name: Mapping[str, QueryOutcome],
    breach_state: GuardState,
    now: datetime,
    on_unavailable: OnUnavailable,
    always_abort_when_unavailable: Collection[str] = (),
) -> Verdict:
    """Decides healthy, breached or unavailable for one guard tick; see the module docstring.
    Conditions named in `always_abort_when_unavailable` (the cluster owners') abort when they
    cannot be judged, whatever `on_unavailable` says."""
    if now.tzinfo is None:
        raise ValueError("evaluate() needs a timezone-aware `now` (use datetime.now(UTC))")
    new_state: dict[str, Mapping[str, datetime]] = {}
    breaches: list[Breach] = []
    pending: list[Breach] = []
    missing: list[Unavailability] = []
    results: list[ConditionResult] = []
    for condition in conditions:
        evaluation = _evaluate_condition(
            condition,
            outcomes_by_condition_name.get(condition.name),
            breach_state.breaching_since.get(condition.name, {}),
            now,
        )
        if evaluation.state:
            new_state[condition.name] = evaluation.state
        breaches.extend(evaluation.breaches)
        pending.extend(evaluation.pending)
        missing.extend(evaluation.unavailable)
        results.append(evaluation.result)
    breaches.sort(key=lambda b: b.since)  # stable: condition order breaks ties
    state = GuardState(new_state)
    common: dict[str, Any] = {
        "at": now,
        "state": state,
        "breaches": tuple(breaches),
        "pending": tuple(pending),
        "unavailable": tuple(missing),
        "results": tuple(results),
    }

    if breaches:
        message = breaches[0].message
        if len(breaches) > 1:
            message += f"; and {len(breaches) - 1} more breaching series"
        return Verdict(VerdictKind.BREACHED, True, message, **common)
    if missing:
        first = missing[0]
        message = first.message
        if len(missing) > 1:
            message += f"; and {len(missing) - 1} more unavailable"
        strict = [m for m in missing if m.condition in always_abort_when_unavailable]
        if strict and on_unavailable is not OnUnavailable.ABORT:
            message = strict[0].message + " (a ChaosPolicy guard: unavailable always aborts)"
            return Verdict(VerdictKind.UNAVAILABLE, True, message, **common)
        if on_unavailable is OnUnavailable.ABORT:
            message += " (onUnavailable: abort)"
            return Verdict(VerdictKind.UNAVAILABLE, True, message, **common)
        message += " (onUnavailable: continue, not aborting)"
        return Verdict(VerdictKind.UNAVAILABLE, False, message, **common)
    if pending:
        message = "steady state holds; " + pending[0].message
        if len(pending) > 1:
            message += f"; and {len(pending) - 1} more breaching series"
        return Verdict(VerdictKind.HEALTHY, False, message, **common)
    return Verdict(VerdictKind.HEALTHY, False, f"steady state holds: all {len(results)} SLI conditions hold", **common)


__all__ = [
    "Breach",
    "ConditionResult",
    "ConditionStatus",
    "GuardState",
    "QueryOk",
    "QueryOutcome",
    "QueryUnavailable",
    "Sample",
    "Unavailability",
    "UnavailableKind",
    "Verdict",
    "VerdictKind",
    "evaluate",
    "format_labels",
    "format_time",
    "format_value",
    "holds",
    "ok",
    "series_key",
    "unavailable",
]
