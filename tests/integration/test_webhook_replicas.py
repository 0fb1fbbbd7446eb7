"""Every replica serves the admission webhooks, and none owns the webhook configurations (issue 19).

Operator processes run with `--leader-elect` and `--webhook-tls-secret`, as the kustomize install runs
them, all on ONE loopback port: kopf's server binds it with SO_REUSEPORT, so the kernel spreads the API
server's connections over the processes that listen, as a Service spreads them over pods. The webhook
configurations are the shipped ones (deploy/base/webhooks.yaml), pointed at that port by the test, as
an install would create them; the Secret is shipped empty, as deploy/base ships it.

- Two replicas starting at once make ONE certificate in the Secret and both serve it; a third one
  started later reads it and writes nothing.
- A replica that stops gracefully, and one that is SIGKILLed, leave both configurations exactly as
  they were (the same resourceVersion), and admission goes on through the replica that lives.
- With no replica left the configurations are still there and nothing is admitted unstamped: the
  API server refuses (failurePolicy Fail).

The session's operator is stopped for this module and started again at its end.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    WEBHOOK_CONFIGURATION_KINDS,
    OperatorProcess,
    _free_port,
    install_webhook_configurations,
    remove_webhook_configurations,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace

pytestmark = pytest.mark.controlplane

WEBHOOK_TLS = "chaosguard-webhook-tls"
AUTHOR = "chaosguard.dev/author"
#: Short leases, so that a replica takes over from a killed leader within seconds.
ELECTION = [
    "--leader-elect",
    "--leader-election-lease-duration=4",
    "--leader-election-renew-deadline=3",
    "--leader-election-renew-period=1",
    "--leader-election-retry-period=0.5",
]
#: Consecutive admissions that must all pass once a replica is gone.
IN_A_ROW = 10


@dataclass
class Replicas:
    control_plane: ControlPlane
    workdir: Path
    namespace: str  # the operator's own: the Secret and the Lease live there
    port: int

    def start(self, *names: str) -> list[OperatorProcess]:
        """Starts the replicas at the same moment (they race for the Secret), each with its own files."""

        def one(name: str) -> OperatorProcess:
            args = [
                "--webhook-port",
                str(self.port),
                "--webhook-host",
                "127.0.0.1",
                "--webhook-tls-secret",
                WEBHOOK_TLS,
            ]
            args += ["--webhook-tls-dir", str(self.tls_dir(name)), "--leader-election-identity", name, *ELECTION]
            env = {"CHAOSGUARD_NAMESPACE": self.namespace}
            return OperatorProcess(self.control_plane.kubeconfig, self.workdir / f"{name}.log", env, args).start()

        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(one, names))

    def tls_dir(self, name: str) -> Path:
        return self.workdir / f"tls-{name}"

    def configurations(self) -> dict[str, Any]:
        return {
            kind: json.loads(self.control_plane.kubectl("get", kind, "chaosguard.dev", "-o", "json").stdout)
            for kind in WEBHOOK_CONFIGURATION_KINDS
        }

    def secret(self) -> dict[str, Any]:
        found = self.control_plane.kubectl("get", "secret", WEBHOOK_TLS, "-n", self.namespace, "-o", "json")
        secret: dict[str, Any] = json.loads(found.stdout)
        return secret

    def admit(self) -> tuple[bool, str]:
        """A dry-run create of an experiment: admitted (through both webhooks) and stamped, or refused."""
        body = {
            "apiVersion": "chaosguard.dev/v1alpha1",
            "kind": "ChaosExperiment",
            "metadata": {"name": f"probe-{uuid.uuid4().hex[:6]}", "namespace": "default"},
            "spec": {
                "action": "pod-kill",
                "target": {"selector": {"matchLabels": {"app": "nothing"}}, "mode": "one"},
                "duration": "3s",
                "dryRun": True,
            },
        }
        result = self.control_plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(body), check=False
        )
        if result.returncode != 0:
            return False, result.stderr.strip()
        annotations = json.loads(result.stdout)["metadata"].get("annotations") or {}
        return annotations.get(AUTHOR) == "admin", f"stamped by {annotations.get(AUTHOR)!r}"

    def admitted_in_a_row(self) -> None:
        """Admission works at once, with no take-over to wait for (every replica serves already), and
        keeps working."""
        outcomes = [self.admit() for _ in range(IN_A_ROW)]
        refused = [message for ok, message in outcomes if not ok]
        assert not refused, f"{len(refused)} of {IN_A_ROW} refused after a replica went: {refused[:3]}"


def listening_pids(port: int) -> set[int]:
    """The processes with a listening TCP socket on `port` (from /proc: the sockets' inodes)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if {f"socket:[{inode}]" for inode in inodes} & links:
            pids.add(int(pid))
    return pids


def serves(operator: OperatorProcess, port: int) -> bool:
    assert operator.process is not None
    return operator.process.pid in listening_pids(port)


@pytest.fixture
def replicas(
    chaos_operator: OperatorProcess, chaosguard_crds: ControlPlane, k8s: client.ApiClient, tmp_path: Path
) -> Iterator[Replicas]:
    chaos_operator.stop()
    namespace = create_namespace(k8s, "chaosguard-replicas")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": WEBHOOK_TLS, "namespace": namespace}}
    chaosguard_crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))  # shipped empty, as deploy/base does
    port = _free_port()
    install_webhook_configurations(chaosguard_crds, f"https://127.0.0.1:{port}")  # no caBundle: the operator's
    try:
        yield Replicas(chaosguard_crds, tmp_path, namespace, port)
    finally:
        remove_webhook_configurations(chaosguard_crds)
        client.CoreV1Api(k8s).delete_namespace(namespace)
        chaos_operator.start()


