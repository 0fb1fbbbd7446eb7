"""The real node is a node as a cluster has it: the kubelet serves only whom the API server
authorizes, and it leaves this machine's kernel tunables alone (it runs in a mount namespace where
they are files of its own) (this machine's real node only); and the operator runs as installed,
two replicas of which one holds the leader Lease (everywhere)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import E2ECluster
from tests.support.example_flow import Kubectl


@pytest.fixture
def real_node(e2e_cluster: E2ECluster) -> E2ECluster:
    if not e2e_cluster.real_node:
        pytest.skip("a kind cluster's nodes are kind's")
    return e2e_cluster


def test_the_kubelet_refuses_anonymous_requests(real_node: E2ECluster, kubectl: Kubectl) -> None:
    node = json.loads(kubectl("get", "node", "chaosguard-node", "-o", "json"))
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://{address}:{port}/pods", context=context, timeout=10)
    assert refused.value.code == 401


def test_the_kubelet_leaves_the_machines_kernel_tunables_alone(real_node: E2ECluster) -> None:
    from localcluster.realnode import host_sysctls

    assert real_node.sysctls_before
    assert host_sysctls() == real_node.sysctls_before


@pytest.mark.usefixtures("installed_operator")
def test_the_operator_runs_two_replicas_and_one_of_them_leads(kubectl: Kubectl) -> None:
    deployment = json.loads(kubectl("get", "deployment", "chaosguard", "-n", "chaosguard-system", "-o", "json"))
    assert deployment["status"].get("readyReplicas") == 2, deployment["status"]
    pods = json.loads(
        kubectl("get", "pods", "-n", "chaosguard-system", "-l", "app.kubernetes.io/name=chaosguard", "-o", "json")
    )["items"]
    names = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    lease = json.loads(kubectl("get", "lease", "chaosguard-leader", "-n", "chaosguard-system", "-o", "json"))
    holder = lease["spec"]["holderIdentity"]
    assert holder.split("_")[0] in names, (holder, names)
