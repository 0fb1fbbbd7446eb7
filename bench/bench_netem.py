"""Benchmark of the latency injector (operator/chaosguard/runtime/injector/netem.sh) on a real tc netem.

Run on the host:   .venv/bin/python bench/bench_netem.py
It boots the netem guest (localcluster/vm.py), runs itself inside with --here, and prints:

    BENCH netem_apply <ms> ms          median time from starting the injector to the fault in place
    BENCH netem_remove <ms> ms         median time from SIGTERM to the injector gone, qdisc removed
    BENCH netem_error_10ms <ms> ms     added RTT minus configured delay, at 10 ms
    BENCH netem_error_100ms <ms> ms    ... at 100 ms
    BENCH netem_error_1s <ms> ms       ... at 1 s
    BENCH netem_loss_error_30pct <pts> points   measured loss minus 30, loss 30 % over 1000 UDP probes
    BENCH netem_rate_error_1mbit <pct> %        bulk TCP goodput under a 1mbit rate, minus 1 mbit/s, in %
    BENCH partition_apply <ms> ms      median time from starting a partition injector to its filters in place

`--here` runs the measurements in this kernel directly (root and netem needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/bench_netem.py` puts bench/ first on sys.path, where other benchmarks' modules
# (e.g. bench/select.py) would shadow the standard library: use the repository root instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), *(entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench")]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from chaosguard.decisions.netem import Impairment, injector_command, network_command, partition_command  # noqa: E402
from localcluster import netns, vm  # noqa: E402

REPETITIONS = 21
PINGS = 21
ERROR_DELAYS = {"10ms": 0.010, "100ms": 0.100, "1s": 1.0}
LOSS_PROBES = 1000
RATE_SECONDS = 10.0
RATE_SETTLE = 2.0
SINK_PORT = 7100

EXPLANATION = """\
How these were measured ({where}):
- netem_apply: wall time from starting `ip netns exec <ns> dash netem.sh inject ... --tc "qdisc add ..."`
  until it prints its `holding:` line, which it does right after `tc` added the qdisc; median of
  {reps} runs in a fresh pair of namespaces (each run checked: the root qdisc is chaosguard's).
  This is what the operator waits for: process start, the script's checks, one `tc show`, one
  `tc add`. The bare `tc qdisc add` / `tc qdisc del` alone took {raw_add:.1f} / {raw_del:.1f} ms (median).
- netem_remove: wall time from SIGTERM to the injector having exited, which it does right after
  `tc qdisc del` returned; median of the same {reps} runs (each checked: default qdisc back).
- netem_error_X: median ping RTT ({pings} pings, 50 ms apart, from the target namespace to its
  peer over a veth pair) with a root netem delay of X, minus the median RTT without it, minus X.
  Positive = more delay than configured. Baseline RTT {baseline:.3f} ms.
- netem_loss_error_30pct: {loss_probes} numbered UDP echoes 2 ms apart from the target to its peer
  with `loss 30%` on the target's egress; the share never answered, minus 30 (percentage points).
  The binomial standard deviation at this count is 1.4 points.
- netem_rate_error_1mbit: one TCP connection sending as fast as it can for {rate_seconds:.0f} s under
  `rate 1mbit`; payload bytes counted by the receiver over the last {rate_window:.0f} s (after slow
  start), as bits/s, minus 1 mbit/s, in % of it. TCP/IP/Ethernet headers are about 4 % of a full
  frame, so about -4 % is the injector doing exactly what it was told. Goodput {goodput:.3f} mbit/s.
- partition_apply: as netem_apply, for a both-ways partition of one CIDR and one port
  (egress prio + filters, ingress qdisc + filters, in one `tc -batch`); each run checked: 0 of 10
  probes to the cut CIDR/port answered.
Under TCG emulation every process start costs tens to hundreds of ms, so apply/remove here are an
upper bound for a real node; the delay errors are timer-driven and transfer better."""


def _in(seconds: int) -> int:
    """The injector's absolute deadline (unix seconds) `seconds` from now."""
    return int(time.time()) + seconds


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def measure() -> dict[str, object]:
    script = str(netns.SCRIPT)
    results: dict[str, object] = {}
    with netns.topology_with_echo() as topology:
        target, device = topology.target, topology.device
        argv = injector_command("10ms", "0ms", 0, _in(600), [], [], device, now=time.time(), script=script)
        apply_times, remove_times = [], []
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            injector = netns.Injector.start(target, argv)
            injector.wait_for_line("holding:")
            apply_times.append(time.perf_counter() - started)
            assert netns.is_ours(topology.qdisc()), injector.output()
            started = time.perf_counter()
            injector.signal(signal.SIGTERM)
            code = injector.wait_exit(60)
            remove_times.append(time.perf_counter() - started)
            assert code == 143, injector.output()
            assert topology.qdisc()["handle"] == "0:", injector.output()

        raw_add, raw_del = [], []
        tc = ["tc", "-n", target, "qdisc"]
        for _ in range(REPETITIONS):
            started = time.perf_counter()
            subprocess.run([*tc, "add", "dev", device, "root", "handle", "ca05:", "netem", "delay", "10ms"], check=True)
            raw_add.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([*tc, "del", "dev", device, "root", "handle", "ca05:"], check=True)
            raw_del.append(time.perf_counter() - started)

        baseline = netns.ping_rtts(target, netns.NEAR_V4, PINGS)
        errors = {}
        samples = {}
        for name, delay in ERROR_DELAYS.items():
            injector = netns.Injector.start(
                target, injector_command(name, "0ms", 0, _in(600), [], [], device, now=time.time(), script=script)
            )
            injector.wait_for_line("holding:")
            during = netns.ping_rtts(target, netns.NEAR_V4, PINGS)
            injector.signal(signal.SIGTERM)
            assert injector.wait_exit(60) == 143, injector.output()
            errors[name] = _median_ms(during) - _median_ms(baseline) - delay * 1000
            samples[name] = [round(value * 1000, 3) for value in during]

        results.update(measure_loss_rate_partition(topology, script))

    results["apply_ms"] = _median_ms(apply_times)
    results["remove_ms"] = _median_ms(remove_times)
    results["apply_samples_ms"] = [round(v * 1000, 1) for v in apply_times]
    results["remove_samples_ms"] = [round(v * 1000, 1) for v in remove_times]
    results["raw_add_ms"] = _median_ms(raw_add)
    results["raw_del_ms"] = _median_ms(raw_del)
    results["baseline_ms"] = _median_ms(baseline)
    results["errors_ms"] = errors
    results["ping_samples_ms"] = samples
    return results


def measure_loss_rate_partition(topology: netns.Topology, script: str) -> dict[str, object]:
    target, device = topology.target, topology.device
    assert netns.udp_burst(target, netns.NEAR_V4, 7001, 50).lost_percent == 0, "the baseline lost probes"
    injector = netns.Injector.start(
        target, network_command(Impairment(loss=30), _in(600), [], [], device, now=time.time(), script=script)
    )
    injector.wait_for_line("holding:")
    burst = netns.udp_burst(target, netns.NEAR_V4, 7001, LOSS_PROBES)
    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(60) == 143, injector.output()

    injector = netns.Injector.start(
        target, network_command(Impairment(rate="1mbit"), _in(600), [], [], device, now=time.time(), script=script)
    )
    injector.wait_for_line("holding:")
    sink = netns.TcpSink(topology.peer, netns.NEAR_V4, SINK_PORT)
    started = time.monotonic()
    netns.bulk_send(target, netns.NEAR_V4, SINK_PORT, RATE_SECONDS)
    goodput = sink.rate_bits(started + RATE_SETTLE, started + RATE_SECONDS)
    sink.close()
    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(60) == 143, injector.output()

    argv = partition_command([f"{netns.FAR_V4}/32"], [7001], "both", _in(600), device, now=time.time(), script=script)
    partition_times = []
    for _ in range(REPETITIONS):
        started = time.perf_counter()
        injector = netns.Injector.start(target, argv)
        injector.wait_for_line("holding:")
        partition_times.append(time.perf_counter() - started)
        cut = netns.udp_burst(target, netns.FAR_V4, 7001, 10, linger=0.3)
        assert cut.replies == [], f"{len(cut.replies)} probes passed the partition"
        injector.signal(signal.SIGTERM)
        assert injector.wait_exit(60) == 143, injector.output()
    return {
        "loss_measured_percent": burst.lost_percent,
        "goodput_bits": goodput,
        "partition_apply_ms": _median_ms(partition_times),
        "partition_samples_ms": [round(v * 1000, 1) for v in partition_times],
    }


def report(results: dict[str, object], where: str) -> None:
    errors = results["errors_ms"]
    assert isinstance(errors, dict)
    print(
        EXPLANATION.format(
            where=where,
            reps=REPETITIONS,
            pings=PINGS,
            raw_add=results["raw_add_ms"],
            raw_del=results["raw_del_ms"],
            baseline=results["baseline_ms"],
            loss_probes=LOSS_PROBES,
            rate_seconds=RATE_SECONDS,
            rate_window=RATE_SECONDS - RATE_SETTLE,
            goodput=float(str(results["goodput_bits"])) / 1e6,
        )
    )
    print(f"apply samples (ms): {results['apply_samples_ms']}")
    print(f"remove samples (ms): {results['remove_samples_ms']}")
    print(f"BENCH netem_apply {results['apply_ms']:.1f} ms")
    print(f"BENCH netem_remove {results['remove_ms']:.1f} ms")
    for name in ERROR_DELAYS:
        print(f"BENCH netem_error_{name} {errors[name]:.2f} ms")
    print(f"partition apply samples (ms): {results['partition_samples_ms']}")
    print(f"BENCH netem_loss_error_30pct {float(str(results['loss_measured_percent'])) - 30:.2f} points")
    print(f"BENCH netem_rate_error_1mbit {(float(str(results['goodput_bits'])) / 1e6 - 1) * 100:.2f} %")
    print(f"BENCH partition_apply {results['partition_apply_ms']:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--here", action="store_true", help="measure in this kernel (root, netem needed)")
    parser.add_argument("--json", type=Path, help="with --here: also write the results as JSON")
    options = parser.parse_args()

    if options.here:
        problem = netns.netem_problem()
        if problem:
            print(f"cannot measure here: {problem}", file=sys.stderr)
            return 2
        results = measure()
        if options.json:
            options.json.write_text(json.dumps(results, indent=2))
        else:
            report(results, f"directly in kernel {os.uname().release}")
        return 0

    problem = vm.boot_problem()
    if problem:
        print(f"cannot boot a netem guest, so nothing was measured: {problem}", file=sys.stderr)
        return 2
    results_dir = vm.new_results_dir("chaosguard-bench-")
    output = results_dir / "bench.json"
    run = vm.run_in_guest(f"{sys.executable} bench/bench_netem.py --here --json {output}", results_dir)
    if run.returncode != 0 or not output.is_file():
        print(f"the benchmark failed in the guest (exit {run.returncode}):\n{run.tail()}", file=sys.stderr)
        return 1
    boot = f"{run.boot_seconds:.0f}" if run.boot_seconds is not None else "?"
    where = (
        f"inside a QEMU/TCG guest running kernel {vm.find_kernel().name}, booted by virtme-ng in {boot} s; "
        f"whole run {run.total_seconds:.0f} s; raw results in {output}"
    )
    report(json.loads(output.read_text()), where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
