"""Game-day reports: one run of a ChaosExperiment as Markdown or as a self-contained HTML page.

Pure code: no I/O and no clock. The input is the experiment as the API returns it (a plain dict);
its status is read with the models in `chaosguard.models`, and everything shown comes from there:
the run's timeline (start, every kill or fault and its result, recoveries, SLI state changes, the
abort or the end), the kills with their recovery times, the SLI samples the guard recorded, the
abort or failure reason verbatim, and "What to look at next": suggestions derived from the data.

The Markdown holds the timeline as a mermaid gantt chart plus a table; the HTML draws each SLI as
an inline SVG chart (our own code, no JavaScript, nothing fetched when the page is viewed).

Python computes and formats (`build`, then `view` and `sli_chart`: plain dataclasses of text and
coordinates); the Jinja2 templates in templates/report/ only lay them out. The HTML and SVG templates
are autoescaped, the Markdown one is not: it escapes with its own filters where Markdown needs it.
"""

from __future__ import annotations

import html
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context, select_autoescape
from jinja2.nodes import EvalContext
from markupsafe import Markup
from pydantic import ValidationError

from chaosguard.api.actions import ACTIONS
from chaosguard.api.durations import format_seconds
from chaosguard.api.models import (
    ChaosExperimentSpec,
    ChaosExperimentStatus,
    FaultRecord,
    FaultState,
    KillRecord,
    KillResult,
    Phase,
    RunStatus,
    SliSummary,
)
from chaosguard.decisions.samples import TrendPoint, trend_points

SLOW_RECOVERY_SECONDS = 30.0
MERMAID_MAX_ITEMS = 40
FORMATS = ("markdown", "html")


class ReportError(ValueError):
    """The report cannot be made (no run yet, unknown run id); the message says what to do."""


class Severity(StrEnum):
    INFO = "info"
    GOOD = "good"
    WARN = "warn"
    BAD = "bad"


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # run | kill | skip | recovery | fault | sli | abort | end | deadline
    text: str
    severity: Severity = Severity.INFO


# One point of an SLI's trend: the samples around its time, with the worse status and value among them.
SliPoint = TrendPoint


@dataclass(frozen=True)
class SliSeries:
    name: str
    query: str
    operator: str
    threshold: float | None
    for_: str
    points: tuple[SliPoint, ...]
    summary: SliSummary | None = None  # exact counts, the latest and the worst value (the points are merged)

    @property
    def sample_count(self) -> int:
        return self.summary.samples if self.summary is not None else len(self.points)


