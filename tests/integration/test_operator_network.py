"""The network faults beyond latency on the local control plane, through the user's path
(`kubectl apply` of the examples): exactly the intended injector container in exactly the chosen
pods, the impairment in status and Events, and the refusals (policy limits, a partition of the API
server's address) before anything is injected. kwok pods have no kubelet: what the injector does
with tc is measured in tests/netns (netem guest)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaosguard.clients.kube import Cluster
from chaosguard.decisions.policy import GuardedAddress
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    events_for,
    running_operator,
    scoped_policy,
    status_of,
    wait_for_phase,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace
from tests.integration.test_operator_latency import SCRIPT, active_faults, ephemeral, faults_of

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def network_operator(
    k8s: client.ApiClient,
    chaosguard_crds: ControlPlane,
    chaos_operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as deployed, knowing its own namespace (CHAOSGUARD_NAMESPACE): without it, it
    refuses every network fault. Stands in for the session's operator during this module."""
    own = create_namespace(k8s, "chaosguard-system")
    chaos_operator.stop()
    log = tmp_path_factory.mktemp("network-operator") / "operator.log"
    operator = OperatorProcess(chaosguard_crds.kubeconfig, log, {"CHAOSGUARD_NAMESPACE": own})
    try:
        yield operator.start()
    finally:
        operator.stop()
        chaos_operator.start()
        client.CoreV1Api(k8s).delete_namespace(own)


def flags(command: list[str]) -> list[str]:
    """The command without its deadline value, which depends on when the injector went in."""
    at = command.index("--deadline-at")
    return command[:at] + command[at + 2 :]


