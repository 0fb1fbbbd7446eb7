"""The operator's own Prometheus metrics (prometheus-client), served on --metrics-port."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from chaosguard.api.models import Phase

ABORTS = Counter("chaosguard_aborts_total", "Runs aborted, by reason.", ["reason"])
RUNS = Counter("chaosguard_runs_total", "Runs finished, by result.", ["result"])
KILLS = Counter("chaosguard_pod_kills_total", "Pod-kill attempts, by result.", ["result"])
GUARD_CHECKS = Counter("chaosguard_guard_checks_total", "Steady-state checks, by verdict.", ["verdict"])
ACTIVE_RUNS = Gauge("chaosguard_active_runs", "Runs in progress that this operator process started or took up.")
_active_runs: set[str] = set()
ABORT_SECONDS = Histogram(
    "chaosguard_abort_duration_seconds",
    "From the guard's breach verdict to the run recorded as Aborted with its faults removed.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
SLI_VALUE = Gauge("chaosguard_sli_value", "Last value of each steady-state condition.", ["experiment", "condition"])

# The loop itself (issue 10): how late guard ticks start, what the API costs, what waits, what is written.
GUARD_TICK_LATENESS = Histogram(
    "chaosguard_guard_tick_lateness_seconds",
    "How late each guard tick started against its schedule (one observation per run per tick).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GUARD_VERDICT_HANDOVER = Histogram(
    "chaosguard_guard_verdict_handover_seconds",
    "From a verdict judged on the guard's thread to its start on kopf's loop (how busy that loop is).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GUARD_TICK_QUERIES = Histogram(
    "chaosguard_guard_tick_queries",
    "Distinct (endpoint, query) pairs asked in one guard tick, for all runs due in it.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
GC_PAUSE = Histogram(
    "chaosguard_gc_pause_seconds",
    "How long each garbage collection held every thread of the operator (the guard's too), by generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
API_CALL_SECONDS = Histogram(
    "chaosguard_api_call_seconds",
    "Kubernetes API calls made by the engine, by call and lane (urgent: aborts and rollbacks).",
    ["call", "lane"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_CALLS_QUEUED = Gauge(
    "chaosguard_api_calls_queued", "API calls submitted to a lane and not yet finished, by lane.", ["lane"]
)
STATUS_WRITES = Counter(
    "chaosguard_status_writes_total",
    "Status writes, by why: change (a state change, at once), verdict (the first write of a run's end: its "
    "result alone, ahead of routine writes) or batch (SLI samples).",
    ["why"],
)

# For dashboards and alerts (issue 14): recovery, live faults and their deadlines, leadership.
POD_RECOVERY_SECONDS = Histogram(
    "chaosguard_pod_recovery_seconds",
    "From a pod-kill to its workload back at full Ready strength.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
ACTIVE_FAULTS = Gauge(
    "chaosguard_active_faults",
    "Network faults in place (injecting or active) for each experiment's run.",
    ["experiment"],
)
FAULT_DEADLINE = Gauge(
    "chaosguard_fault_deadline_timestamp_seconds",
    "The latest deadline among an experiment's faults still in place (Unix time); absent when none is.",
    ["experiment"],
)
LEADING = Gauge(
    "chaosguard_leading",
    "1 while this replica leads (starts runs, kills, injects: the Lease holder, or the only replica), else 0.",
)
GUARD_LAST_VERDICT = Gauge(
    "chaosguard_guard_last_verdict_timestamp_seconds",
    "When this replica's guard last judged each running run (Unix time); every replica guards every run.",
    ["experiment"],
)

# Series that exist from the start at 0, so that increase() and rate() see a run's or an abort's first
# count (a counter series born at 1 has no earlier sample to count from).
for _result in (Phase.COMPLETED, Phase.ABORTED, Phase.FAILED):
    RUNS.labels(_result.value)
for _reason in ("SLIBreached", "SLIUnavailable", "AbortRequested"):
    ABORTS.labels(_reason)


def count_run(run_id: str, active: bool) -> None:
    """Counts a run in ACTIVE_RUNS once, however often it is started, taken up or ended here: a standby
    that aborts a run it never started must not take the gauge below zero."""
    if active:
        _active_runs.add(run_id)
    else:
        _active_runs.discard(run_id)
    ACTIVE_RUNS.set(len(_active_runs))


_collection_started: float | None = None


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    global _collection_started
    if phase == "start":
        _collection_started = time.perf_counter()
    elif _collection_started is not None:
        GC_PAUSE.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _collection_started)
        _collection_started = None


def time_garbage_collections() -> None:
    """Observes every collection's pause in GC_PAUSE from now on (once per process)."""
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)
