"""The guest's real node (localcluster/guestnode.py): a kubelet, containerd, runc and CNI in a QEMU
guest whose kernel has netem, joined to a control plane on this machine; the operator runs here as
a process (Python under TCG is some ten times slower, and its decisions do not depend on the node's
kernel). One guest for the whole session; the tests share one namespace of pods."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster import guestnode, guestpods
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import OperatorProcess, install_crds
from localcluster.prometheus import MetricsTarget, PrometheusServer, prometheus_available
from localcluster.realnode import build_images
from tests.support.example_flow import EXAMPLES, Kubectl


@dataclass
class GuestCluster:
    plane: ControlPlane
    node: guestnode.GuestNode
    kubectl: Kubectl
    workdir: Path

    def kubectl_argv(self, *args: str) -> list[str]:
        return [str(self.plane.kubectl_path), f"--kubeconfig={self.plane.kubeconfig}", *args]


@pytest.fixture(scope="package")
def guest_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestCluster]:
    if problem := guestnode.guest_node_problem():
        pytest.skip(f"no guest node here: {problem}")
    images = build_images(guestnode.GUEST_IMAGES)
    workdir = Path(os.environ.get("CHAOSGUARD_GUEST_NODE_DIR") or tmp_path_factory.mktemp("guest-node"))
    with guestnode.guest_cluster(workdir, default_bin_dir(), images) as (plane, node):
        print(f"guest node Ready; seconds from the start: {node.timings}")
        install_crds(plane)

        kubectl = guestpods.kubectl_for(plane)
        kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
        yield GuestCluster(plane, node, kubectl, workdir)


@pytest.fixture(scope="package")
def kubectl(guest_cluster: GuestCluster) -> Kubectl:
    return guest_cluster.kubectl


@pytest.fixture(scope="package")
def operator(guest_cluster: GuestCluster) -> Iterator[OperatorProcess]:
    """The operator as a process here, against the control plane the guest's node joined."""
    log = guest_cluster.workdir / "operator.log"
    process = guestpods.operator_for(guest_cluster.plane, guest_cluster.kubectl, log).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="package")
def sli() -> Iterator[MetricsTarget]:
    with MetricsTarget() as metrics:
        yield metrics


@pytest.fixture(scope="package")
def prometheus(sli: MetricsTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not prometheus_available():
        pytest.skip("Debian's prometheus is not installed (make system-deps)")
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [sli]) as server:
        yield server


@pytest.fixture(scope="package")
def pair(kubectl: Kubectl) -> guestpods.Pair:
    """A server pod and a client Deployment (three pods: the shipped policy lets a fault take 40 % of a
    workload), all from the e2e app image, in a namespace opted in to chaos."""
    namespace = f"guest-{uuid.uuid4().hex[:6]}"
    return guestpods.create_pair(kubectl, namespace)


@pytest.fixture
def network_actions_allowed(kubectl: Kubectl) -> Iterator[None]:
    """The shipped default policy with the network and partition actions added; restored afterwards."""
    shipped = (EXAMPLES / "policy-default.yaml").read_text()
    assert "allowedActions: [pod-kill, latency]" in shipped
    kubectl("apply", "-f", "-", input=shipped.replace("[pod-kill, latency]", "[pod-kill, latency, network, partition]"))
    yield None
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
