"""Chaos on chaosguard itself: the leading operator's process is killed on the real node (as a node
failure or an OOM kill would: SIGKILL to the container's processes, the pod object untouched) while
a guarded run's SLI breaches. The standby, installed by Helm beside it, guards every run too, so the
run is aborted without waiting for the Lease to change hands.

Prometheus runs on the node's address (the pods reach it there) and scrapes a metrics endpoint that
the test flips to breaching at the moment it kills the leader.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.prometheus import MetricsTarget, PrometheusServer, instant_query, prometheus_available
from localcluster.realnode import NODE_IP
from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, OPERATOR_NAMESPACE, E2ECluster
from tests.e2e.test_latency import experiment_status
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons

GUARD_INTERVAL = 1.0
REPLICAS = 4
WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: guarded-app}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: guarded-app}}}}
  template:
    metadata: {{labels: {{app: guarded-app}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: {APP_IMAGE}
          imagePullPolicy: IfNotPresent
          readinessProbe:
            httpGet: {{path: /ready, port: 8080}}
            periodSeconds: 1
"""


def experiment(prometheus_url: str, app: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: guarded-kill}}
spec:
  action: pod-kill
  podKill: {{gracePeriodSeconds: 1}}
  target: {{selector: {{matchLabels: {{app: guarded-app}}}}, mode: fixed, value: 1}}
  duration: 3m
  interval: 3s
  steadyState:
    prometheus: {{url: "{prometheus_url}", timeout: 500ms}}
    interval: {GUARD_INTERVAL:g}s
    conditions:
      - {{name: error-ratio, query: 'demo_error_ratio{{app="{app}"}}', operator: "<", threshold: 0.05}}
"""


@pytest.fixture
def node_prometheus(tmp_path: Path) -> Iterator[tuple[MetricsTarget, PrometheusServer]]:
    if not prometheus_available():
        pytest.skip("Debian's prometheus is not installed (make system-deps)")
    with MetricsTarget() as target, PrometheusServer(tmp_path / "prometheus", [target], host=NODE_IP) as server:
        yield target, server


def lease_holder(kubectl: Kubectl) -> str:
    lease = json.loads(kubectl("get", "lease", "chaosguard-leader", "-n", OPERATOR_NAMESPACE, "-o", "json"))
    return str(lease["spec"].get("holderIdentity") or "")


def operator_pods(kubectl: Kubectl) -> list[dict[str, Any]]:
    listed = json.loads(
        kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=chaosguard", "-o", "json")
    )
    return list(listed["items"])


def kill_container_processes(container_id: str) -> int:
    """SIGKILLs every process of one container, found by its cgroup on this machine (the real node's
    containers are this machine's processes). Returns how many were killed."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if container_id in cgroup:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def test_killing_the_leaders_process_at_a_breach_still_aborts_the_run(
    kubectl: Kubectl,
    e2e_cluster: E2ECluster,
    installed_operator: str,
    e2e_namespace: str,
    node_prometheus: tuple[MetricsTarget, PrometheusServer],
) -> None:
    if not e2e_cluster.real_node:
        pytest.skip("kills a container's processes on this machine: only on the real node here")
    target, prometheus = node_prometheus
    app = e2e_namespace
    query = f'demo_error_ratio{{app="{app}"}}'
    target.set_error_ratio(0.001, app=app)
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=WORKLOAD)
    wait_for(lambda: len(ready(kubectl, e2e_namespace)) == REPLICAS, timeout=180, what=f"{REPLICAS} Ready app pods")
    wait_for(lambda: len(operator_pods(kubectl)) == 2 and lease_holder(kubectl), timeout=120, what="2 replicas")

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment(prometheus.url, app))

    def kills() -> int:
        run = experiment_status(kubectl, e2e_namespace, "guarded-kill").get("currentRun") or {}
        return int(run.get("killsTotal", 0))

    wait_for(
        lambda: kills() >= 1,
        timeout=120,
        interval=0.5,
        what="a first kill",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "guarded-kill"))[:3000],
    )
    holder = lease_holder(kubectl)
    (leader,) = [pod for pod in operator_pods(kubectl) if holder.startswith(pod["metadata"]["name"] + "_")]
    container_id = leader["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]

    breached_at = datetime.now(UTC)
    assert kill_container_processes(container_id) >= 1
    target.set_error_ratio(0.5, app=app)
    wait_for(
        lambda: any(value == 0.5 for _, value in instant_query(prometheus.url, query)),
        timeout=30,
        interval=0.02,
        what="Prometheus to answer the breaching value",
    )
    queryable = time.monotonic()
    status = wait_for(
        lambda: (s := experiment_status(kubectl, e2e_namespace, "guarded-kill")).get("phase") == "Aborted" and s,
        timeout=30,
        interval=0.05,
        what="the run to be aborted",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, e2e_namespace, "guarded-kill"))[:3000],
    )
    seconds = time.monotonic() - queryable
    # The Lease still names the killed leader (it lasts 15 s): the standby aborted on its own guard.
    assert lease_holder(kubectl) == holder
    print(f"\n# e2e: breach queryable -> Aborted {seconds:.2f} s with the leader's process killed at the breach")
    run = status["lastRun"]
    assert run["reason"] == "SLIBreached" and run["abort"]["condition"] == "error-ratio", run
    late = [
        kill
        for kill in run.get("kills", [])
        if kill["result"] == "Killed" and datetime.fromisoformat(kill["at"]) >= breached_at
    ]
    assert not late, run["kills"]
    assert event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "guarded-kill").count("SLIBreached") == 1

    # The killed container comes back (the kubelet restarts it) as a standby, and both replicas are Ready.
    def both_ready() -> bool:
        pods = operator_pods(kubectl)
        return len(pods) == 2 and all(pod["status"]["containerStatuses"][0]["ready"] for pod in pods)

    wait_for(
        both_ready,
        timeout=180,
        what="both replicas Ready again",
    )


