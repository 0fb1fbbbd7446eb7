"""Pods on the guest's node (localcluster/guestnode.py), what tests and benchmarks measure from inside
them (busybox's ping, wget and tc: the e2e app image has nothing else), and the shipped examples
aimed at them."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from localcluster.controlplane import REPO_ROOT, ControlPlane
from localcluster.operator import OperatorProcess
from localcluster.realnode import NODE_NAME
from localcluster.wait import wait_for

EXAMPLES = REPO_ROOT / "examples"
APP_IMAGE = "chaosguard-e2e-app:dev"  # tests/e2e/app, built by hack/build-images.sh


class Kubectl(Protocol):
    """Runs kubectl with these arguments against one cluster; returns stdout, raises on failure."""

    def __call__(self, *args: str, input: str | None = None) -> str: ...


SERVER_PORT = 8080  # the e2e app's readiness endpoint (busybox httpd)
OTHER_PORT = 8081  # a second httpd in the server pod: a port a partition of SERVER_PORT leaves alone
CLIENTS = 3
OPERATOR_NAMESPACE = "chaosguard-system"

PODS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  containers:
    - name: app
      image: {APP_IMAGE}
      imagePullPolicy: Never
      env: [{{name: READY_AFTER_SECONDS, value: "0"}}]
      readinessProbe: {{httpGet: {{path: /ready, port: {SERVER_PORT}}}, periodSeconds: 2}}
    - name: other-port
      image: {APP_IMAGE}
      imagePullPolicy: Never
      command: [sh, -c, "mkdir -p /tmp/o && echo o >/tmp/o/index.html && exec httpd -f -p {OTHER_PORT} -h /tmp/o"]
---
apiVersion: v1
kind: Pod
metadata: {{name: bystander, labels: {{app: bystander}}}}
spec:
  containers:
    - name: app
      image: {APP_IMAGE}
      imagePullPolicy: Never
      env: [{{name: READY_AFTER_SECONDS, value: "0"}}]
      readinessProbe: {{httpGet: {{path: /ready, port: {SERVER_PORT}}}, periodSeconds: 2}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client}}
spec:
  replicas: {CLIENTS}
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      securityContext: {{runAsUser: 0, runAsGroup: 0}}  # busybox's ping opens a raw socket
      terminationGracePeriodSeconds: 1
      containers:
        - name: client
          image: {APP_IMAGE}
          imagePullPolicy: Never
          command: [sleep, "2147483647"]
"""


def kubectl_for(plane: ControlPlane) -> Kubectl:
    """kubectl as the control plane's admin; a failure raises with kubectl's message."""

    def run(*args: str, input: str | None = None) -> str:
        result = plane.kubectl(*args, input=input, check=False, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"`kubectl {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    return run


def operator_for(plane: ControlPlane, kubectl: Kubectl, log: Path) -> OperatorProcess:
    """The operator as a process here, as deployed in OPERATOR_NAMESPACE (CHAOSGUARD_NAMESPACE: without
    it, it refuses every fault with destinations, not knowing where its own pods are); not started."""
    if OPERATOR_NAMESPACE not in kubectl("get", "namespaces", "-o", "name"):
        kubectl("create", "namespace", OPERATOR_NAMESPACE)
    return OperatorProcess(plane.kubeconfig, log, {"CHAOSGUARD_NAMESPACE": OPERATOR_NAMESPACE})


@dataclass
class Pair:
    namespace: str
    server_ip: str
    bystander_ip: str
    clients: list[str] = field(default_factory=list)


def pod_ip(kubectl: Kubectl, namespace: str, name: str) -> str:
    return str(json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json"))["status"]["podIP"])


def create_pair(kubectl: Kubectl, namespace: str) -> Pair:
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", namespace, "-f", "-", input=PODS)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod", "--all", "--timeout=600s")
    listed = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "app=client", "-o", "json"))["items"]
    assert all(p["spec"]["nodeName"] == NODE_NAME for p in listed), "the client pods are not on the guest's node"
    return Pair(
        namespace,
        pod_ip(kubectl, namespace, "server"),
        pod_ip(kubectl, namespace, "bystander"),
        sorted(p["metadata"]["name"] for p in listed),
    )


# --- measurements from inside a pod ------------------------------------------------------------------

_REPLY = re.compile(r"seq=(\d+) ttl=\d+ time=([\d.]+) ms")


@dataclass(frozen=True)
class Pings:
    sent: int
    rtts_ms: dict[int, float]  # by sequence number; lost ones are missing

    @property
    def median_ms(self) -> float:
        assert self.rtts_ms, "no reply at all"
        return statistics.median(self.rtts_ms.values())

    @property
    def loss_percent(self) -> float:
        return 100.0 * (self.sent - len(self.rtts_ms)) / self.sent


def ping(kubectl: Kubectl, namespace: str, pod: str, address: str, count: int, interval: float = 0.2) -> Pings:
    """busybox ping from the pod's `client` container: ICMP echo round trips, each timed by the pod."""
    output = kubectl(
        "exec", "-n", namespace, pod, "-c", "client", "--",
        "ping", "-c", str(count), "-i", str(interval), "-W", "2", address,
    )  # fmt: skip
    replies = {int(seq): float(ms) for seq, ms in _REPLY.findall(output)}
    sent = re.search(r"(\d+) packets transmitted", output)
    assert sent, output
    return Pings(int(sent.group(1)), replies)


