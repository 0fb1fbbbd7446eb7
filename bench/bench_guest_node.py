"""Benchmarks of the latency fault on a real kubelet whose kernel has netem: the guest node.

Run on the host:   .venv/bin/python bench/bench_guest_node.py
It boots the netem guest with a kubelet, containerd and CNI in it (localcluster/guestnode.py), runs
the operator here as a process, applies examples/latency-port.yaml (aimed at a server pod's address,
100 ms) REPETITIONS times against a client pod, and prints:

    BENCH netem_apply_real_node <ms> ms      median, from the injector container's start to its
                                             `added:` line (the qdisc in place), both as the kubelet
                                             reports them
    BENCH latency_e2e_error_100ms <ms> ms    median of (RTT with the fault - RTT without) - 100 ms,
                                             measured by busybox ping inside the client pod

TCG caveat: the guest is emulated (QEMU without KVM) on a shared machine, so every step in it, the
injector's shell and tc included, runs many times slower than on a real node; these figures are
upper bounds for a real node, not estimates of it. The kubelet reports a container's start to the
second (RFC 3339), so netem_apply_real_node can read up to 1 s high; the `added:` line's time is
containerd's log timestamp (nanoseconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/bench_guest_node.py` puts bench/ first on sys.path: use the repository root instead.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), *(entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench")]

import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

from localcluster import guestnode, guestpods  # noqa: E402
from localcluster.controlplane import default_bin_dir  # noqa: E402
from localcluster.operator import install_crds  # noqa: E402
from localcluster.realnode import build_images  # noqa: E402
from localcluster.wait import wait_for  # noqa: E402

REPETITIONS = 5
DELAY_MS = 100.0
EXPERIMENT = "checkout-db-latency"  # examples/latency-port.yaml


def measure(kubectl: guestpods.Kubectl, pair: guestpods.Pair) -> tuple[list[float], list[float]]:
    before = {
        pod: guestpods.ping(kubectl, pair.namespace, pod, pair.server_ip, count=21).median_ms for pod in pair.clients
    }
    applies, errors = [], []
    for _ in range(REPETITIONS):
        experiment = guestpods.example(
            "latency-port.yaml",
            target={"selector": {"matchLabels": {"app": "client"}}, "mode": "one"},
            latency={"delay": f"{DELAY_MS:.0f}ms", "destinationCIDRs": [f"{pair.server_ip}/32"]},
            duration="2m",
        )
        kubectl("apply", "-n", pair.namespace, "-f", "-", input=experiment)
        fault = guestpods.active_fault(kubectl, pair.namespace, EXPERIMENT)
        pod, container = fault["name"], fault["container"]
        added = guestpods.log_line_at(kubectl, pair.namespace, pod, container, "chaosguard-netem: added:")
        applies.append((added - guestpods.ephemeral_started_at(kubectl, pair.namespace, pod, container)) * 1000)
        during = guestpods.ping(kubectl, pair.namespace, pod, pair.server_ip, count=21).median_ms
        errors.append(during - before[pod] - DELAY_MS)
        guestpods.delete_experiment(kubectl, pair.namespace, EXPERIMENT)
        wait_for(
            lambda pod=pod: "netem" not in guestpods.qdiscs_in_pod(kubectl, pair.namespace, pod),  # type: ignore[misc]
            timeout=120,
            interval=0.5,
            what=f"the delay out of {pod}",
        )
    return applies, errors


def main() -> int:
    if problem := guestnode.guest_node_problem():
        print(f"no guest node here: {problem}", file=sys.stderr)
        return 1
    images = build_images(guestnode.GUEST_IMAGES)
    with tempfile.TemporaryDirectory(prefix="bench-guest-node-") as scratch:
        workdir = Path(scratch)
        with guestnode.guest_cluster(workdir, default_bin_dir(), images) as (plane, node):
            print(f"guest node: {json.dumps(node.timings)}", file=sys.stderr, flush=True)
            install_crds(plane)
            kubectl = guestpods.kubectl_for(plane)
            kubectl("apply", "-f", str(guestpods.EXAMPLES / "policy-default.yaml"))
            pair = guestpods.create_pair(kubectl, f"bench-{uuid.uuid4().hex[:6]}")
            operator = guestpods.operator_for(plane, kubectl, workdir / "operator.log").start()
            try:
                applies, errors = measure(kubectl, pair)
            finally:
                operator.stop()
    print(f"apply ms {[round(a) for a in applies]}; error ms {[round(e, 2) for e in errors]}", file=sys.stderr)
    print(f"BENCH netem_apply_real_node {statistics.median(applies):.1f} ms", flush=True)
    print(f"BENCH latency_e2e_error_100ms {statistics.median(errors):.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