def ready(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    listed = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=guarded-app", "-o", "json"))
    return [
        pod
        for pod in listed["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


DRY_RUN = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: pod-kill
  target: {{selector: {{matchLabels: {{app: nothing}}}}, mode: one}}
  duration: 10s
  dryRun: true
"""


def test_applying_experiments_while_a_replica_dies_never_admits_one_without_its_stamp(
    kubectl: Kubectl, e2e_cluster: E2ECluster, installed_operator: str, e2e_namespace: str
) -> None:
    """`kubectl apply` of one experiment after another while a replica's process is killed: the API
    server keeps calling the webhooks (failurePolicy Fail) through their Service; an apply that reached
    the dead replica is refused and says so, and every experiment admitted carries its signed stamp."""
    if not e2e_cluster.real_node:
        pytest.skip("kills a container's processes on this machine: only on the real node here")
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    wait_for(lambda: len(operator_pods(kubectl)) == 2, timeout=120, what="2 replicas")
    victim = operator_pods(kubectl)[0]
    container_id = victim["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]

    results: list[tuple[float, str, str | None]] = []  # (monotonic time, name, refusal or None)
    killed_at: float | None = None
    started = time.monotonic()
    index = 0
    while time.monotonic() - started < 40:
        if killed_at is None and time.monotonic() - started > 5:
            assert kill_container_processes(container_id) >= 1
            killed_at = time.monotonic()
        name = f"apply-{index}"
        index += 1
        try:
            kubectl("apply", "-n", e2e_namespace, "-f", "-", input=DRY_RUN.format(name=name))
            refusal = None
        except AssertionError as error:
            refusal = str(error)
        results.append((time.monotonic(), name, refusal))

    assert killed_at is not None
    admitted = [name for _, name, refusal in results if refusal is None]
    refused = [(at - killed_at, refusal) for at, _, refusal in results if refusal is not None]
    listed = json.loads(kubectl("get", "chaosexperiments", "-n", e2e_namespace, "-o", "json"))["items"]
    assert sorted(item["metadata"]["name"] for item in listed) == sorted(admitted)
    for item in listed:
        annotations = item["metadata"].get("annotations") or {}
        assert annotations.get("chaosguard.dev/author") and annotations.get("chaosguard.dev/signature"), item
    window = (max(at for at, _ in refused) - min(at for at, _ in refused)) if refused else 0.0
    seen = sorted({line for _, refusal in refused for line in refusal.splitlines() if "webhook" in line})[:3]
    print(
        f"\n# applies while a replica died: {len(results)} in 40 s, {len(admitted)} admitted (all stamped), "
        f"{len(refused)} refused over {window:.1f} s after the kill; users saw: {seen}"
    )
    # Every refusal came with the replica's death: none before the kill, none long after it.
    assert all(0.0 <= at <= 30.0 for at, _ in refused), refused
    # The admitted ones are judged by the operator as stamped (a dry run ends Completed, not Rejected).
    wait_for(
        lambda: all(
            (item.get("status") or {}).get("phase") not in (None, "Pending")
            for item in json.loads(kubectl("get", "chaosexperiments", "-n", e2e_namespace, "-o", "json"))["items"]
        ),
        timeout=120,
        what="the operator to judge every admitted experiment",
    )
    phases = {
        item["metadata"]["name"]: item["status"]["phase"]
        for item in json.loads(kubectl("get", "chaosexperiments", "-n", e2e_namespace, "-o", "json"))["items"]
    }
    assert "Rejected" not in phases.values(), phases