def http_answers(kubectl: Kubectl, namespace: str, pod: str, address: str, port: int, timeout: int = 3) -> bool:
    """Whether an HTTP request from the pod to address:port gets an answer (any status). busybox's nc,
    not its wget, which crashes in Debian's static busybox."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    result = kubectl(
        "exec", "-n", namespace, pod, "-c", "client", "--", "sh", "-c",
        f"{request} | nc -w {timeout} {address} {port} 2>&1 | head -1; true",
    )  # fmt: skip
    return result.startswith("HTTP/1.")


class PingStream:
    """A long busybox ping in the pod, each reply stamped with this machine's clock as it arrives."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.replies: list[tuple[float, int, float]] = []  # (time.time() on arrival, seq, rtt ms)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if found := _REPLY.search(line):
                self.replies.append((time.time(), int(found.group(1)), float(found.group(2))))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._reader.join(10)

    def first_reply_below(self, threshold_ms: float, *, after: float, timeout: float) -> tuple[float, int, float]:
        """The first reply that arrived at or after `after` (time.time()) faster than threshold_ms."""
        found = wait_for(
            lambda: [r for r in self.replies if r[0] >= after and r[2] < threshold_ms][:1],
            timeout=timeout,
            what=f"a ping reply under {threshold_ms:.1f} ms",
            describe=lambda: "".join(self.lines[-10:]),
        )
        return found[0]


def ping_stream(kubectl_argv: Sequence[str], namespace: str, pod: str, address: str, interval: float) -> PingStream:
    return PingStream(
        [*kubectl_argv, "exec", "-n", namespace, pod, "-c", "client", "--",
         "ping", "-i", str(interval), "-W", "2", address]
    )  # fmt: skip


# --- the shipped examples, aimed at these pods -------------------------------------------------------


def example(name: str, *, target: dict[str, Any], **spec: Any) -> str:
    """examples/<name>, with its target and the given spec fields replaced (the example's own
    namespace-free metadata stays: the test applies it with -n)."""
    document = yaml.safe_load((EXAMPLES / name).read_text())
    document["spec"]["target"] = target
    for key, value in spec.items():
        if value is None:
            document["spec"].pop(key, None)
        else:
            document["spec"][key] = value
    return str(yaml.safe_dump(document, sort_keys=False))


def experiment_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "chaosexperiment", name, "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def active_fault(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    def active() -> dict[str, Any]:
        status = experiment_status(kubectl, namespace, name)
        faults = (status.get("currentRun") or {}).get("faults", [])
        return next((f for f in faults if f["state"] == "Active"), {})

    return wait_for(
        active,
        timeout=240,
        interval=1.0,
        what=f"a fault of {namespace}/{name} to be Active",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, namespace, name))[:3000],
    )


def ended(kubectl: Kubectl, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    def phase() -> dict[str, Any]:
        status = experiment_status(kubectl, namespace, name)
        return status if status.get("phase") in ("Completed", "Failed", "Aborted") else {}

    return wait_for(
        phase,
        timeout=timeout,
        interval=1.0,
        what=f"{namespace}/{name} to end",
        describe=lambda: yaml.safe_dump(experiment_status(kubectl, namespace, name))[:3000],
    )


def delete_experiment(kubectl: Kubectl, namespace: str, name: str) -> None:
    kubectl("delete", "chaosexperiment", name, "-n", namespace, "--ignore-not-found", "--wait=true")


def ephemeral_started_at(kubectl: Kubectl, namespace: str, pod: str, container: str) -> float:
    """When the kubelet reports the ephemeral container started (unix seconds; to the second)."""
    body = json.loads(kubectl("get", "pod", pod, "-n", namespace, "-o", "json"))

    def started() -> str:
        statuses = {s["name"]: s for s in body["status"].get("ephemeralContainerStatuses", [])}
        state = statuses.get(container, {}).get("state", {})
        return str((state.get("running") or state.get("terminated") or {}).get("startedAt") or "")

    stamp = started()
    assert stamp, f"the kubelet reports no start of {container} in {namespace}/{pod}"
    return instant(stamp)


def log_line_at(kubectl: Kubectl, namespace: str, pod: str, container: str, starts: str) -> float:
    """containerd's timestamp (the node's clock, nanoseconds) of the container's first log line that
    starts with `starts`."""

    def line() -> str:
        try:
            logs = kubectl("logs", "-n", namespace, pod, "-c", container, "--timestamps")
        except AssertionError as error:
            if "waiting to start" in str(error):  # the kubelet has not started it yet
                return ""
            raise
        return next((entry for entry in logs.splitlines() if entry.split(" ", 1)[-1].startswith(starts)), "")

    return instant(wait_for(line, timeout=60, interval=0.5, what=f"{container}'s {starts!r} line").split()[0])


def instant(stamp: str) -> float:
    """An RFC 3339 time from the API or a log, as unix seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def settled(kubectl: Kubectl, namespace: str, pod: str) -> None:
    """Waits until every ephemeral container of the pod has run and exited: a clean-up container the
    kubelet starts late would otherwise run `clear` into the next test's fault."""

    def done() -> bool:
        body = json.loads(kubectl("get", "pod", pod, "-n", namespace, "-o", "json"))
        wanted = {c["name"] for c in body["spec"].get("ephemeralContainers", [])}
        states = {s["name"]: s.get("state", {}) for s in body["status"].get("ephemeralContainerStatuses", [])}
        return set(states) == wanted and all("terminated" in state for state in states.values())

    wait_for(done, timeout=180, interval=1.0, what=f"every ephemeral container of {namespace}/{pod} to exit")


def qdiscs_in_pod(kubectl: Kubectl, namespace: str, pod: str) -> str:
    """busybox's tc in the pod's network namespace (the client container shares it)."""
    return kubectl("exec", "-n", namespace, pod, "-c", "client", "--", "tc", "qdisc", "show", "dev", "eth0")
