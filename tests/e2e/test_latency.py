"""The latency fault on real nodes, with the operator running from its image under the installed RBAC.

- Where the node's kernel has sch_netem (kind in users' CI): a client pod times TCP connects to a
  server pod before, during and after a latency experiment on the client's egress to the server.
- Where it has none (this machine's kernel): the injector runs for real in the target pod, tc
  refuses the netem qdisc, and the run must end Failed with the node's reason in status and in an
  Event, a clean-up container's own report that nothing of chaosguard's is left, nothing still
  running in the pod, and the pod's qdiscs exactly as before. (The injector's netem itself is
  tested in a netem-capable guest: tests/integration/test_netem_in_guest.py.)

Which case applies is asked of the node's kernel, not read from the outcome.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from typing import Any

import pytest
import yaml

from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, E2ECluster, check_ran_from_the_injector_image
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons

DELAY_MS = 200
PROBE = """
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(count):
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=5):
        times.append((time.perf_counter() - started) * 1000)
times.sort()
print(times[len(times) // 2])
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
    - name: server
      image: python:3.11-slim
      command: [python, -m, http.server, "8080"]
      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 4  # one is the target: the shipped default policy allows 25 % of a workload
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
        - name: client
          image: python:3.11-slim
          command: [sleep, infinity]
"""

EXPERIMENT = f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: client-latency}}
spec:
  action: latency
  latency: {{delay: {DELAY_MS}ms, ports: [8080]}}
  target: {{selector: {{matchLabels: {{app: client}}}}, mode: fixed, value: 1}}
  duration: 45s
"""


def connect_median_ms(kubectl: Kubectl, namespace: str, pod: str, server_ip: str) -> float:
    output = kubectl(
        "exec", "-n", namespace, pod, "-c", "client", "--",
        "python", "-c", PROBE, server_ip, "8080", "15",
    )  # fmt: skip
    return float(output.strip().splitlines()[-1])


def active_faults(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in (status.get("currentRun") or {}).get("faults", []) if f["state"] == "Active"]


@pytest.mark.usefixtures("installed_operator")
def test_latency_between_two_pods_during_and_after(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    if not e2e_cluster.node_has_netem:
        pytest.skip("the node's kernel has no sch_netem: the next test covers this node; this one runs on kind")
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=PODS)
    kubectl("wait", "-n", e2e_namespace, "--for=condition=Ready", "pod", "--all", "--timeout=300s")
    server_ip = json.loads(kubectl("get", "pod", "server", "-n", e2e_namespace, "-o", "json"))["status"]["podIP"]
    clients = json.loads(kubectl("get", "pods", "-n", e2e_namespace, "-l", "app=client", "-o", "json"))["items"]
    before = max(connect_median_ms(kubectl, e2e_namespace, c["metadata"]["name"], server_ip) for c in clients)

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=EXPERIMENT)
    active = wait_for(
        lambda: active_faults(experiment_status(kubectl, e2e_namespace, "client-latency")),
        timeout=60,
        what="the latency fault to be Active",
    )
    target = active[0]["name"]
    # Active once the API took the injector; the delay is in once its container has started.
    during = wait_for(
        lambda: (ms := connect_median_ms(kubectl, e2e_namespace, target, server_ip)) >= before + DELAY_MS * 0.8 and ms,
        timeout=60,
        interval=1.0,
        what=f"connects from {target} to slow down by about {DELAY_MS} ms",
    )
    wait_for(
        lambda: experiment_status(kubectl, e2e_namespace, "client-latency").get("phase") == "Completed",
        timeout=120,
        interval=1.0,
        what="client-latency to complete",
    )
    after = statistics.median(connect_median_ms(kubectl, e2e_namespace, target, server_ip) for _ in range(3))
    check_ran_from_the_injector_image(target_pod(kubectl, e2e_namespace, target))

    assert during - before == pytest.approx(DELAY_MS, abs=DELAY_MS * 0.25), (before, during)
    assert after < before + DELAY_MS * 0.25, (before, during, after)


TARGET = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: latapp}}
spec:
  replicas: 4  # one pod is the target: the chart's default policy allows 25 % of a workload
  selector: {{matchLabels: {{app: latapp}}}}
  template:
    metadata: {{labels: {{app: latapp}}}}
    spec:
      containers:
        - name: app
          image: {APP_IMAGE}
          imagePullPolicy: IfNotPresent
          env: [{{name: READY_AFTER_SECONDS, value: "0"}}]
          readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
