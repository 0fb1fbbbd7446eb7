"""A partition on a real node, with the operator running from its image under the shipped RBAC.

The operator reads the node's, the API server's and its own namespace's addresses right before a
network fault goes in (list nodes and services, get endpoints): a partition of the node's own
address is refused before anything is injected. A partition of other addresses then runs for real
in the target pod:
- where the node's kernel has the tc modules (kind in users' CI), it holds and is removed by the
  injector's own deadline;
- where it has none (this machine's kernel: no sch_prio, no sch_netem), tc refuses, the run ends
  Failed naming the missing modules, a clean-up container confirms nothing of chaosguard's is left,
  and the pod's qdiscs are exactly as before.
(What a partition does to packets is measured in the netem guest: tests/netns/test_network_faults.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.conftest import E2ECluster, check_ran_from_the_injector_image
from tests.e2e.test_latency import finished, opted_in_target, pod_qdiscs, target_pod
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons


def partition_experiment(name: str, cidr: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: partition
  partition: {{destinationCIDRs: ["{cidr}"], ports: [5432]}}
  target: {{selector: {{matchLabels: {{app: latapp}}}}, mode: fixed, value: 1}}
  duration: 20s
"""


@pytest.fixture
def default_policy_restored(kubectl: Kubectl) -> Iterator[None]:
    """The shipped default policy as it was, whatever the test did to it."""
    yield None
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))


def allow_partitions(kubectl: Kubectl) -> None:
    """The shipped default policy with partition added to its allowedActions."""
    shipped = (EXAMPLES / "policy-default.yaml").read_text()
    assert "allowedActions: [pod-kill, latency]" in shipped
    kubectl("apply", "-f", "-", input=shipped.replace("[pod-kill, latency]", "[pod-kill, latency, partition]"))


@pytest.mark.usefixtures("installed_operator", "default_policy_restored")
def test_a_partition_is_refused_for_the_nodes_address_and_otherwise_runs_in_the_pod(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    pods = opted_in_target(kubectl, e2e_namespace)  # applies the shipped default policy
    allow_partitions(kubectl)
    node_ip = pods[0]["status"]["hostIP"]
    qdiscs_before = {p["metadata"]["name"]: pod_qdiscs(p["status"]["podIP"]) for p in pods}

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=partition_experiment("cut-node", f"{node_ip}/32"))
    status = finished(kubectl, e2e_namespace, "cut-node")
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "PartitionProtectedAddress", dump
    assert f"contains {node_ip}, of node " in status["lastRun"]["message"], dump
    assert not status["lastRun"].get("faults"), dump
    assert all(not target_pod(kubectl, e2e_namespace, p["metadata"]["name"])["spec"].get("ephemeralContainers")
               for p in pods)  # fmt: skip

    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=partition_experiment("cut-db", "192.0.2.0/24"))
    status = finished(kubectl, e2e_namespace, "cut-db")
    dump = yaml.safe_dump(status)[:4000]
    (fault,) = status["lastRun"]["faults"]
    assert fault["container"].startswith("chaosguard-partition-"), dump
    assert fault["impairment"] == "partition (both) from 192.0.2.0/24 ports 5432", dump
    reasons = event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "cut-db")
    if e2e_cluster.node_has_netem:
        assert status["phase"] == "Completed", dump
        assert fault["state"] == "Removed" and "deadline" in fault["removedBy"], dump
        assert "PartitionInjected" in reasons, reasons
    else:
        assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "InjectionFailed", dump
        assert "lacks a tc module a partition needs" in fault["message"], dump
        assert "confirmed by chaosguard-clear1-" in fault["message"], dump
        assert "PartitionFailed" in reasons and "InjectionFailed" in reasons, reasons
    pod = target_pod(kubectl, e2e_namespace, fault["name"])
    check_ran_from_the_injector_image(pod)
    states = {s["name"]: s["state"] for s in pod["status"].get("ephemeralContainerStatuses", [])}
    assert all("terminated" in state for state in states.values()), f"still running in the pod: {states}"
    assert {p["metadata"]["name"]: pod_qdiscs(p["status"]["podIP"]) for p in pods} == qdiscs_before
    events = json.loads(kubectl("get", "events", "-n", e2e_namespace, "-o", "json"))["items"]
    assert any(e["reason"] == "PartitionProtectedAddress" for e in events), [e["reason"] for e in events]
