"""`make bench`: runs the benchmarks and prints one `BENCH <name> <value> <unit>` line per figure.

`--only NAME` runs just the benchmark that produces NAME; a group name (scale_100, scale_1000, apiserver_writes) runs
that benchmark and prints all its figures. The scale benchmarks boot their own control plane with
hundreds of runs and take minutes, so they run only when named."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Callable

# benchmark ("module" for its run(), or "module:function") -> the figures it prints
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "bench.selection_speed": ("select_10k_pods",),
    "bench.report_render": ("report_markdown_largest", "report_html_largest"),
    "bench.apply_to_kill": ("apply_to_first_kill_p50", "apply_to_first_kill_p95"),
    "bench.abort_latency": ("abort_latency_p50", "abort_latency_p95"),
    "bench.apply_ci": (
        "apply_run_end_to_exit_p50",
        "apply_run_end_to_exit_p95",
        "apply_interrupt_to_exit_p50",
        "apply_interrupt_to_exit_p95",
    ),
    "bench.abort_latency:run_platform": ("platform_guard_abort_p95",),
    "bench.node_drain": ("node_drain_evict_to_recovered_p50",),
    "bench.failover": (
        "failover_breach_to_aborted_p50",
        "failover_breach_to_aborted_p95",
        "failover_pods_killed_after_breach",
    ),
    "bench.pause_latency": ("pause_to_faults_removed_p50", "pause_to_faults_removed_p95"),
}
_SCALE_FIGURES = (
    "apply_to_running_p95",
    "guard_tick_late_p99",
    "breach_to_faults_removed_p95",
    "breach_to_aborted_p95",
    "operator_cpu_pct",
    "operator_rss_mb",
    "status_writes_per_run_per_s",
    "standby_cpu_pct",
    "standby_rss_mb",
    "status_size_p95",
)
APISERVER_WRITES_FIGURES = ("real_per_s", "real_cpu_ms", "real_1000_s", "floor_per_s", "floor_cpu_ms")
# Benchmarks that run only when named: a group name selects all of its figures.
ON_REQUEST: dict[str, tuple[str, ...]] = {
    f"bench.scale:run_{n}": tuple(f"scale_{n}_{figure}" for figure in _SCALE_FIGURES) for n in (100, 1000)
}
# The API server's own cost of 1,000 verdict writes (issue 24): boots its own control plane.
ON_REQUEST["bench.apiserver_writes"] = tuple(f"apiserver_writes_{figure}" for figure in APISERVER_WRITES_FIGURES)
GROUPS: dict[str, str] = {f"scale_{n}": f"bench.scale:run_{n}" for n in (100, 1000)}
GROUPS["apiserver_writes"] = "bench.apiserver_writes"
# Benchmarks that are scripts of their own (they boot a VM) and print their BENCH lines themselves.
SCRIPTS: dict[str, tuple[str, ...]] = {
    # Boots the real node (root; run alone: flock /tmp/chaosguard-realnode.lock make bench ONLY=...).
    "bench/bench_stress.py": ("stress_abort_to_stopped_p50", "stress_abort_to_stopped_p95"),
    "bench/bench_guest_node.py": ("netem_apply_real_node", "latency_e2e_error_100ms"),
    "bench/bench_netem.py": (
        "netem_apply",
        "netem_remove",
        "netem_error_10ms",
        "netem_error_100ms",
        "netem_error_1s",
        "netem_loss_error_30pct",
        "netem_rate_error_1mbit",
        "partition_apply",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="one figure name, e.g. select_10k_pods")
    args = parser.parse_args(argv)
    group = GROUPS.get(args.only or "")
    chosen = [module for module, names in BENCHMARKS.items() if args.only is None or args.only in names]
    chosen += [entry for entry, names in ON_REQUEST.items() if entry == group or args.only in names]
    scripts = [script for script, names in SCRIPTS.items() if args.only is None or args.only in names]
    if not chosen and not scripts:
        known = ", ".join(
            [
                *GROUPS,
                *(name for names in [*BENCHMARKS.values(), *ON_REQUEST.values(), *SCRIPTS.values()] for name in names),
            ]
        )
        print(f"unknown benchmark {args.only!r}; known: {known}", file=sys.stderr)
        return 2
    for entry in chosen:
        module_name, _, function = entry.partition(":")
        runner: Callable[[], dict[str, tuple[float, str]]] = getattr(
            importlib.import_module(module_name), function or "run"
        )
        for name, (value, unit) in runner().items():
            if args.only is None or args.only == name or entry == group:
                print(f"BENCH {name} {value:.3f} {unit}", flush=True)
    for script in scripts:
        result = subprocess.run([sys.executable, script], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            if not line.startswith("BENCH ") or args.only is None or line.split()[1] == args.only:
                print(line, flush=True)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