@dataclass(frozen=True)
class Recovery:
    workload: str
    killed: int
    times: tuple[float, ...]
    unrecovered: int

    @property
    def p50(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def max(self) -> float | None:
        return max(self.times) if self.times else None


@dataclass(frozen=True)
class Finding:
    severity: Severity
    title: str
    detail: str


@dataclass(frozen=True)
class GameDay:
    """Everything a report shows, computed once; the renderers only lay it out."""

    namespace: str
    name: str
    action: str
    target: str
    duration: str
    interval: str
    schedule: str
    dry_run: bool
    experiment_phase: str
    run: RunStatus
    run_ids: tuple[str, ...]
    in_progress: bool
    timeline: tuple[TimelineEntry, ...]
    recoveries: tuple[Recovery, ...]
    slis: tuple[SliSeries, ...]
    findings: tuple[Finding, ...]

    @property
    def title(self) -> str:
        return f"Game day: {self.namespace}/{self.name}, run {self.run.id}"

    @property
    def outcome(self) -> str:
        return "Running (in progress)" if self.in_progress else self.run.phase.value

    @property
    def all_recovery_times(self) -> list[float]:
        return [t for r in self.recoveries for t in r.times]


# --------------------------------------------------------------------------- reading the object


def runs_of(status: ChaosExperimentStatus) -> list[RunStatus]:
    """Every run the status still holds, oldest first; the fullest record of each id wins
    (history keeps only the last kills of a run, lastRun all of them)."""
    by_id: dict[str, RunStatus] = {}
    for run in [*status.history, *([status.last_run] if status.last_run else [])]:
        if run.phase is not Phase.SKIPPED:  # a slot a paused schedule skipped: no run to report on
            by_id[run.id] = run
    if status.current_run is not None:
        by_id[status.current_run.id] = status.current_run
    return sorted(by_id.values(), key=lambda r: (r.started_at or datetime.min.replace(tzinfo=UTC), r.id))


def choose_run(experiment: Mapping[str, Any], run_id: str | None = None) -> tuple[ChaosExperimentStatus, RunStatus]:
    """The status and the run to report on: `run_id`, else the run in progress, else the last one."""
    metadata = experiment.get("metadata") or {}
    key = f"{metadata.get('namespace', '?')}/{metadata.get('name', '?')}"
    status = ChaosExperimentStatus.model_validate(dict(experiment.get("status") or {}))
    runs = runs_of(status)
    if not runs:
        phase = status.phase.value if status.phase else "not yet seen by the operator"
        why = f": {status.message}" if status.message else ""
        raise ReportError(f"ChaosExperiment {key} has no run to report on yet (phase {phase}{why})")
    if run_id is None:
        return status, status.current_run or status.last_run or runs[-1]
    for run in runs:
        if run.id == run_id:
            return status, run
    known = ", ".join(r.id for r in runs)
    raise ReportError(f"ChaosExperiment {key} has no run {run_id!r}; the runs its status keeps are: {known}")


def _spec(experiment: Mapping[str, Any]) -> ChaosExperimentSpec | None:
    try:
        return ChaosExperimentSpec.model_validate(dict(experiment.get("spec") or {}))
    except ValidationError:
        return None


def describe_target(raw_spec: Mapping[str, Any], namespace: str) -> str:
    target = raw_spec.get("target") or {}
    selector = target.get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    expressions = [
        f"{e.get('key')} {e.get('operator')} {e.get('values') or ''}".strip()
        for e in selector.get("matchExpressions") or []
    ]
    chosen = ", ".join(p for p in [labels, *expressions] if p) or "every pod"
    namespaces = ", ".join(target.get("namespaces") or [namespace])
    mode = str(target.get("mode") or "one")
    value = target.get("value")
    how_many = {
        "one": "one pod",
        "all": "all pods",
        "fixed": f"{value} pods",
        "fixed-percent": f"{value}% of the pods",
    }.get(mode, f"mode {mode}")
    return f"{how_many} matching {chosen} in {namespaces}"


# --------------------------------------------------------------------------- building the game day


def build(experiment: Mapping[str, Any], run_id: str | None = None) -> GameDay:
    metadata = experiment.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name") or "?")
    raw_spec: Mapping[str, Any] = experiment.get("spec") or {}
    spec = _spec(experiment)
    status, run = choose_run(experiment, run_id)
    in_progress = status.current_run is not None and status.current_run.id == run.id
    slis = tuple(sli_series(raw_spec, run))
    recoveries = tuple(recoveries_of(run.kills, namespace))
    schedule = raw_spec.get("schedule") or {}
    return GameDay(
        namespace=namespace,
        name=name,
        action=str(raw_spec.get("action") or "?"),
        target=describe_target(raw_spec, namespace),
        duration=str(raw_spec.get("duration") or "?"),
        interval=str(raw_spec.get("interval") or ""),
        schedule=f"{schedule.get('cron')} ({schedule.get('timeZone', 'UTC')})" if schedule else "",
        dry_run=bool(raw_spec.get("dryRun")),
        experiment_phase=status.phase.value if status.phase else "",
        run=run,
        run_ids=tuple(r.id for r in runs_of(status)),
        in_progress=in_progress,
        timeline=tuple(timeline(run, in_progress, namespace)),
        recoveries=recoveries,
        slis=slis,
        findings=tuple(findings(run, spec, raw_spec, slis, recoveries, in_progress, namespace)),
    )


def _kill_sort_key(kill: KillRecord) -> tuple[datetime, int]:
    return kill.at, kill.round


def recoveries_of(kills: Sequence[KillRecord], home: str) -> list[Recovery]:
    by_workload: dict[str, list[KillRecord]] = {}
    for kill in kills:
        if kill.result is KillResult.KILLED:
            by_workload.setdefault(_workload(kill, home), []).append(kill)
    return [
        Recovery(
            workload=workload,
            killed=len(items),
            times=tuple(k.recovered_after_seconds for k in items if k.recovered_after_seconds is not None),
            unrecovered=sum(k.recovered_after_seconds is None for k in items),
        )
        for workload, items in sorted(by_workload.items())
    ]


def _workload(kill: KillRecord | FaultRecord, home: str) -> str:
    """`Deployment/checkout`, with its namespace when it is not the experiment's own."""
    label = kill.workload or f"pod {kill.name} (no controller)"
    return label if kill.namespace == home else f"{label} in {kill.namespace}"


def sli_series(raw_spec: Mapping[str, Any], run: RunStatus) -> list[SliSeries]:
    """One series per condition: those of the spec first (in order), then any others with samples."""
    conditions = list(((raw_spec.get("steadyState") or {}).get("conditions")) or [])
    names = [str(c.get("name")) for c in conditions]
    summaries = {s.name: s for s in run.slis}
    names += [n for n in summaries if n not in names]
    by_name = {str(c.get("name")): c for c in conditions}
    series: list[SliSeries] = []
    for condition_name in names:
        condition = by_name.get(condition_name, {})
        threshold = condition.get("threshold")
        if threshold is None and run.abort is not None and run.abort.condition == condition_name:
            threshold = run.abort.threshold
        query = str(
            condition.get("query") or (run.abort.query if run.abort and run.abort.condition == condition_name else "")
        )
        operator = str(condition.get("operator") or (run.abort.operator if run.abort else ""))
        summary = summaries.get(condition_name)
        points = tuple(trend_points(summary.trend if summary is not None else None))
        series.append(
            SliSeries(
                name=condition_name,
                query=query,
                operator=operator,
                threshold=float(threshold) if threshold is not None else None,
                for_=str(condition.get("for", "0")),
                points=points,
                summary=summary,
            )
        )
    return series


def timeline(run: RunStatus, in_progress: bool, home: str) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    if run.started_at is not None:
        deadline = f"; deadline {_clock(run.deadline)}" if run.deadline else ""
        entries.append(TimelineEntry(run.started_at, "run", f"run {run.id} started (trigger: {run.trigger}){deadline}"))
    for kill in sorted(run.kills, key=_kill_sort_key):
        pod = kill.name if kill.namespace == home else f"{kill.namespace}/{kill.name}"
        if kill.result is KillResult.KILLED:
            text = f"round {kill.round}: killed pod {pod} of {kill.workload or 'no controller'} by {kill.method}"
            entries.append(TimelineEntry(kill.at, "kill", text, Severity.WARN))
        elif kill.result is KillResult.WOULD_KILL:
            entries.append(TimelineEntry(kill.at, "kill", f"round {kill.round}: dry run, would kill pod {pod}"))
        else:
            severity = Severity.BAD if kill.result is KillResult.FAILED else Severity.INFO
            text = f"round {kill.round}: pod {pod} not killed ({kill.result.value}): {kill.message}"
            entries.append(TimelineEntry(kill.at, "skip", text, severity))
    entries.extend(_recovery_entries(run.kills, home))
    entries.extend(_pause_entries(run))
    for fault in run.faults:
        entries.extend(_fault_entries(fault, run, home))
    for summary in run.slis:
        entries.extend(_sli_transitions(summary.name, trend_points(summary.trend)))
    if run.abort is not None and not any(s.name == run.abort.condition and s.trend for s in run.slis):
        entries.append(TimelineEntry(run.abort.at, "abort", f"SLI guard: {run.abort.message}", Severity.BAD))
    if run.deadline is not None and run.finished_at is not None and run.finished_at > run.deadline:
        entries.append(TimelineEntry(run.deadline, "deadline", "deadline reached: no new faults; waiting for recovery"))
    if run.finished_at is not None and not in_progress:
        severity = {Phase.COMPLETED: Severity.GOOD, Phase.ABORTED: Severity.WARN}.get(run.phase, Severity.BAD)
        entries.append(
            TimelineEntry(run.finished_at, "end", f"run {run.phase.value} ({run.reason}): {run.message}", severity)
        )
    order = {"run": 0, "kill": 1, "skip": 1, "fault": 1, "recovery": 2, "sli": 3, "abort": 4, "deadline": 5, "end": 6}
    return sorted(entries, key=lambda e: (e.at, order.get(e.kind, 3)))


def _pause_entries(run: RunStatus) -> list[TimelineEntry]:
    """Each pause and resume: a pause took the run's faults out while its deadline kept counting."""
    entries = []
    for pause in run.pauses:
        text = f"paused by {pause.paused_by or 'unknown'}: faults taken out, no round; the deadline still counts"
        entries.append(TimelineEntry(pause.paused_at, "pause", text, Severity.WARN))
        if pause.resumed_at is not None:
            held = (pause.resumed_at - pause.paused_at).total_seconds()
            entries.append(
                TimelineEntry(
                    pause.resumed_at, "pause", f"resumed by {pause.resumed_by or 'unknown'} after {held:.1f}s"
                )
            )
    return entries


def _recovered_at(kill: KillRecord) -> datetime | None:
    if kill.result is not KillResult.KILLED or kill.recovered_after_seconds is None:
        return None
    return kill.at + timedelta(seconds=kill.recovered_after_seconds)


def _recovery_entries(kills: Sequence[KillRecord], home: str) -> list[TimelineEntry]:
    """One entry per workload and moment of recovery: kills whose workload came back within the same
    50 ms (one check of the operator, give or take the rounding of recoveredAfterSeconds) share it."""
    recovered = sorted(
        ((back, kill) for kill in kills if (back := _recovered_at(kill)) is not None), key=lambda item: item[0]
    )
    episodes: list[tuple[str, datetime, list[KillRecord]]] = []
    for back, kill in recovered:
        workload = _workload(kill, home)
        same = next((e for e in episodes if e[0] == workload and (back - e[1]).total_seconds() <= 0.05), None)
        if same is None:
            episodes.append((workload, back, [kill]))
        else:
            same[2].append(kill)
    entries = []
    for workload, back, items in episodes:
        slowest = max(k.recovered_after_seconds or 0.0 for k in items)
        pods = f"pod {items[0].name} was" if len(items) == 1 else f"the first of {len(items)} pods were"
        severity = Severity.WARN if slowest > SLOW_RECOVERY_SECONDS else Severity.GOOD
        text = f"{workload} back at full Ready strength, {_secs(slowest)} after {pods} killed"
        entries.append(TimelineEntry(back, "recovery", text, severity))
    return entries


def _on_node(fault: FaultRecord) -> str:
    """For a fault on a node (node-drain records no namespace): "node NAME"; else empty."""
    return "" if fault.namespace else f"node {fault.name}"


def _fault_entries(fault: FaultRecord, run: RunStatus, home: str) -> list[TimelineEntry]:
    pod = fault.name if fault.namespace == home else f"{fault.namespace}/{fault.name}"
    pod = _on_node(fault) or f"pod {pod}"
    entries = []
    if fault.state is FaultState.WOULD_INJECT:
        entries.append(
            TimelineEntry(fault.injected_at or run.started_at or _epoch(), "fault", f"dry run: {fault.message}")
        )
        return entries
    kind = fault.kind.lower()
    if fault.impairment:  # "partition (both) from ..." already says what it is
        kind = fault.impairment if fault.impairment.startswith(kind) else f"{kind} ({fault.impairment})"
    if fault.injected_at is not None:
        carrier = fault.container if fault.namespace else ""  # a node's record names no container
        text = f"{kind} injected into {pod}" + (f" (container {carrier})" if carrier else "")
        entries.append(TimelineEntry(fault.injected_at, "fault", text, Severity.WARN))
    if fault.removed_at is not None:
        entries.append(
            TimelineEntry(
                fault.removed_at,
                "fault",
                f"{fault.kind.lower()} removed from {pod} by {fault.removed_by}",
                Severity.GOOD,
            )
        )
    if fault.state is FaultState.FAILED:
        at = fault.removed_at or fault.injected_at or run.started_at or _epoch()
        entries.append(TimelineEntry(at, "fault", f"{kind} fault in {pod} failed: {fault.message}", Severity.BAD))
    return entries


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


def _sli_transitions(name: str, points: Sequence[SliPoint]) -> list[TimelineEntry]:
    """The moments an SLI changed state (the first sample included), not every sample."""
    entries = []
    previous = None
    for point in points:
        status = point.status
        if status == previous:
            continue
        shown = f" (value {point.raw})" if point.raw else ""
        severity = {"Holding": Severity.GOOD, "Pending": Severity.WARN}.get(status, Severity.BAD)
        text = f"SLI {name}: {status}{shown}" if previous is not None else f"SLI {name} first sample: {status}{shown}"
        entries.append(TimelineEntry(point.at, "sli", text, severity))
        previous = status
    return entries


# --------------------------------------------------------------------------- what to look at next


def findings(
    run: RunStatus,
    spec: ChaosExperimentSpec | None,
    raw_spec: Mapping[str, Any],
    slis: Sequence[SliSeries],
    recoveries: Sequence[Recovery],
    in_progress: bool,
    namespace: str,
) -> list[Finding]:
    found: list[Finding] = []
    reason = run.reason
    if in_progress:
        found.append(
            Finding(
                Severity.INFO, "This run is still in progress", "The report shows the run so far; run it again later."
            )
        )
    if reason == "SteadyStateNotHeld":
        found.append(
            Finding(
                Severity.BAD,
                "The steady state did not hold before the run, so nothing was injected",
                f"{run.message}. Fix the system (or the condition) first: "
                "chaos on an unhealthy system teaches nothing.",
            )
        )
    if run.abort is not None and run.abort.threshold is not None:
        abort = run.abort
        sli = next((s for s in slis if s.name == abort.condition), None)
        window = f" for at least {sli.for_}" if sli and sli.for_ not in ("0", "") else ""
        since = f" since {_clock(abort.since)} UTC" if abort.since else ""
        owner = f" (a guard of ChaosPolicy/{abort.policy})" if abort.policy else ""
        retune = (
            f"ChaosPolicy/{abort.policy} owns this guard: take it to the platform team"
            if abort.policy
            else "revisit the threshold or `for`"
        )
        found.append(
            Finding(
                Severity.BAD,
                f"SLI {abort.condition}{owner} breached and aborted the run",
                f"`{abort.query}` returned {abort.value} for {abort.series or 'the series'}{since}, which is not "
                f"`{abort.operator} {_num(abort.threshold)}`{window}. Find what the fault did to it: that is this game "
                f"day's finding. If users were not actually hurt, {retune}.",
            )
        )
    elif run.abort is not None or reason == "SLIUnavailable":
        message = run.abort.message if run.abort else run.message
        query = f" Query: `{run.abort.query}`." if run.abort and run.abort.query else ""
        found.append(
            Finding(
                Severity.BAD,
                "Prometheus could not answer, so the guard aborted the run (onUnavailable: abort)",
                f"{message}.{query} Check that the operator can reach the Prometheus URL (network policy, TLS, "
                "credentials, timeout) and that the query returns data during the run: an empty result or NaN "
                "counts as unavailable.",
            )
        )
    for sli in slis:
        summary = sli.summary or SliSummary(name=sli.name)
        if summary.unavailable and not (run.abort is not None and run.abort.condition == sli.name):
            found.append(
                Finding(
                    Severity.WARN,
                    f"SLI {sli.name} was unavailable in {summary.unavailable} of {summary.samples} samples",
                    "While it was unavailable this SLI guarded nothing (onUnavailable: continue). Make "
                    f"`{sli.query}` return data throughout the run, e.g. with `or vector(0)` where no traffic means "
                    "no errors.",
                )
            )
        counted = any(p.status == "Breached" for p in sli.points)  # not a near miss: it aborts, or did
        if summary.breaching and not counted and not (run.abort is not None and run.abort.condition == sli.name):
            worst_at = f" at {_clock(summary.worst_at)} UTC" if summary.worst_at else ""
            found.append(
                Finding(
                    Severity.WARN,
                    f"SLI {sli.name} breached briefly, shorter than its `for` ({sli.for_}): a near miss",
                    f"{summary.breaching} sample(s) breached `{sli.operator} {_num(sli.threshold)}`, up to "
                    f"{summary.worst}{worst_at}. Look at what happened then; a longer run or a bigger blast radius "
                    "may turn it into an abort.",
                )
            )
    unrecovered = [k for k in run.kills if k.result is KillResult.KILLED and k.recovered_after_seconds is None]
    if unrecovered and not in_progress:
        workloads = sorted({_workload(k, namespace) for k in unrecovered})
        commands = "; ".join(
            sorted(
                {f"`kubectl describe {k.workload.lower() or 'pod/' + k.name} -n {k.namespace}`" for k in unrecovered}
            )
        )
        found.append(
            Finding(
                Severity.BAD,
                f"{len(unrecovered)} killed pod(s) not back to full Ready strength: {', '.join(workloads)}",
                "The workload had not healed on its own when this report was made (the operator keeps watching "
                "for the recovery timeout after the run and records the time when it does). Look at scheduling "
                "(resources, "
                f"affinity, quotas), image pulls, crash loops and readiness probes: {commands}; "
                f"`kubectl get events -n {unrecovered[0].namespace}`.",
            )
        )
    for recovery in recoveries:
        if recovery.max is not None and recovery.max > SLOW_RECOVERY_SECONDS:
            found.append(
                Finding(
                    Severity.WARN,
                    f"{recovery.workload} took {_secs(recovery.max)} to recover (p50 {_secs(recovery.p50)})",
                    f"More than {_secs(SLOW_RECOVERY_SECONDS)} at reduced capacity after a kill. Check startup time, "
                    "readiness probe delays and image pulls, and whether there are enough replicas to absorb a loss.",
                )
            )
    found.extend(_skipped_kill_findings(run.kills))
    if reason == "DidNotRecover" and not unrecovered:
        found.append(Finding(Severity.BAD, "The system did not come back after the run", run.message))
    elif reason == "AbortRequested":
        found.append(
            Finding(
                Severity.INFO,
                "Aborted by hand (`chaosguard abort`)",
                f"{run.message}. If someone stopped it because users were hurt, that is a finding an SLI should "
                "have caught: add or tighten a steadyState condition for it.",
            )
        )
    elif reason == "Suspended":
        found.append(
            Finding(
                Severity.INFO,
                "Stopped by the big red switch (a ChaosPolicy with suspend: true)",
                f"{run.message}. Nothing starts until the policy is un-suspended: `chaosguard abort --all --undo`, "
                'or `kubectl patch chaospolicy NAME --type merge -p \'{"spec":{"suspend":false}}\'`.',
            )
        )
    elif reason in ("Window", "Blackout"):
        found.append(
            Finding(
                Severity.INFO,
                "Stopped because the allowed time window closed",
                f"{run.message}. Schedule the run earlier in the window, shorten spec.duration, or widen the window.",
            )
        )
    killed = [k for k in run.kills if k.result is KillResult.KILLED]
    would = [k for k in run.kills if k.result is KillResult.WOULD_KILL]
    if raw_spec.get("dryRun"):
        found.append(
            Finding(
                Severity.INFO,
                f"This was a dry run: {len(would)} pod(s) would have been killed",
                "Nothing was touched. Review the pods chosen above, then set spec.dryRun: false to run it for real.",
            )
        )
    elif raw_spec.get("action") == "pod-kill" and not run.kills and reason not in ("SteadyStateNotHeld",):
        found.append(
            Finding(
                Severity.WARN,
                "No pod was chosen",
                f"No eligible pod matched {describe_target(raw_spec, namespace)}. Run "
                "`chaosguard plan -f <experiment.yaml>` to see which rule left each pod out.",
            )
        )
    for fault in run.faults:
        if fault.state in (FaultState.ACTIVE, FaultState.INJECTING) and not in_progress:
            found.append(
                Finding(
                    Severity.BAD,
                    f"{fault.kind} in pod {fault.namespace}/{fault.name} is recorded as still {fault.state.value}",
                    "The run is over but the fault was never recorded as removed. Its injector removes it at the "
                    f"deadline ({_clock(fault.deadline)} UTC); check the pod's ephemeral container {fault.container}.",
                )
            )
        elif fault.state is FaultState.FAILED:
            found.append(
                Finding(Severity.WARN, f"{fault.kind} in pod {fault.namespace}/{fault.name} failed", fault.message)
            )
    if spec is not None and spec.steady_state is None and not raw_spec.get("dryRun"):
        found.append(
            Finding(
                Severity.WARN,
                "This run had no SLI guard",
                "Without spec.steadyState nothing would have stopped it had users been hurt. Add a condition on a "
                "user-facing signal (error ratio, latency) so the run aborts on its own.",
            )
        )
    serious = any(f.severity in (Severity.BAD, Severity.WARN) for f in found)
    if not serious and killed and not in_progress:
        slowest = max((r.max or 0.0) for r in recoveries) if recoveries else 0.0
        held = " and every SLI held" if slis else ""
        found.append(
            Finding(
                Severity.GOOD,
                "Nothing stood out",
                f"Every killed pod's workload was back at full strength within {_secs(slowest)}{held}. Next: widen "
                "the blast radius step by step (target.value, interval), or put it on a schedule.",
            )
        )
    return found


def _skipped_kill_findings(kills: Sequence[KillRecord]) -> list[Finding]:
    found = []
    advice = {
        KillResult.CAPPED: (
            "kill(s) were stopped by the blast-radius cap (ChaosPolicy maxPercentage)",
            "That is the policy working. If you meant to take more pods down, raise maxPercentage in the policy "
            "or add replicas; otherwise lower target.value.",
        ),
        KillResult.SKIPPED_MIN_AVAILABLE: (
            "kill(s) were skipped to keep spec.podKill.minAvailable pods Ready",
            "Lower target.value or interval, or add replicas, if you meant to test a deeper loss.",
        ),
        KillResult.SKIPPED_BUDGET: (
            "eviction(s) were refused by a PodDisruptionBudget",
            "Your PDB protected the workload. To test beyond it, set spec.podKill.respectDisruptionBudgets: false "
            "(a plain delete), deliberately.",
        ),
        KillResult.FAILED: (
            "kill(s) failed",
            "The API refused the kill: check the operator's RBAC (pods/eviction create, pods delete) and the message.",
        ),
        KillResult.GONE: (
            "chosen pod(s) were gone before the kill",
            "Something else (a rollout, another experiment) replaced them first; check what else ran at the time.",
        ),
    }
    for result, (title, fix) in advice.items():
        matching = [k for k in kills if k.result is result]
        if matching:
            severity = Severity.BAD if result is KillResult.FAILED else Severity.WARN
            found.append(Finding(severity, f"{len(matching)} {title}", f"{fix} First message: {matching[0].message}"))
    return found


# --------------------------------------------------------------------------- formatting helpers


def _clock(at: datetime | None) -> str:
    if at is None:
        return "-"
    utc = at.astimezone(UTC)
    return utc.strftime("%H:%M:%S") + f".{utc.microsecond // 1000:03d}"


def _iso(at: datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _offset(at: datetime, start: datetime | None) -> str:
    if start is None:
        return ""
    seconds = (at - start).total_seconds()
    return f"{'+' if seconds >= 0 else '-'}{abs(seconds):.1f}s"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else f"{format_seconds(value)} ({value:.0f}s)"


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.6g}"


def _other_runs(day: GameDay) -> str:
    return ", ".join(i for i in day.run_ids if i != day.run.id) or "none"


def _kill_outcome(kill: KillRecord) -> str:
    if kill.result is not KillResult.KILLED:
        return "-"
    return _secs(kill.recovered_after_seconds) if kill.recovered_after_seconds is not None else "not recovered"


def _kill_class(kill: KillRecord) -> str:
    if kill.result is KillResult.FAILED:
        return "bad"
    if kill.result is KillResult.KILLED:
        if kill.recovered_after_seconds is None:
            return "bad"
        return "warn" if kill.recovered_after_seconds > SLOW_RECOVERY_SECONDS else "good"
    return "info"


def _duration_of(run: RunStatus) -> str:
    if run.started_at is None or run.finished_at is None:
        return "-"
    return _secs((run.finished_at - run.started_at).total_seconds())


# --------------------------------------------------------------------------- Markdown


def _md_cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_code(text: str) -> str:
    longest = max((len(run) for run in text.replace("`", "\0`\0").split("\0") if run.startswith("`")), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_block(text: str, language: str = "text") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text}\n{fence}"


FAULT_COLUMNS = ("Pod", "Workload", "State", "Injected", "Deadline", "Removed", "Removed by", "Message")


def _fault_rows(run: RunStatus) -> list[tuple[str, ...]]:
    return [
        (
            f"{f.namespace}/{f.name}",
            f.workload or "-",
            f.state.value,
            _clock(f.injected_at),
            _clock(f.deadline),
            _clock(f.removed_at),
            f.removed_by or "-",
            f.message or "-",
        )
        for f in run.faults
    ]


def _mermaid_text(text: str) -> str:
    """Task names may not hold `:` (it starts the task data), `;` or `#`."""
    cleaned = text.replace(":", " ").replace(";", ",").replace("#", "").replace("\n", " ")
    return " ".join(cleaned.split())[:80] or "-"


def _mermaid_time(at: datetime) -> str:
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S") + f".{utc.microsecond // 1000:03d}"


def mermaid_gantt(day: GameDay) -> str:
    run = day.run
    start = run.started_at
    if start is None:
        return ""
    end = run.finished_at or max([start, *(e.at for e in day.timeline)])
    lines = [
        "gantt",
        f"    title {_mermaid_text(f'{day.namespace}/{day.name} run {run.id} (UTC)')}",
        "    dateFormat YYYY-MM-DD HH:mm:ss.SSS",
        "    axisFormat %H:%M:%S",
        "    section Run",
    ]
    state = "active" if day.in_progress else ("done" if run.phase is Phase.COMPLETED else "crit")
    lines.append(
        f"    {_mermaid_text(f'{day.outcome} ({run.reason or day.run.phase.value})')} :{state}, run, "
        f"{_mermaid_time(start)}, {_mermaid_time(max(end, start))}"
    )
    if run.deadline is not None and run.deadline < end:
        lines.append(f"    deadline :milestone, deadline, {_mermaid_time(run.deadline)}, 0s")
    kills = sorted(run.kills, key=_kill_sort_key)
    if kills:
        lines.append("    section Kills")
    for index, kill in enumerate(kills, 1):
        if index > MERMAID_MAX_ITEMS:
            lines.append(f"    %% {len(kills) - index + 1} more kill records: see the table")
            break
        tag = "crit, " if kill.result is KillResult.FAILED else ""
        label = f"{kill.result.value} {kill.name}"
        lines.append(f"    {_mermaid_text(label)} :{tag}milestone, k{index}, {_mermaid_time(kill.at)}, 0s")
    recovery_lines: list[str] = []
    for index, kill in enumerate(kills, 1):
        if kill.result is not KillResult.KILLED or len(recovery_lines) >= MERMAID_MAX_ITEMS:
            continue
        if kill.recovered_after_seconds is not None:
            back = kill.at + timedelta(seconds=kill.recovered_after_seconds)
            tag = "crit, " if kill.recovered_after_seconds > SLOW_RECOVERY_SECONDS else ""
            label = f"after {kill.name}, back in {_secs(kill.recovered_after_seconds)}"
        else:
            back, tag = max(end, kill.at), "crit, "
            label = f"after {kill.name}, not recovered"
        recovery_lines.append(
            f"    {_mermaid_text(label)} :{tag}v{index}, {_mermaid_time(kill.at)}, {_mermaid_time(back)}"
        )
    if recovery_lines:
        lines += ["    section Recovery", *recovery_lines]
    fault_lines = []
    for index, fault in enumerate(run.faults, 1):
        if fault.injected_at is None:
            continue
        until = fault.removed_at or fault.deadline or end
        tag = "crit, " if fault.state is FaultState.FAILED else ""
        label = f"{fault.kind.lower()} {fault.name}" + (f" removed by {fault.removed_by}" if fault.removed_by else "")
        fault_lines.append(
            f"    {_mermaid_text(label)} :{tag}f{index}, {_mermaid_time(fault.injected_at)}, {_mermaid_time(until)}"
        )
    if fault_lines:
        lines += ["    section Faults", *fault_lines[:MERMAID_MAX_ITEMS]]
    for sli_index, sli in enumerate(day.slis, 1):
        spans = _bad_spans(sli, end)
        if not spans:
            continue
        lines.append(f"    section SLI {_mermaid_text(sli.name)}")
        for span_index, (status, first, last) in enumerate(spans[:MERMAID_MAX_ITEMS], 1):
            tag = "crit, " if status in ("Breached", "Unavailable") else "active, "
            lines.append(
                f"    {_mermaid_text(status)} :{tag}s{sli_index}x{span_index}, {_mermaid_time(first)}, "
                f"{_mermaid_time(max(last, first))}"
            )
    return "\n".join(lines)


def _bad_spans(sli: SliSeries, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """Stretches where the SLI was not Holding: (status, first sample, the next sample or the end)."""
    spans: list[tuple[str, datetime, datetime]] = []
    points = list(sli.points)
    index = 0
    while index < len(points):
        status = points[index].status
        if status == "Holding":
            index += 1
            continue
        first = points[index].at
        while index < len(points) and points[index].status == status:
            index += 1
        last = points[index].at if index < len(points) else max(end, points[index - 1].at)
        spans.append((status, first, last))
    return spans


def _compact_samples(points: Sequence[SliPoint]) -> list[tuple[str, int, str, str]]:
    """Consecutive points with the same status and value as one row: (time span, count, status, value)."""
    rows: list[tuple[str, int, str, str]] = []
    group: list[SliPoint] = []
    for point in [*points, None]:
        if group and (point is None or (point.status, point.raw) != (group[0].status, group[0].raw)):
            span = _clock(group[0].at) if len(group) == 1 else f"{_clock(group[0].at)} to {_clock(group[-1].at)}"
            rows.append((span, len(group), group[0].status, group[0].raw or "-"))
            group = []
        if point is not None:
            group.append(point)
    return rows


# --------------------------------------------------------------------------- the view the templates lay out


@dataclass(frozen=True)
class Table:
    """A table as both formats show it: cells already formatted as text; each format escapes them."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...] = ()  # per row, for the HTML (severity colours); empty: no class


@dataclass(frozen=True)
class SliView:
    name: str
    query: str
    healthy_while: str  # "< 0.05"
    breach_after: str  # the condition's `for`, "" when a breach counts at once
    sample_count: int
    spread: str  # "min 0.001, max 0.5, last 0.5", "" when nothing finite was measured
    samples: Table | None
    chart: SliChart | None  # drawn for the HTML page only


@dataclass(frozen=True)
class ReportView:
    """Every text a report shows, formatted once; the templates decide only where it goes."""

    title: str
    namespace: str
    name: str
    badge: str
    outcome: str
    in_progress: bool
    phase: str
    reason: str
    message: str
    abort_message: str | None
    steady_state_before: str
    steady_state_after: str
    experiment: str
    action: str
    targets: str
    duration: str
    schedule: str
    run: str
    other_runs: str
    started: str
    finished: str
    counts: tuple[tuple[str, str], ...]  # ("Pods killed", "2") or ("Faults injected", "3"), by the table of actions
    recovery: str  # over every workload, "" when nothing recovered
    findings: tuple[Finding, ...]
    gantt: str  # mermaid source, "" without a start time
    timeline: Table
    kills: Table | None
    kills_kept: str  # "Only the last N of M ..." when status trimmed the records
    recoveries: Table | None
    recoveries_total: tuple[tuple[str, ...], ...]  # the "all" row when more than one workload recovered
    faults: Table | None
    slis: tuple[SliView, ...]
    generated_at: str


def view(day: GameDay, generated_at: datetime | None = None, charts: bool = False) -> ReportView:
    """The report's content, formatted; `charts` draws each SLI's SVG (the HTML page shows them)."""
    run = day.run
    times = day.all_recovery_times
    kills = sorted(run.kills, key=_kill_sort_key)
    recoveries = tuple(
        (r.workload, str(r.killed), _secs(r.p50), _secs(r.max), str(r.unrecovered or "-")) for r in day.recoveries
    )
    total = (
        (
            (
                "all",
                str(sum(r.killed for r in day.recoveries)),
                _secs(statistics.median(times)),
                _secs(max(times)),
                str(sum(r.unrecovered for r in day.recoveries) or "-"),
            ),
        )
        if len(day.recoveries) > 1 and times
        else ()
    )
    return ReportView(
        title=day.title,
        namespace=day.namespace,
        name=day.name,
        badge="Running" if day.in_progress else run.phase.value,
        outcome=day.outcome,
        in_progress=day.in_progress,
        phase=run.phase.value,
        reason=run.reason,
        message=run.message,
        abort_message=run.abort.message if run.abort is not None else None,
        steady_state_before=run.steady_state_before,
        steady_state_after=run.steady_state_after,
        experiment=f"{day.namespace}/{day.name}",
        action=day.action + (" (dry run)" if day.dry_run else ""),
        targets=day.target,
        duration=day.duration + (f", a round every {day.interval}" if day.interval else ""),
        schedule=day.schedule,
        run=f"{run.id} (trigger: {run.trigger})",
        other_runs=_other_runs(day),
        started=_iso(run.started_at),
        finished=_iso(run.finished_at) + (f" (after {_duration_of(run)})" if run.finished_at else ""),
        counts=run_counts(day.action, run),
        recovery=f"p50 {_secs(statistics.median(times))}, max {_secs(max(times))}" if times else "",
        findings=day.findings,
        gantt=mermaid_gantt(day),
        timeline=Table(
            ("Time (UTC)", "T+", "Event"),
            tuple((_clock(e.at), _offset(e.at, run.started_at), e.text) for e in day.timeline),
            tuple(e.severity.value for e in day.timeline),
        ),
        kills=Table(
            ("Round", "Time (UTC)", "Pod", "Workload", "Result", "Method", "Recovered after", "Message"),
            tuple(
                (
                    str(k.round),
                    _clock(k.at),
                    k.name,
                    k.workload or "-",
                    k.result.value,
                    k.method or "-",
                    _kill_outcome(k),
                    k.message,
                )
                for k in kills
            ),
            tuple(_kill_class(k) for k in kills),
        )
        if kills
        else None,
        kills_kept=(
            f"Only the last {len(run.kills)} of {run.kills_total} kill records are kept in status."
            if len(run.kills) < run.kills_total
            else ""
        ),
        recoveries=Table(("Workload", "Killed", "p50", "max", "Not recovered"), recoveries) if recoveries else None,
        recoveries_total=total,
        faults=Table(FAULT_COLUMNS, tuple(_fault_rows(run))) if run.faults else None,
        slis=tuple(_sli_view(sli, run, charts) for sli in day.slis),
        generated_at=_iso(generated_at) if generated_at else "",
    )


KILLS_LABEL = "Pods killed"
INJECTIONS_LABEL = "Faults injected"


def run_counts(action: str, run: RunStatus) -> tuple[tuple[str, str], ...]:
    """What the run did, counted as its action counts (kills or injections: the table of actions); an
    action the table does not know shows both counts rather than guessing which one applies."""
    facts = ACTIONS.get(action)
    kills = (KILLS_LABEL, str(run.kills_total))
    injections = (INJECTIONS_LABEL, str(run.injections_total))
    if facts is None:
        return (kills, injections)
    return (kills,) if facts.counts == "kills" else (injections,)


def _sli_view(sli: SliSeries, run: RunStatus, chart: bool) -> SliView:
    spread = ""
    if sli.summary is not None and sli.summary.samples:
        # From the summary, exact: the chart's points each keep the worse of the samples they merge.
        worst = f", worst {sli.summary.worst} at {_clock(sli.summary.worst_at)}" if sli.summary.worst_at else ""
        spread = f"last {sli.summary.value or '-'}{worst}"
    samples = tuple((span, str(count), status, value) for span, count, status, value in _compact_samples(sli.points))
    return SliView(
        name=sli.name,
        query=sli.query,
        healthy_while=f"{sli.operator} {_num(sli.threshold)}",
        breach_after=sli.for_ if sli.for_ not in ("0", "") else "",
        sample_count=sli.sample_count,
        spread=spread,
        samples=Table(("Time (UTC)", "Points", "Status", "Value"), samples) if samples else None,
        chart=sli_chart(sli, run, run.kills) if chart else None,
    )


# --------------------------------------------------------------------------- the SLI chart, scaled


@dataclass(frozen=True)
class ChartBox:
    """The chart's size and the plot area inside it, in SVG user units."""

    width: int = 720
    height: int = 220
    left: int = 64
    right_margin: int = 16
    top: int = 28
    bottom_margin: int = 36

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right_margin

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom_margin

    @property
    def right(self) -> int:
        return self.left + self.plot_width

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height


@dataclass(frozen=True)
class LegendItem:
    status: str  # the CSS class of its dot
    label: str
    x: int


@dataclass(frozen=True)
class AxisLabel:
    at: float  # y of a value tick, x of a time label
    text: str
    anchor: str = "end"


@dataclass(frozen=True)
class KillMark:
    x: float
    title: str


@dataclass(frozen=True)
class Threshold:
    y: float
    healthy_while: str  # "< 0.05"


@dataclass(frozen=True)
class SampleDot:
    status: str  # the CSS class: Holding, Pending, Breached or Unavailable
    x: float
    y: float
    raw: str
    tip: str


@dataclass(frozen=True)
class SliChart:
    """One SLI's chart, scaled: every coordinate computed here, laid out by templates/report/sli_chart.svg.j2."""

    box: ChartBox
    title: str
    legend: tuple[LegendItem, ...]
    kill_legend_x: int
    samples: tuple[SampleDot, ...]  # none: the chart says "no samples recorded"
    value_ticks: tuple[AxisLabel, ...] = ()
    time_labels: tuple[AxisLabel, ...] = ()
    kill_marks: tuple[KillMark, ...] = ()
    threshold: Threshold | None = None
    lines: tuple[tuple[tuple[float, float], ...], ...] = ()  # the measured stretches, each 2+ points


_LEGEND = (
    ("Holding", "holding"),
    ("Pending", "breaching (within for)"),
    ("Breached", "breached"),
    ("Unavailable", "no value"),
)


def sli_chart(sli: SliSeries, run: RunStatus, kills: Sequence[KillRecord] = ()) -> SliChart:
    """An SVG line chart of one SLI: one circle per sample (coloured by status, hollow at the bottom
    when nothing was measured), the threshold as a dashed line, kills as dotted vertical marks."""
    box = ChartBox()
    times = [p.at for p in sli.points]
    start = min([*times, *([run.started_at] if run.started_at else [])], default=None)
    end = max([*times, *([run.finished_at] if run.finished_at else [])], default=None)
    title = f"SLI {sli.name}: {sli.query} {sli.operator} {_num(sli.threshold)}"
    legend = []
    legend_x = box.left
    for status, label in _LEGEND:
        legend.append(LegendItem(status, label, legend_x))
        legend_x += 24 + 6 * len(label)
    if start is None or end is None or not sli.points:
        return SliChart(box, title, tuple(legend), legend_x, samples=())
    span = max((end - start).total_seconds(), 1e-3)
    finite = [v for v in (p.value for p in sli.points) if v is not None and math.isfinite(v)]
    low, high, ticks = nice_scale([*finite, *([sli.threshold] if sli.threshold is not None else [])])

    def x_of(at: datetime) -> float:
        return box.left + box.plot_width * (at - start).total_seconds() / span

    def y_of(value: float) -> float:
        clamped = min(max(value, low), high)
        return box.top + box.plot_height * (1 - (clamped - low) / (high - low))

    time_labels = tuple(
        AxisLabel(
            box.left + box.plot_width * fraction,
            f"+{span * fraction:.1f}s" if fraction else _clock(start),
            "start" if fraction == 0 else ("end" if fraction == 1 else "middle"),
        )
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    lines: list[tuple[tuple[float, float], ...]] = []
    stretch: list[tuple[float, float]] = []
    for point in [*sli.points, None]:
        if point is not None and point.value is not None:
            stretch.append((x_of(point.at), y_of(point.value)))
            continue
        if len(stretch) > 1:
            lines.append(tuple(stretch))
        stretch = []
    return SliChart(
        box,
        title,
        tuple(legend),
        legend_x,
        samples=tuple(
            SampleDot(
                point.status if point.status in ("Holding", "Pending", "Breached", "Unavailable") else "Unavailable",
                x_of(point.at),
                box.bottom if point.value is None else y_of(point.value),
                point.raw,
                f"{_clock(point.at)} {point.status} {point.raw or 'no value'}",
            )
            for point in sli.points
        ),
        value_ticks=tuple(AxisLabel(y_of(value), _num(value)) for value in ticks),
        time_labels=time_labels,
        kill_marks=tuple(
            KillMark(x_of(kill.at), f"{_clock(kill.at)} killed {kill.name}")
            for kill in kills
            if kill.result is KillResult.KILLED and start <= kill.at <= end
        ),
        threshold=(
            Threshold(y_of(sli.threshold), f"{sli.operator} {_num(sli.threshold)}")
            if sli.threshold is not None
            else None
        ),
        lines=tuple(lines),
    )


def nice_scale(values: Sequence[float], count: int = 4) -> tuple[float, float, list[float]]:
    """A y range covering `values` with round tick values (0, 0.02, 0.04, ...), about `count` ticks."""
    if not values:
        return 0.0, 1.0, [0.0, 0.5, 1.0]
    low, high = min(values), max(values)
    if high - low <= 1e-9 * max(abs(low), abs(high), 1.0):  # flat (or flat but for float dust)
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    if low > 0 and low < (high - low):
        low = 0.0  # a ratio or a latency reads best from zero
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    digits = max(0, 3 - math.floor(math.log10(step)))
    first, last = math.floor(low / step), math.ceil(high / step)
    while round(first * step, digits) > low:
        first -= 1
    while round(last * step, digits) < high or last <= first:
        last += 1
    ticks = [round(i * step, digits) for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


# --------------------------------------------------------------------------- templates

_MARKDOWN_ICONS = {Severity.BAD: "🔴", Severity.WARN: "🟠", Severity.INFO: "🔵", Severity.GOOD: "🟢"}


def _e(text: object) -> Markup:
    """HTML-escaped with the standard library's spelling (`&quot;`, `&#x27;`), as the reports always were;
    markupsafe would write `&#34;` and `&#39;`: the same characters, other bytes."""
    return Markup(html.escape(str(text), quote=True))


@pass_eval_context
def _escape_output(context: EvalContext, value: object) -> object:
    """Every `{{ value }}` of an autoescaped template, escaped by `_e` before autoescaping sees it (which
    then leaves the Markup alone); Markdown templates get their values untouched."""
    if context.autoescape and not isinstance(value, Markup):
        return _e(value)
    return value


def _inline(text: str) -> Markup:
    """Escaped text whose `backticked` spans (as the findings are written) become <code>."""
    parts = re.split(r"`([^`]+)`", text)
    return Markup("").join(Markup(f"<code>{_e(p)}</code>") if i % 2 else _e(p) for i, p in enumerate(parts))


def _coordinate(value: float) -> str:
    return f"{value:.1f}"


def _environment() -> Environment:
    """The templates in templates/report/: `*.html.j2` autoescaped, `*.md.j2` not (Markdown has its own
    escaping, applied by the filters where a cell, a code span or a fenced block needs it)."""
    environment = Environment(
        loader=PackageLoader("chaosguard", "templates/report"),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2", "svg.j2"), disabled_extensions=("md.j2",), default=True
        ),
        finalize=_escape_output,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        md_cell=_md_cell,
        md_code=_md_code,
        md_block=_md_block,
        inline=_inline,
        icon=_MARKDOWN_ICONS.__getitem__,
        coordinate=_coordinate,
    )
    return environment


_TEMPLATES = _environment()


def markdown(day: GameDay) -> str:
    text = _TEMPLATES.get_template("report.md.j2").render(v=view(day))
    return text.rstrip() + "\n"


def html_page(day: GameDay, generated_at: datetime | None = None) -> str:
    return _TEMPLATES.get_template("report.html.j2").render(v=view(day, generated_at, charts=True))


# --------------------------------------------------------------------------- entry points


def render_markdown(experiment: Mapping[str, Any], run_id: str | None = None) -> str:
    return markdown(build(experiment, run_id))


def render_html(experiment: Mapping[str, Any], run_id: str | None = None, generated_at: datetime | None = None) -> str:
    return html_page(build(experiment, run_id), generated_at)


def render(
    experiment: Mapping[str, Any],
    fmt: str = "markdown",
    run_id: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    if fmt == "markdown":
        return render_markdown(experiment, run_id)
    if fmt == "html":
        return render_html(experiment, run_id, generated_at)
    raise ReportError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
