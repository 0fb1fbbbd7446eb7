"""Pod-kill of real containers, with the operator running from its image under the installed RBAC.

The workload is tests/e2e/app: it logs every signal it receives and keeps draining after SIGTERM
until the kubelet's SIGKILL, and it is Ready only once its HTTP readiness endpoint answers, some
seconds after it starts. So the test sees, from the containers themselves and the kubelet's own
reports: the kill was a SIGTERM, the experiment's grace period was honoured to the second, the
replacement's readiness came from its real probe, and the recovery time the operator recorded is
the one the kubelet's Ready transitions give.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import yaml

from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, E2ECluster
from tests.e2e.test_latency import ended, experiment_status
from tests.support.example_flow import (
    EXAMPLES,
    Kubectl,
    check_pod_kill_percent,
    event_reasons,
    run_pod_kill_percent,
)

GRACE_SECONDS = 3
READY_AFTER_SECONDS = 4
REPLICAS = 3

WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sigapp}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: sigapp}}}}
  template:
    metadata: {{labels: {{app: sigapp}}}}
    spec:
      terminationGracePeriodSeconds: 30  # the experiment's gracePeriodSeconds overrides it
      containers:
        - name: app
          image: {APP_IMAGE}
          imagePullPolicy: IfNotPresent
          env: [{{name: READY_AFTER_SECONDS, value: "{READY_AFTER_SECONDS}"}}]
          readinessProbe:
            httpGet: {{path: /ready, port: 8080}}
            periodSeconds: 1
            failureThreshold: 1
"""

EXPERIMENT = f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: sigapp-kill}}
spec:
  action: pod-kill
  podKill: {{gracePeriodSeconds: {GRACE_SECONDS}, respectDisruptionBudgets: true}}
  target: {{selector: {{matchLabels: {{app: sigapp}}}}, mode: fixed, value: 1}}
  duration: 10s
"""

LINE = re.compile(r"^e2e-app uptime=(?P<uptime>[0-9.]+) (?P<what>.*)$")


@dataclass
class LogFollower:
    """`kubectl logs -f` of one pod, read to its end (the container's death) in a thread."""

    pod: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[tuple[float, str]]:
        found = [LINE.match(line) for line in self.lines]
        return [(float(m["uptime"]), m["what"]) for m in found if m]


def follow_logs(e2e_cluster: E2ECluster, namespace: str, pod: str) -> LogFollower:
    argv = [*e2e_cluster.kubectl_command, "logs", "-f", "-n", namespace, pod, "-c", "app"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return LogFollower(pod, process)


def pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=sigapp", "-o", "json"))["items"])


def condition_time(pod: dict[str, Any], kind: str) -> datetime | None:
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == kind and condition["status"] == "True":
            return datetime.fromisoformat(condition["lastTransitionTime"])
    return None


def ready_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(kubectl, namespace)
        if not p["metadata"].get("deletionTimestamp") and condition_time(p, "Ready") is not None
    ]


def all_ready(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    found = ready_pods(kubectl, namespace)
    return found if len(found) == REPLICAS else []


@pytest.mark.usefixtures("installed_operator")
def test_pod_kill_of_a_real_container_honours_the_grace_period_and_recovers_by_real_readiness(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=WORKLOAD)
    before = wait_for(
        lambda: all_ready(kubectl, e2e_namespace),
        timeout=120,
        what=f"{REPLICAS} Ready sigapp pods",
    )
    # The readiness is the probe's: no pod was Ready before the app said it serves /ready.
    for pod in before:
        started = datetime.fromisoformat(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
        ready = condition_time(pod, "Ready")
        assert ready is not None and (ready - started).total_seconds() >= READY_AFTER_SECONDS - 1, pod["status"]
    followers = {p["metadata"]["name"]: follow_logs(e2e_cluster, e2e_namespace, p["metadata"]["name"]) for p in before}
    wait_for(
        lambda: all(any("ready:" in what for _, what in f.events()) for f in followers.values()),
        timeout=30,
        what="the log streams of every pod",
    )

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=EXPERIMENT)
    final = wait_for(
        lambda: ended(experiment_status(kubectl, e2e_namespace, "sigapp-kill")),
        timeout=180,
        interval=1.0,
        what="the experiment to end",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "sigapp-kill"))[:3000],
    )
    dump = yaml.safe_dump(final)[:4000]
    assert final["phase"] == "Completed", dump
    kills = [k for k in final["lastRun"]["kills"] if k["result"] == "Killed"]
    assert len(kills) == 1, dump
    kill = kills[0]
    assert kill["method"] == "eviction", dump

    # What the killed container itself saw: SIGTERM, then draining until SIGKILL at the grace period.
    follower = followers[kill["name"]]
    follower.process.wait(timeout=60)
    follower.thread.join(timeout=10)
    events = follower.events()
    terms = [t for t, what in events if what == "received SIGTERM"]
    assert len(terms) == 1, f"the killed pod's log: {follower.lines}"
    last = max(t for t, what in events if what == "draining")
    assert GRACE_SECONDS - 0.6 <= last - terms[0] <= GRACE_SECONDS + 0.6, (
        f"draining went on {last - terms[0]:.2f}s after SIGTERM; the grace period was {GRACE_SECONDS}s: {events}"
    )
    for name, other in followers.items():
        if name != kill["name"]:
            assert not [what for _, what in other.events() if what.startswith("received")], (name, other.lines)
            other.process.terminate()

    # The replacement became Ready by its probe; the recorded recovery is the kubelet's Ready time.
    after = wait_for(
        lambda: all_ready(kubectl, e2e_namespace),
        timeout=60,
        what=f"{REPLICAS} Ready sigapp pods again",
    )
    killed_at = datetime.fromisoformat(kill["at"])
    (replacement,) = [p for p in after if p["metadata"]["uid"] not in {b["metadata"]["uid"] for b in before}]
    replacement_ready = condition_time(replacement, "Ready")
    assert replacement_ready is not None
    started = datetime.fromisoformat(replacement["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    assert (replacement_ready - started).total_seconds() >= READY_AFTER_SECONDS - 1, replacement["status"]
    kubelet_recovery = (max(condition_time(p, "Ready") or killed_at for p in after) - killed_at).total_seconds()
    assert kill["recoveredAfterSeconds"] == pytest.approx(kubelet_recovery, abs=1.0), (kubelet_recovery, dump)
    assert kill["recoveredAfterSeconds"] >= READY_AFTER_SECONDS - 1, dump
    assert "PodKilled" in event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "sigapp-kill")


@pytest.mark.usefixtures("installed_operator")
def test_the_readme_first_experiment_on_a_real_node(kubectl: Kubectl, e2e_namespace: str) -> None:
    """README's "first experiment" (examples/), exactly as a user types it."""
    run = run_pod_kill_percent(kubectl, e2e_namespace, timeout=300)
    check_pod_kill_percent(run)
