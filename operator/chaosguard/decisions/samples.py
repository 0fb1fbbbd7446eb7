"""What an experiment's status keeps of its SLI samples: per condition a summary (the latest sample, the
worst value, counts) and a trend that covers the whole run in at most TREND_POINTS points.

A guard ticking every second for an hour takes 3,600 samples per condition; status is read by every
`kubectl get -o yaml` and written through an API server that many runs share, so it keeps a bounded
trend instead: when its points run out the step doubles and neighbours merge, each merged point
keeping the worse value and the worse status, so a breach never disappears from the chart. The
exact moment and value of the breach that ended a run are in its `abort` record.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from chaosguard.api.models import ComparisonOperator, SliSummary, SliTrend
from chaosguard.decisions.slo import ConditionResult, ConditionStatus, Verdict, format_value

TREND_POINTS = 32
NO_SAMPLE = "-"
_LETTERS = {
    ConditionStatus.HOLDING: "H",
    ConditionStatus.PENDING: "P",
    ConditionStatus.BREACHED: "B",
    ConditionStatus.UNAVAILABLE: "U",
}
_STATUSES = {letter: status.value for status, letter in _LETTERS.items()}
# Merging two points keeps the worse status: a breach outranks a near miss, which outranks a sample
# that judged nothing, which outranks a healthy one.
_RANK = {NO_SAMPLE: 0, "H": 1, "U": 2, "P": 3, "B": 4}


@dataclass(frozen=True)
class TrendPoint:
    """One point of a trend as readers see it."""

    at: datetime
    status: str  # Holding, Pending, Breached or Unavailable
    raw: str  # the value's text, "" when nothing was measured

    @property
    def value(self) -> float | None:
        try:
            number = float(self.raw)
        except ValueError:
            return None
        return None if math.isnan(number) else number


def badness(value: float | None, operator: str, threshold: float | None) -> float:
    """How far `value` is on the wrong side of `threshold` (higher: worse); -inf when nothing can be said."""
    if value is None or math.isnan(value) or threshold is None:
        return -math.inf
    if operator in (ComparisonOperator.LT, ComparisonOperator.LE):
        return value - threshold
    if operator in (ComparisonOperator.GT, ComparisonOperator.GE):
        return threshold - value
    if operator == ComparisonOperator.EQ:
        return abs(value - threshold)
    if operator == ComparisonOperator.NE:
        return -abs(value - threshold)
    return -math.inf


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _measured(text: str) -> bool:
    number = _number(text)
    return number is not None and not math.isnan(number)


def _short(value: float | None) -> str:
    if value is None:
        return NO_SAMPLE
    return format_value(value) if not math.isfinite(value) else f"{value:.4g}"


def _worse_value(a: str, b: str, operator: str, threshold: float | None) -> str:
    """The worse of two value texts; a measured value wins over none, NaN over nothing at all."""
    numbers = [text for text in (a, b) if _measured(text)]
    if numbers:
        return max(numbers, key=lambda t: badness(_number(t), operator, threshold))  # a first on a tie
    return a if a != NO_SAMPLE else b


# --------------------------------------------------------------------------- the trend


def _slots(trend: SliTrend) -> tuple[list[str], list[str]]:
    letters = list(trend.statuses)
    values = trend.values.split() if trend.values else []
    values = (values + [NO_SAMPLE] * len(letters))[: len(letters)]  # a short or long list is read, not trusted
    return letters, values


def _halve(
    letters: list[str], values: list[str], operator: str, threshold: float | None
) -> tuple[list[str], list[str]]:
    merged_letters, merged_values = [], []
    for index in range(0, len(letters), 2):
        pair_letters, pair_values = letters[index : index + 2], values[index : index + 2]
        merged_letters.append(max(pair_letters, key=lambda letter: _RANK.get(letter, 0)))
        merged_values.append(_worse_value(pair_values[0], pair_values[-1], operator, threshold))
    return merged_letters, merged_values


def trend_with(
    trend: SliTrend | None,
    at: datetime,
    status: ConditionStatus,
    value: float | None,
    operator: str,
    threshold: float | None,
    first_step: float = 1.0,
    cap: int = TREND_POINTS,
) -> SliTrend:
    """`trend` with one more sample (a new trend starting at `at`, with points `first_step` apart, for None)."""
    if cap < 2:
        raise ValueError("a trend needs at least 2 points")
    if trend is None:
        trend = SliTrend(start=at, step=max(first_step, 1e-3))
    letters, values = _slots(trend)
    step = trend.step
    index = max(0, math.floor((at - trend.start).total_seconds() / step + 0.5))
    while index >= cap:
        letters, values = _halve(letters, values, operator, threshold)
        step *= 2
        index = max(0, math.floor((at - trend.start).total_seconds() / step + 0.5))
    letters += [NO_SAMPLE] * (index + 1 - len(letters))
    values += [NO_SAMPLE] * (index + 1 - len(values))
    letter, text = _LETTERS[status], _short(value)
    if letters[index] != NO_SAMPLE:  # two samples in one point: the worse of each
        letter = max(letters[index], letter, key=lambda each: _RANK.get(each, 0))
        text = _worse_value(values[index], text, operator, threshold)
    letters[index], values[index] = letter, text
    return SliTrend(start=trend.start, step=step, statuses="".join(letters), values=" ".join(values))


def trend_points(trend: SliTrend | None) -> list[TrendPoint]:
    """The trend's points that hold a sample, each at the time its slot stands for."""
    if trend is None:
        return []
    letters, values = _slots(trend)
    return [
        TrendPoint(
            trend.start + timedelta(seconds=index * trend.step), _STATUSES[letter], "" if text == NO_SAMPLE else text
        )
        for index, (letter, text) in enumerate(zip(letters, values, strict=True))
        if letter in _STATUSES
    ]