def test_replicas_that_stop_or_die_leave_the_webhooks_to_the_others(replicas: Replicas) -> None:
    first, second = replicas.start("replica-a", "replica-b")
    started = [first, second]
    try:
        # One certificate, made once (the Secret's data), served by both; the configurations trust its CA.
        wait_for(
            lambda: all(serves(operator, replicas.port) for operator in (first, second)),
            timeout=60,
            what="both replicas to serve the webhooks",
            describe=lambda: f"listening: {listening_pids(replicas.port)}",
        )
        secret = replicas.secret()
        for name in ("replica-a", "replica-b"):
            served = (replicas.tls_dir(name) / "tls.crt").read_bytes()
            assert served == base64.b64decode(secret["data"]["tls.crt"]), name
        before = replicas.configurations()
        for kind, configuration in before.items():
            bundles = {webhook["clientConfig"].get("caBundle") for webhook in configuration["webhooks"]}
            assert bundles == {secret["data"]["ca.crt"]}, kind
        replicas.admitted_in_a_row()

        # A graceful stop (SIGTERM, as in a rollout or drain) of the leader: nothing is removed or rewritten.
        leader = first if "acquired the lease" in first.log_tail(400) else second
        standby = second if leader is first else first
        leader.stop()
        assert replicas.configurations() == before
        replicas.admitted_in_a_row()

        # A replacement reads the certificate and writes nothing.
        (third,) = replicas.start("replica-c")
        started.append(third)
        wait_for(lambda: serves(third, replicas.port), timeout=60, what="the third replica to serve the webhooks")
        assert (replicas.tls_dir("replica-c") / "tls.crt").read_bytes() == (
            replicas.tls_dir("replica-a") / "tls.crt"
        ).read_bytes()
        assert replicas.secret()["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
        assert replicas.configurations() == before

        # SIGKILL (a node failure, an OOM kill): nothing is removed, and the other replica answers.
        standby.kill()
        assert replicas.configurations() == before
        replicas.admitted_in_a_row()

        # No replica left: the configurations stay, and the API server admits nothing unstamped.
        third.stop()
        assert replicas.configurations() == before
        admitted, message = replicas.admit()
        assert not admitted and "failed calling webhook" in message, message
    finally:
        for operator in started:
            operator.stop()