def the_injectors(api: client.ApiClient, namespace: str, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_pod = ephemeral(api, namespace)
    assert {uid for uid, containers in by_pod.items() if containers} == {f["uid"] for f in faults}
    return [container for fault in faults for container in by_pod[fault["uid"]]]


def test_the_network_example_injects_exactly_the_impairment_into_the_chosen_pods(
    k8s: client.ApiClient, control_plane: ControlPlane, network_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, (EXAMPLES / "network-loss.yaml").read_text(), shop)
    faults = active_faults(k8s, shop, "checkout-payments-loss", 2)  # 40 % of 5
    run_id = status_of(k8s, shop, "checkout-payments-loss")["currentRun"]["id"]
    for container in the_injectors(k8s, shop, faults):
        assert container["name"] == f"chaosguard-network-{run_id.lower()}"
        assert flags(container["command"]) == [
            SCRIPT, "inject",
            "--fault", "root qdisc ca05: prio with netem loss random 30% rate 1mbit on band ca05:4",
            "--effect", "impairing only egress to destinations 10.1.0.0/16; other traffic unaffected",
            "--tc", "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
            "--tc", "qdisc add parent ca05:4 handle ca06: netem loss random 30% rate 1mbit",
            "--tc", "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.0.0/16 flowid ca05:4",
        ]  # fmt: skip
        deadline_at = int(container["command"][container["command"].index("--deadline-at") + 1])
        assert 110 <= deadline_at - time.time() <= 121  # absolute: the run's end in unix seconds
        assert container["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    assert {f["impairment"] for f in faults} == {"loss 30%, rate 1mbit"}
    assert all(f["message"].startswith("loss 30%, rate 1mbit added by chaosguard-network-") for f in faults), faults
    injected = wait_for(
        lambda: [e for e in events_for(k8s, shop, "checkout-payments-loss") if e.reason == "NetworkInjected"],
        timeout=15,
        what="NetworkInjected Events",
    )
    assert "loss 30%, rate 1mbit added by" in injected[0].message
    control_plane.kubectl("delete", "chaosexperiment", "checkout-payments-loss", "-n", shop)


def test_the_partition_example_injects_drop_filters_and_an_abort_takes_them_out(
    k8s: client.ApiClient, control_plane: ControlPlane, network_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, (EXAMPLES / "partition.yaml").read_text(), shop)
    (fault,) = active_faults(k8s, shop, "checkout-db-partition", 1)
    (container,) = the_injectors(k8s, shop, [fault])
    assert container["name"].startswith("chaosguard-partition-")
    dst = "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.0.0/16"
    src = "filter add parent ffff: protocol ip pref 51717 u32 match ip src 10.1.0.0/16"
    ports = "match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip protocol {} 0xff match ip {} 5432 0xffff"
    assert flags(container["command"]) == [
        SCRIPT, "inject", "--fault", "partition",
        "--effect", "dropping egress and ingress traffic of destinations 10.1.0.0/16, TCP/UDP ports 5432; "
        "other traffic unaffected",
        "--tc", "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
        "--tc", f"{dst} {ports.format(6, 'dport')} action drop",
        "--tc", f"{dst} {ports.format(17, 'dport')} action drop",
        "--tc", "qdisc add handle ffff: ingress",
        "--tc", f"{src} {ports.format(6, 'sport')} action drop",
        "--tc", f"{src} {ports.format(17, 'sport')} action drop",
    ]  # fmt: skip
    assert fault["impairment"] == "partition (both) from 10.1.0.0/16 ports 5432"
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "checkout-db-partition",
        {"metadata": {"annotations": {"chaosguard.dev/abort": "db failover drill over"}}},
    )  # fmt: skip
    status = wait_for_phase(k8s, shop, "checkout-db-partition", "Aborted", timeout=30)
    (removed,) = faults_of(status)
    assert removed["state"] == "Removed" and "clear container" in removed["removedBy"], removed
    assert removed["removedAt"] >= removed["injectedAt"]
    names = [c["name"] for c in ephemeral(k8s, shop)[fault["uid"]]]
    assert len(names) == 2 and any(n.startswith("chaosguard-clear") for n in names), names
    reasons = [e.reason for e in events_for(k8s, shop, "checkout-db-partition")]
    assert "PartitionInjected" in reasons and "PartitionRemoved" in reasons, reasons


def test_a_partition_of_the_api_servers_address_is_refused_before_anything_is_injected(
    k8s: client.ApiClient, control_plane: ControlPlane, network_operator: OperatorProcess, shop: str
) -> None:
    api_server = client.CoreV1Api(k8s).read_namespaced_service("kubernetes", "default").spec.cluster_ip
    text = (EXAMPLES / "partition.yaml").read_text().replace("[10.1.0.0/16]", f"[10.1.0.0/16, {api_server}/32]")
    apply_yaml(control_plane, text.replace("checkout-db-partition", "cut-api"), shop)
    status = wait_for_phase(k8s, shop, "cut-api", "Failed", timeout=30)
    assert status["lastRun"]["reason"] == "PartitionProtectedAddress", status["lastRun"]
    message = status["lastRun"]["message"]
    assert f"spec.partition.destinationCIDRs[1] {api_server}/32 contains {api_server}" in message, message
    assert "the API server" in message and "narrow the CIDR" in message
    assert not any(ephemeral(k8s, shop).values())


@pytest.mark.parametrize(
    ("policy", "example", "refusal"),
    [
        ({"maxLoss": 10}, "network-loss.yaml", "REFUSED max-loss: loss 30% is more than the 10% allowed"),
        (
            {"allowedActions": ["pod-kill", "latency", "network"]},
            "partition.yaml",
            "REFUSED allowed-actions: action 'partition' is not allowed",
        ),
        (
            {"allowedActions": ["pod-kill", "latency", "network"]},
            "loss-100",
            "REFUSED allowed-actions: spec.network.loss 100% drops every packet, which is a partition, and "
            "partition is not allowed",
        ),
    ],
    ids=["max-loss", "no-partitions", "loss-100-no-partitions"],
)
def test_policy_limits_refuse_network_faults(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    network_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
    policy: dict[str, Any],
    example: str,
    refusal: str,
) -> None:
    create_policy(k8s, f"net-{shop}", scoped_policy(shop, **policy))
    isolated_policies.append(f"net-{shop}")
    text = (EXAMPLES / (example if example.endswith(".yaml") else "network-loss.yaml")).read_text()
    if example == "loss-100":
        text = text.replace("loss: 30", "loss: 100")
        assert "loss: 100" in text
    apply_yaml(control_plane, text, shop)
    name = "checkout-db-partition" if example == "partition.yaml" else "checkout-payments-loss"
    status = wait_for_phase(k8s, shop, name, "Rejected", timeout=30)
    assert refusal in status["message"], status["message"]
    assert not any(ephemeral(k8s, shop).values())


def test_a_network_fault_dropping_everything_is_refused_for_the_api_servers_address(
    k8s: client.ApiClient, control_plane: ControlPlane, network_operator: OperatorProcess, shop: str
) -> None:
    """loss 100 with no destinationCIDRs cuts pods off from every address: judged as a partition."""
    text = (EXAMPLES / "network-loss.yaml").read_text().replace("loss: 30", "loss: 100")
    lines = [line for line in text.splitlines() if "destinationCIDRs" not in line and "10.1.0.0/16" not in line]
    apply_yaml(control_plane, "\n".join(lines).replace("checkout-payments-loss", "drop-all") + "\n", shop)
    status = wait_for_phase(k8s, shop, "drop-all", "Failed", timeout=30)
    assert status["lastRun"]["reason"] == "PartitionProtectedAddress", status["lastRun"]
    message = status["lastRun"]["message"]
    assert "spec.network.loss 100% with no spec.network.destinationCIDRs reaches every address" in message, message
    assert "the API server" in message or "node " in message, message
    assert not any(ephemeral(k8s, shop).values())


def test_without_its_own_namespace_the_operator_refuses_network_faults(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    network_operator: OperatorProcess,
    shop: str,
    tmp_path: Path,
) -> None:
    network_operator.stop()
    try:
        with running_operator(chaosguard_crds, tmp_path):  # no CHAOSGUARD_NAMESPACE
            apply_yaml(control_plane, (EXAMPLES / "network-loss.yaml").read_text(), shop)
            status = wait_for_phase(k8s, shop, "checkout-payments-loss", "Failed", timeout=30)
    finally:
        network_operator.start()
    assert status["lastRun"]["reason"] == "OperatorNamespaceUnknown", status["lastRun"]
    assert "set CHAOSGUARD_NAMESPACE" in status["lastRun"]["message"], status["lastRun"]
    assert not any(ephemeral(k8s, shop).values())


def test_the_guarded_addresses_include_each_nodes_pod_cidr_gateway(k8s: client.ApiClient) -> None:
    """On bridge CNIs (flannel's cni0) and Cilium the kubelet probes pods from the first host of the
    node's pod CIDRs: a partition of it would fail every probe. (A node object with no kubelet,
    unschedulable and tainted, so nothing lands on it.)"""
    core = client.CoreV1Api(k8s)
    name = f"no-kubelet-{uuid.uuid4().hex[:6]}"
    spec = client.V1NodeSpec(
        pod_cidr="10.250.3.0/24",
        pod_cidrs=["10.250.3.0/24", "fd00:250:3::/64"],
        unschedulable=True,
        taints=[client.V1Taint(key="chaosguard.dev/test", value="no-kubelet", effect="NoSchedule")],
    )
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name), spec=spec))
    try:
        guarded = Cluster(core, client.AppsV1Api(k8s), client.CustomObjectsApi(k8s)).guarded_addresses("default")
    finally:
        core.delete_node(name)
    assert GuardedAddress("10.250.3.1", f"node {name} (gateway of its pod CIDR 10.250.3.0/24)") in guarded, guarded
    assert GuardedAddress("fd00:250:3::1", f"node {name} (gateway of its pod CIDR fd00:250:3::/64)") in guarded
