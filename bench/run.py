"""`make bench`: runs the benchmarks and prints one `BENCH <name> <value> <unit>` line per figure.

`--only NAME` runs just the benchmark that produces NAME."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Callable

# benchmark module -> the figures it prints
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "bench.selection_speed": ("select_10k_pods",),
    "bench.apply_to_kill": ("apply_to_first_kill_p50", "apply_to_first_kill_p95"),
    "bench.abort_latency": ("abort_latency_p50", "abort_latency_p95"),
}
# Benchmarks that are scripts of their own (they boot a VM) and print their BENCH lines themselves.
SCRIPTS: dict[str, tuple[str, ...]] = {
    "bench/bench_netem.py": (
        "netem_apply",
        "netem_remove",
        "netem_error_10ms",
        "netem_error_100ms",
        "netem_error_1s",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="one figure name, e.g. select_10k_pods")
    args = parser.parse_args(argv)
    chosen = [module for module, names in BENCHMARKS.items() if args.only is None or args.only in names]
    scripts = [script for script, names in SCRIPTS.items() if args.only is None or args.only in names]
    if not chosen and not scripts:
        known = ", ".join(name for names in [*BENCHMARKS.values(), *SCRIPTS.values()] for name in names)
        print(f"unknown benchmark {args.only!r}; known: {known}", file=sys.stderr)
        return 2
    for module_name in chosen:
        runner: Callable[[], dict[str, tuple[float, str]]] = importlib.import_module(module_name).run
        for name, (value, unit) in runner().items():
            if args.only is None or args.only == name:
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