def merge_trends(
    ours: SliTrend | None,
    theirs: SliTrend | None,
    operator: str,
    threshold: float | None,
    cap: int = TREND_POINTS,
) -> SliTrend | None:
    """Two replicas' trends of one run as one (a hand-over): every point of both, on the coarser grid."""
    if ours is None or theirs is None:
        return ours or theirs
    first = min(ours, theirs, key=lambda trend: trend.start)
    merged: SliTrend | None = SliTrend(start=first.start, step=max(ours.step, theirs.step))
    points = sorted([*trend_points(ours), *trend_points(theirs)], key=lambda point: point.at)
    for point in points:
        status = ConditionStatus(point.status)
        number = _number(point.raw) if point.raw else None
        merged = trend_with(merged, point.at, status, number, operator, threshold, cap=cap)
    return merged


# --------------------------------------------------------------------------- the summary


def summary_with(
    summary: SliSummary | None, result: ConditionResult, at: datetime, first_step: float = 1.0
) -> SliSummary:
    """`summary` (None: the condition's first sample) with the sample `result` took at `at`."""
    operator = str(result.operator.value) if result.operator is not None else (summary.operator if summary else "")
    threshold = result.threshold if result.threshold is not None else (summary.threshold if summary else None)
    if summary is None:
        summary = SliSummary(name=result.condition)
    text = _short_exact(result.value)
    worst, worst_at = summary.worst, summary.worst_at
    measured = result.value is not None and not math.isnan(result.value)
    if measured and (worst_at is None or badness(result.value, operator, threshold) > _badness_of(worst, summary)):
        worst, worst_at = text, at
    return summary.model_copy(
        update={
            "operator": operator,
            "threshold": threshold,
            "status": result.status.value,
            "value": text,
            "at": at,
            "worst": worst,
            "worst_at": worst_at,
            "samples": summary.samples + 1,
            "breaching": summary.breaching + (result.status in (ConditionStatus.PENDING, ConditionStatus.BREACHED)),
            "unavailable": summary.unavailable + (result.status is ConditionStatus.UNAVAILABLE),
            "trend": trend_with(summary.trend, at, result.status, result.value, operator, threshold, first_step),
        }
    )


