"""The operator's own Prometheus metrics (prometheus-client), served on --metrics-port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ABORTS = Counter("chaosguard_aborts_total", "Runs aborted, by reason.", ["reason"])
RUNS = Counter("chaosguard_runs_total", "Runs finished, by result.", ["result"])
KILLS = Counter("chaosguard_pod_kills_total", "Pod-kill attempts, by result.", ["result"])
GUARD_CHECKS = Counter("chaosguard_guard_checks_total", "Steady-state checks, by verdict.", ["verdict"])
ACTIVE_RUNS = Gauge("chaosguard_active_runs", "Runs in progress in this operator process.")
ABORT_SECONDS = Histogram(
    "chaosguard_abort_duration_seconds",
    "From the guard's breach verdict to the run recorded as Aborted with its faults removed.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
SLI_VALUE = Gauge("chaosguard_sli_value", "Last value of each steady-state condition.", ["experiment", "condition"])
