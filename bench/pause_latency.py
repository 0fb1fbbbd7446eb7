"""Pause latency: from the API call that sets spec.paused on a running latency experiment to the moment
its status shows every fault Removed (a clean-up container added to each pod), on kwok-simulated pods
with the default guard interval (5 s: the promise is within the interval + 1 s). Per run: the experiment
reaches two Active faults; the bench patches spec.paused; a 20 ms poll of the experiment stamps when every
fault is Removed. Repeated RUNS times on one operator."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client

from bench.abort_latency import stamp_when
from bench.apply_to_kill import percentile
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import install_crds, new_shop, running_operator, status_of

RUNS = 10
EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: latency
  latency: {{delay: 100ms}}
  target: {{selector: {{matchLabels: {{app: checkout}}}}, mode: fixed, value: 2}}
  duration: 5m
"""


def faults(api: client.ApiClient, name: str) -> list[str]:
    run = status_of(api, "bench", name).get("currentRun") or {}
    return [str(fault.get("state")) for fault in run.get("faults") or []]


def run() -> dict[str, tuple[float, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-pause-"))
    latencies: list[float] = []
    with ControlPlane(workdir / "cp", default_bin_dir()) as plane:
        install_crds(plane)
        with running_operator(plane, workdir):
            api = plane.api_client()
            new_shop(api, "bench")
            for index in range(RUNS):
                name = f"pause-{index}"
                plane.kubectl("apply", "-n", "bench", "-f", "-", input=EXPERIMENT.format(name=name))
                stamp_when(lambda n=name: faults(api, n) == ["Active", "Active"], 60)
                asked = time.perf_counter()
                client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    "chaosguard.dev", "v1alpha1", "bench", "chaosexperiments", name, {"spec": {"paused": True}}
                )
                removed = stamp_when(lambda n=name: faults(api, n) == ["Removed", "Removed"], 30)
                latencies.append(removed - asked)
                plane.kubectl("delete", "chaosexperiment", name, "-n", "bench")
    print(f"pause -> every fault removed over {RUNS} runs: median {statistics.median(latencies):.2f}s")
    return {
        "pause_to_faults_removed_p50": (statistics.median(latencies), "s"),
        "pause_to_faults_removed_p95": (percentile(latencies, 0.95), "s"),
    }
