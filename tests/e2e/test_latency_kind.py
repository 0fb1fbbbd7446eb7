"""Latency between two real pods in kind: a client pod times TCP connects to a server pod before,
during and after a latency experiment that targets the client's egress to the server's port.
Needs real kubelets and a kernel with sch_netem, so it runs in users' CI (`make e2e-kind`), not on
the development machines, where the injector is tested in a netem-capable guest instead."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from tests.support.example_flow import Kubectl

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
  replicas: 1
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
  target: {{selector: {{matchLabels: {{app: client}}}}, mode: all}}
  duration: 45s
"""


def connect_median_ms(kubectl: Kubectl, namespace: str, server_ip: str) -> float:
    pod = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=client", "-o", "json"))["items"][0]
    output = kubectl(
        "exec", "-n", namespace, pod["metadata"]["name"], "-c", "client", "--",
        "python", "-c", PROBE, server_ip, "8080", "15",
    )  # fmt: skip
    return float(output.strip().splitlines()[-1])


def phase(kubectl: Kubectl, namespace: str) -> str:
    body = json.loads(kubectl("get", "chaosexperiment", "client-latency", "-n", namespace, "-o", "json"))
    return str((body.get("status") or {}).get("phase", ""))


def wait_phase(kubectl: Kubectl, namespace: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while phase(kubectl, namespace) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"client-latency did not reach {wanted} in {timeout:.0f}s")
        time.sleep(1)


@pytest.mark.usefixtures("installed_operator")
def test_latency_between_two_pods_during_and_after(kubectl: Kubectl, e2e_namespace: str) -> None:
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=PODS)
    kubectl("wait", "-n", e2e_namespace, "--for=condition=Ready", "pod", "--all", "--timeout=300s")
    server_ip = json.loads(kubectl("get", "pod", "server", "-n", e2e_namespace, "-o", "json"))["status"]["podIP"]

    before = connect_median_ms(kubectl, e2e_namespace, server_ip)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=EXPERIMENT)
    wait_phase(kubectl, e2e_namespace, "Running", timeout=60)
    deadline = time.monotonic() + 60
    during = connect_median_ms(kubectl, e2e_namespace, server_ip)
    while during < before + DELAY_MS * 0.8 and time.monotonic() < deadline:  # the container may still be starting
        time.sleep(1)
        during = connect_median_ms(kubectl, e2e_namespace, server_ip)
    wait_phase(kubectl, e2e_namespace, "Completed", timeout=120)
    after = statistics.median(connect_median_ms(kubectl, e2e_namespace, server_ip) for _ in range(3))

    assert during - before == pytest.approx(DELAY_MS, abs=DELAY_MS * 0.25), (before, during)
    assert after < before + DELAY_MS * 0.25, (before, during, after)
