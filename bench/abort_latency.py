"""Abort latency of the SLI guard: from the moment a breaching sample is queryable in Prometheus to
the moment the experiment is Aborted (a pod-kill run leaves no fault to remove), with the guard
interval at 1 s. Per run: a guarded experiment reaches Running; the test flips its error ratio;
a 20 ms poll of Prometheus's query API stamps when the breaching value is first answered; a 20 ms
poll of the experiment stamps when its status says Aborted. Repeated RUNS times on one operator.

`run_platform` measures the same with the guard owned by a ChaosPolicy (spec.steadyState, interval
1 s) and none in the experiment: the cluster owners' guard must be as fast as the author's."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.apply_to_kill import percentile
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    install_crds,
    new_shop,
    running_operator,
    status_of,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals, instant_query

RUNS = 20
POLL = 0.02
EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: pod-kill
  podKill: {{gracePeriodSeconds: 1}}
  target: {{selector: {{matchLabels: {{app: checkout}}}}, mode: one}}
  duration: 5m
  interval: 30s
  steadyState:
    prometheus: {{url: {url}, timeout: 500ms}}
    interval: 1s
    conditions:
      - {{name: error-ratio, query: 'demo_error_ratio{{app="{app}"}}', operator: "<", threshold: 0.05}}
"""
UNGUARDED_EXPERIMENT = EXPERIMENT[: EXPERIMENT.index("  steadyState:")]
POLICY = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosPolicy
metadata: {{name: bench-guards}}
spec:
  steadyState:
    prometheus: {{url: {url}, timeout: 500ms}}
    interval: 1s
    conditions:
      - {{name: error-ratio, query: 'demo_error_ratio{{app="{app}"}}', operator: "<", threshold: 0.05}}
"""


def stamp_when(predicate: Callable[[], bool], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(POLL)
    raise TimeoutError("the awaited moment did not come")


def run() -> dict[str, tuple[float, str]]:
    latencies = measure(platform=False)
    return {
        "abort_latency_p50": (statistics.median(latencies), "s"),
        "abort_latency_p95": (percentile(latencies, 0.95), "s"),
    }


def run_platform() -> dict[str, tuple[float, str]]:
    latencies = measure(platform=True)
    return {"platform_guard_abort_p95": (percentile(latencies, 0.95), "s")}


def measure(platform: bool) -> list[float]:
    """Breach queryable -> Aborted, RUNS times; the guard is the experiment's, or a policy's."""
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-abort-"))
    latencies: list[float] = []
    with (
        MetricsTarget() as target,
        PrometheusServer(workdir / "prometheus", [target]) as prometheus,
        ControlPlane(workdir / "cp", default_bin_dir()) as plane,
    ):
        install_crds(plane)
        with running_operator(plane, workdir):
            api = plane.api_client()
            new_shop(api, "bench")
            for index in range(RUNS):
                app, name = f"bench-{index}", f"abort-{index}"
                query = f'demo_error_ratio{{app="{app}"}}'
                target.set_error_ratio(0.001, app=app)
                prometheus.wait_for_value(query, equals(0.001))
                if platform:
                    plane.kubectl("apply", "-f", "-", input=POLICY.format(url=prometheus.url, app=app))
                template = UNGUARDED_EXPERIMENT if platform else EXPERIMENT
                manifest = template.format(name=name, url=prometheus.url, app=app)
                plane.kubectl("apply", "-n", "bench", "-f", "-", input=manifest)
                wait_for_phase(api, "bench", name, "Running", timeout=60)
                target.set_error_ratio(0.5, app=app)
                queryable = stamp_when(
                    lambda q=query: any(value == 0.5 for _, value in instant_query(prometheus.url, q)), 30
                )
                aborted = stamp_when(lambda n=name: status_of(api, "bench", n).get("phase") == "Aborted", 30)
                latencies.append(aborted - queryable)
                plane.kubectl("delete", "chaosexperiment", name, "-n", "bench")
    owner = "a ChaosPolicy's" if platform else "the experiment's"
    print(
        f"# abort_latency: {RUNS} runs, {owner} guard, interval 1s; median {statistics.median(latencies):.3f}s, "
        f"min {min(latencies):.3f}s, max {max(latencies):.3f}s (20 ms polling on both ends)"
    )
    return latencies
