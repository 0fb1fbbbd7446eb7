"""Time from `kubectl apply` of a pod-kill experiment to the first pod being deleted, on the local
control plane with the operator running as a process. The clock starts just before the kubectl
process is spawned and stops when a pod watch (opened beforehand) delivers the first pod with a
deletionTimestamp. Repeated RUNS times, one experiment at a time, on a 5-replica Deployment."""

from __future__ import annotations

import math
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    install_crds,
    new_shop,
    running_operator,
    wait_for_phase,
    wait_for_ready_pods,
)

RUNS = 20
EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: pod-kill
  podKill: {{gracePeriodSeconds: 1}}
  target: {{selector: {{matchLabels: {{app: checkout}}}}, mode: one}}
  duration: 1s
"""


def first_deletion(api: client.ApiClient, namespace: str, resource_version: str, found: queue.Queue[float]) -> None:
    stream = watch.Watch()
    for event in stream.stream(
        client.CoreV1Api(api).list_namespaced_pod, namespace, resource_version=resource_version, timeout_seconds=60
    ):
        pod: Any = event["object"]
        if pod.metadata.deletion_timestamp is not None or event["type"] == "DELETED":
            found.put(time.perf_counter())
            stream.stop()
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def run() -> dict[str, tuple[float, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-"))
    latencies: list[float] = []
    with ControlPlane(workdir, default_bin_dir()) as plane:
        install_crds(plane)
        with running_operator(plane, workdir):
            api = plane.api_client()
            core = client.CoreV1Api(api)
            new_shop(api, "bench")
            for index in range(RUNS):
                wait_for_ready_pods(api, "bench", "checkout", 5)
                version = core.list_namespaced_pod("bench").metadata.resource_version
                found: queue.Queue[float] = queue.Queue()
                watcher = threading.Thread(target=first_deletion, args=(api, "bench", version, found), daemon=True)
                watcher.start()
                name = f"bench-{index}"
                started = time.perf_counter()
                plane.kubectl("apply", "-n", "bench", "-f", "-", input=EXPERIMENT.format(name=name))
                latencies.append(found.get(timeout=60) - started)
                wait_for_phase(api, "bench", name, "Completed", timeout=60)
                plane.kubectl("delete", "chaosexperiment", name, "-n", "bench")
    print(
        f"# apply_to_first_kill: {RUNS} runs; median {statistics.median(latencies):.3f}s, "
        f"min {min(latencies):.3f}s, max {max(latencies):.3f}s (kubectl start-up included)"
    )
    return {
        "apply_to_first_kill_p50": (statistics.median(latencies), "s"),
        "apply_to_first_kill_p95": (percentile(latencies, 0.95), "s"),
    }