def _badness_of(text: str, summary: SliSummary) -> float:
    return badness(_number(text), summary.operator, summary.threshold)


def _short_exact(value: float | None) -> str:
    """The summary's values: as the guard judged them (6 significant digits), empty for none."""
    return "" if value is None else format_value(value)


def record_verdict(slis: Sequence[SliSummary], verdict: Verdict, first_step: float = 1.0) -> list[SliSummary]:
    """Every condition the verdict judged, updated in place in the list (new ones at its end)."""
    updated = list(slis)
    for result in verdict.results:
        index = next((i for i, s in enumerate(updated) if s.name == result.condition), None)
        if index is None:
            updated.append(summary_with(None, result, verdict.at, first_step))
        else:
            updated[index] = summary_with(updated[index], result, verdict.at, first_step)
    return updated


def merge_summaries(ours: Iterable[SliSummary], theirs: Iterable[SliSummary]) -> list[SliSummary]:
    """Two replicas' summaries of one run as one (a hand-over). Both guard the same run at the same
    ticks, so the counts are those of the one that saw more, not the sum; the latest is the newer,
    the worst the worse, and the trends merge."""
    by_name = {s.name: s for s in theirs}
    merged: list[SliSummary] = []
    for own in ours:
        other = by_name.pop(own.name, None)
        merged.append(own if other is None else _merge_one(own, other))
    return merged + list(by_name.values())


def _merge_one(ours: SliSummary, theirs: SliSummary) -> SliSummary:
    operator = ours.operator or theirs.operator
    threshold = ours.threshold if ours.threshold is not None else theirs.threshold
    latest = theirs if theirs.at is not None and (ours.at is None or theirs.at > ours.at) else ours
    worst = max(
        (ours, theirs),
        key=lambda s: (s.worst_at is not None, badness(_number(s.worst), operator, threshold)),
    )
    return latest.model_copy(
        update={
            "operator": operator,
            "threshold": threshold,
            "worst": worst.worst,
            "worst_at": worst.worst_at,
            "samples": max(ours.samples, theirs.samples),
            "breaching": max(ours.breaching, theirs.breaching),
            "unavailable": max(ours.unavailable, theirs.unavailable),
            "trend": merge_trends(ours.trend, theirs.trend, operator, threshold),
        }
    )


def without_trends(slis: Iterable[SliSummary]) -> list[SliSummary]:
    """The summaries alone, as history keeps them."""
    return [s.model_copy(update={"trend": None}) for s in slis]


__all__ = [
    "NO_SAMPLE",
    "TREND_POINTS",
    "TrendPoint",
    "badness",
    "merge_summaries",
    "merge_trends",
    "record_verdict",
    "summary_with",
    "trend_points",
    "trend_with",
    "without_trends",
]


# The SLI-sample writes one operator sends the API server per second, all runs together, when nothing a
# reader acts on has changed. Each is a status write of a whole ChaosExperiment, which costs the local API
# server ~9 ms of CPU (bench/apiserver_writes.py): at a thousand runs, one write per run every 5 s would
# keep it busy with samples alone and queue every abort's write behind them.
SAMPLE_WRITES_PER_SECOND = 20.0


def sample_write_interval(guarded_runs: int, floor: float, budget: float = SAMPLE_WRITES_PER_SECOND) -> float:
    """Seconds between two sample writes of one run whose SLIs' statuses did not change: `floor` while the
    runs fit in the budget, else as long as it takes for every run to have its turn within it."""
    return max(floor, guarded_runs / budget)


def statuses_changed(written: object, slis: Sequence[SliSummary]) -> bool:
    """Whether a reader would see something new in `slis` beyond fresher numbers: an SLI whose latest
    status (Holding, Pending, Breached, Unavailable) differs from the one written, or one not written yet.
    `written` is what status holds (`currentRun.slis` as last written; anything else counts as nothing)."""
    before = {}
    if isinstance(written, list):
        before = {item.get("name"): item.get("status") for item in written if isinstance(item, dict)}
    return any(before.get(summary.name) != summary.status for summary in slis)
