"""node-drain against the installed operator (its image, the shipped role) on a node with a real kubelet.

This node carries both operator replicas, so it is never drained: a node with an operator replica is
drained only while another Ready replica runs on another node. The operator judges that from the nodes
and its own pods, both read with the shipped role, and cordons nothing. The drain itself (cordon,
evictions, uncordon) is shown on kwok nodes (tests/integration/test_operator_nodedrain.py), and under
the shipped role there too (tests/integration/test_deploy_manifests.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_latency import finished, opted_in_target
from tests.support.example_flow import Kubectl

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "node-drain.yaml").read_text()
DRAINABLE = "chaosguard.dev/drainable"


@pytest.mark.usefixtures("installed_operator")
def test_the_node_that_carries_every_operator_replica_is_never_drained(kubectl: Kubectl, e2e_namespace: str) -> None:
    (pod, *_) = opted_in_target(kubectl, e2e_namespace)
    node = pod["spec"]["nodeName"]
    allowed = json.loads(kubectl("get", "chaospolicy", "default", "-o", "json"))["spec"]["allowedActions"]
    widened = json.dumps({"spec": {"allowedActions": [*allowed, "node-drain"]}})
    kubectl("patch", "chaospolicy", "default", "--type=merge", "-p", widened)
    kubectl("label", "node", node, f"{DRAINABLE}=true", "--overwrite")
    try:
        experiment = EXAMPLE.replace("{app: checkout}", "{app: latapp}").replace("duration: 30s", "duration: 5s")
        kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment)
        status = finished(kubectl, e2e_namespace, "checkout-node-drain")
        dump = yaml.safe_dump(status)[:4000]
        assert status["phase"] == "Completed" and not status["lastRun"].get("faults"), dump
        events = json.loads(kubectl("get", "events", "-n", e2e_namespace, "-o", "json"))["items"]
        messages = [e["message"] for e in events if e["reason"] == "NoTargets"]
        assert any("last-operator-replica" in m and f"node {node} carries" in m for m in messages), messages
        assert not json.loads(kubectl("get", "node", node, "-o", "json"))["spec"].get("unschedulable")
    finally:
        kubectl("label", "node", node, f"{DRAINABLE}-")
        kubectl(
            "patch", "chaospolicy", "default", "--type=merge", "-p", json.dumps({"spec": {"allowedActions": allowed}})
        )
