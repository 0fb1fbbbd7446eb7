"""Benchmark of the stress fault's abort on the real node: from the abort request to the stressor's CPU
use gone from the target pod's cgroup.

Run on the host (root; one real node per machine, so under the lock the e2e tests take):
    flock /tmp/chaosguard-realnode.lock .venv/bin/python bench/bench_stress.py
It starts a control plane and the real node (localcluster/realnode.py), installs the operator from its
image with README's Helm install, and repeats: a CPU stress (one stress-ng worker at 100 %) goes into one
pod of a 4-pod workload; once the pod's cgroup shows the CPU busy, `chaosguard.dev/abort` is set on the
experiment (what `chaosguard abort` does) and the pod's cgroup is read every 50 ms until the CPU use of
the last 100 ms is below 0.1 CPU. Prints:

    BENCH stress_abort_to_stopped_p50 <s> s
    BENCH stress_abort_to_stopped_p95 <s> s
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), *(entry for entry in sys.path if Path(entry or ".").resolve() != REPO / "bench")]

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any, cast  # noqa: E402

from kubernetes import client  # noqa: E402

from localcluster import install  # noqa: E402
from localcluster.controlplane import ControlPlane, default_bin_dir  # noqa: E402
from localcluster.pod_cpu import PodCgroup, pod_cgroup  # noqa: E402
from localcluster.wait import wait_for  # noqa: E402

REPETITIONS = int(os.environ.get("STRESS_BENCH_REPETITIONS", "10"))
NAMESPACE = "stress-bench"
IDLE = 0.1  # CPUs
BUSY = 0.3  # CPUs
WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: stressapp}
spec:
  replicas: 4
  selector: {matchLabels: {app: stressapp}}
  template:
    metadata: {labels: {app: stressapp}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: chaosguard-e2e-app:dev
          imagePullPolicy: IfNotPresent
          env: [{name: READY_AFTER_SECONDS, value: "0"}]
"""


def experiment(name: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: stress
  stress: {{cpu: {{workers: 1, load: 100}}}}
  target: {{selector: {{matchLabels: {{app: stressapp}}}}, mode: fixed, value: 1}}
  duration: 5m
"""


def kubectl_of(plane: ControlPlane) -> Callable[..., str]:
    def run(*args: str, input: str | None = None) -> str:
        return plane.kubectl(*args, input=input, timeout=300).stdout

    return run


def stressed_pod(kubectl: Callable[..., str], name: str) -> tuple[str, str]:
    """(pod uid, stressor container) once the stressor runs."""

    def running() -> tuple[str, str] | None:
        body = json.loads(kubectl("get", "chaosexperiment", name, "-n", NAMESPACE, "-o", "json"))
        faults = [f for f in ((body.get("status") or {}).get("currentRun") or {}).get("faults", [])]
        if not faults or faults[0]["state"] != "Active":
            return None
        pod = json.loads(kubectl("get", "pod", faults[0]["name"], "-n", NAMESPACE, "-o", "json"))
        states = {s["name"]: s["state"] for s in pod["status"].get("ephemeralContainerStatuses", [])}
        return (
            (faults[0]["uid"], faults[0]["container"]) if "running" in states.get(faults[0]["container"], {}) else None
        )

    return cast(tuple[str, str], wait_for(running, timeout=120, interval=0.2, what=f"the stressor of {name} to run"))


def abort_to_stopped(api: client.ApiClient, cgroup: PodCgroup, name: str) -> tuple[float, float]:
    """(abort request -> CPU gone, abort request -> the clean-up container added, by the operator's clock)."""
    wait_for(lambda: cgroup.cpu_rate(0.2) > BUSY, timeout=60, interval=0.0, what="the pod's CPU use to go up")
    started, wall = time.monotonic(), time.time()
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", NAMESPACE, "chaosexperiments", name,
        {"metadata": {"annotations": {"chaosguard.dev/abort": "bench"}}},
    )  # fmt: skip
    samples = [(time.monotonic(), cgroup.cpu_seconds())]
    while samples[-1][0] - started < 60:
        time.sleep(0.05)  # the measurement's sampling period
        samples.append((time.monotonic(), cgroup.cpu_seconds()))
        now, used = samples[-1]
        earlier = [(at, cpu) for at, cpu in samples if now - at >= 0.1]
        if earlier and (used - earlier[-1][1]) / (now - earlier[-1][0]) < IDLE:
            return now - started, cleaner_added(api, name) - wall
    raise RuntimeError("the stressor's CPU use did not go within 60 s of the abort")


def cleaner_added(api: client.ApiClient, name: str) -> float:
    """When the operator had added the clean-up container (the fault's removedAt), unix seconds."""

    def removed_at() -> float | None:
        body = cast(
            dict[str, Any],
            client.CustomObjectsApi(api).get_namespaced_custom_object(
                "chaosguard.dev", "v1alpha1", NAMESPACE, "chaosexperiments", name
            ),
        )
        run = (body.get("status") or {}).get("lastRun") or {}
        stamp = next((f.get("removedAt") for f in run.get("faults", []) if f.get("removedAt")), None)
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None

    return cast(float, wait_for(removed_at, timeout=30, what=f"{name}'s fault to be recorded removed"))


def main() -> int:
    from localcluster.realnode import build_images, missing_prerequisites, real_cluster

    if problems := missing_prerequisites():
        print(f"the real node needs: {'; '.join(problems)}", file=sys.stderr)
        return 2
    bin_dir = default_bin_dir()
    images = build_images()
    with (
        tempfile.TemporaryDirectory(prefix="stress-bench-") as workdir,
        real_cluster(Path(workdir), bin_dir, images) as (plane, _node),
    ):
        install.run_steps(install.runner(bin_dir, plane.kubeconfig), install.HELM_INSTALL)
        kubectl = kubectl_of(plane)
        policy = (REPO / "examples" / "policy-default.yaml").read_text()
        kubectl("apply", "-f", "-", input=policy.replace("[pod-kill, latency]", "[pod-kill, latency, stress]"))
        kubectl("create", "namespace", NAMESPACE)
        kubectl("label", "namespace", NAMESPACE, "chaosguard.dev/chaos=allowed")
        kubectl("apply", "-n", NAMESPACE, "-f", "-", input=WORKLOAD)
        kubectl("rollout", "status", "-n", NAMESPACE, "deployment/stressapp", "--timeout=120s")
        api = plane.api_client()
        seconds, to_cleaner = [], []
        for number in range(REPETITIONS):
            name = f"stress-{number}"
            kubectl("apply", "-n", NAMESPACE, "-f", "-", input=experiment(name))
            uid, _ = stressed_pod(kubectl, name)
            cgroup = pod_cgroup(uid)
            if cgroup is None:
                raise RuntimeError(f"no cgroup of pod {uid} on this machine")
            stopped, added = abort_to_stopped(api, cgroup, name)
            seconds.append(stopped)
            to_cleaner.append(added)
            print(
                f"# run {number}: abort -> stopped {stopped:.3f} s (clean-up container added after {added:.3f} s)",
                file=sys.stderr,
                flush=True,
            )
            kubectl("delete", "chaosexperiment", name, "-n", NAMESPACE)
    seconds.sort()
    p95 = seconds[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))]
    print(f"BENCH stress_abort_to_stopped_p50 {statistics.median(seconds):.3f} s", flush=True)
    print(f"BENCH stress_abort_to_stopped_p95 {p95:.3f} s", flush=True)
    print(f"# abort -> clean-up container added: median {statistics.median(to_cleaner):.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