"""


def latency_experiment(name: str, duration: str = "2m") -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: latency
  latency: {{delay: 200ms, jitter: 10ms}}
  target: {{selector: {{matchLabels: {{app: latapp}}}}, mode: fixed, value: 1}}
  duration: {duration}
"""


def experiment_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "chaosexperiment", name, "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def ended(status: dict[str, Any]) -> dict[str, Any]:
    return status if status.get("phase") in ("Completed", "Failed", "Aborted") else {}


def finished(kubectl: Kubectl, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        lambda: ended(experiment_status(kubectl, namespace, name)),
        timeout=timeout,
        interval=1.0,
        what=f"ChaosExperiment {namespace}/{name} to end",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, namespace, name))[:4000],
    )


def target_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=latapp", "-o", "json"))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def target_pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json")))


def opted_in_target(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", namespace, "-f", "-", input=TARGET)
    kubectl("rollout", "status", "-n", namespace, "deployment/latapp", "--timeout=120s")
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod", "-l", "app=latapp", "--timeout=120s")
    return target_pods(kubectl, namespace)


def pod_qdiscs(pod_ip: str) -> str:
    """`tc qdisc show` in the network namespace that holds the pod's address (this machine's node)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        addresses = subprocess.run(["ip", "-n", name, "-4", "-o", "addr"], capture_output=True, text=True).stdout
        if f" {pod_ip}/" in addresses:
            shown = subprocess.run(["tc", "-n", name, "qdisc", "show"], capture_output=True, text=True, check=True)
            return shown.stdout
    raise AssertionError(f"no network namespace on this machine holds the pod address {pod_ip}")


def check_failed_for_want_of_netem(kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any]) -> None:
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed", dump
    assert status["lastRun"]["reason"] == "InjectionFailed", dump
    assert "the node's kernel has no sch_netem" in status["message"], dump
    (fault,) = status["lastRun"]["faults"]
    assert fault["state"] == "Failed", dump
    # The injector ran (tc's own refusal is quoted), and a clean-up container confirmed the pod is clean.
    assert "injector exit 4" in fault["message"] and "qdisc kind is unknown" in fault["message"], dump
    assert "confirmed by chaosguard-clear1-" in fault["message"] and "nothing to clear" in fault["message"], dump
    check_ran_from_the_injector_image(target_pod(kubectl, namespace, fault["name"]))
    reasons = event_reasons(kubectl, namespace, "ChaosExperiment", name)
    assert "LatencyFailed" in reasons and "InjectionFailed" in reasons, reasons
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    failed = [e["message"] for e in events if e["reason"] == "InjectionFailed" and e["involvedObject"]["name"] == name]
    assert failed and "the node's kernel has no sch_netem" in failed[0], failed


@pytest.mark.usefixtures("installed_operator")
def test_latency_on_a_node_without_netem_fails_with_the_reason_and_leaves_the_pod_as_it_was(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    if e2e_cluster.node_has_netem:
        pytest.skip("the node's kernel has sch_netem: the test above measures the delay instead")
    pods = opted_in_target(kubectl, e2e_namespace)
    qdiscs_before = {p["metadata"]["name"]: pod_qdiscs(p["status"]["podIP"]) for p in pods}

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=latency_experiment("app-latency"))
    status = finished(kubectl, e2e_namespace, "app-latency")
    check_failed_for_want_of_netem(kubectl, e2e_namespace, "app-latency", status)

    pod = target_pod(kubectl, e2e_namespace, status["lastRun"]["faults"][0]["name"])
    ephemeral = {c["name"]: c for c in pod["spec"].get("ephemeralContainers", [])}
    assert any(n.startswith("chaosguard-latency-") for n in ephemeral), ephemeral
    assert any(n.startswith("chaosguard-clear1-") for n in ephemeral), ephemeral
    states = {s["name"]: s["state"] for s in pod["status"].get("ephemeralContainerStatuses", [])}
    assert set(states) == set(ephemeral), states
    assert all("terminated" in state for state in states.values()), f"still running in the pod: {states}"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, pod["status"]
    assert {p["metadata"]["name"]: pod_qdiscs(p["status"]["podIP"]) for p in pods} == qdiscs_before
