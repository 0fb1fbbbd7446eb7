"""node-drain through the path a user takes: `kubectl apply` of examples/node-drain.yaml, a real API
server, kwok-simulated nodes and pods, and the operator as a process. Everything is checked through the
API: the node cordoned with chaosguard's mark, the pods evicted (a PodDisruptionBudget holding), the
guards, the abort, the clean-up and an operator killed mid-drain.

Each test brings its own kwok nodes, tainted so no other test's pods land there: the first one alone at
first (the workload's pods all go there), then a second one for the evicted pods to move to."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.api.models import ABORT_ANNOTATION
from chaosguard.decisions.nodes import CORDON_MARK
from localcluster.controlplane import ControlPlane
from localcluster.kwoknodes import Nodes, deploy_pinned
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    delete_policy,
    events_for,
    scoped_policy,
    signing_key_file,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = (EXAMPLES / "node-drain.yaml").read_text()
NAME = "checkout-node-drain"
DRAINABLE = "chaosguard.dev/drainable"


def with_duration(text: str, duration: str) -> str:
    assert "duration: 30s" in text
    return text.replace("duration: 30s", f"duration: {duration}")


@pytest.fixture
def nodes(k8s: client.ApiClient) -> Iterator[Nodes]:
    made = Nodes(k8s)
    yield made
    made.delete_all()


@pytest.fixture
def drain_operator(
    chaos_operator: OperatorProcess, chaosguard_crds: ControlPlane, k8s: client.ApiClient, tmp_path: Path
) -> Iterator[Callable[[], OperatorProcess]]:
    """Starts the operator knowing its own namespace (node-drain judges where its replicas run, and drains
    nothing without knowing it), in place of the session's operator, which is back when the test ends."""
    operator_namespace = f"chaosguard-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(k8s).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=operator_namespace)))
    started: list[OperatorProcess] = []
    chaos_operator.stop()

    def start() -> OperatorProcess:
        operator = OperatorProcess(
            chaosguard_crds.kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            {"CHAOSGUARD_NAMESPACE": operator_namespace},
            args=["--signing-key-file", str(signing_key_file(chaosguard_crds.kubeconfig))],
        )
        started.append(operator.start())
        return operator

    yield start
    for operator in started:
        operator.stop()
    client.CoreV1Api(k8s).delete_namespace(operator_namespace)
    chaos_operator.start()


def node_held_by_a_budget(k8s: client.ApiClient, namespace: str, nodes: Nodes) -> tuple[str, str]:
    """(the drainable node, a spare one): two checkout pods on the first, and a budget that lets neither
    be evicted, so a drain cordons the node and then holds."""
    drained = nodes.add("a", {DRAINABLE: "true"})
    deploy_pinned(k8s, namespace, nodes, 2)
    spare = nodes.add("b")
    budget(k8s, namespace, minAvailable=2)
    return drained, spare


def budget(k8s: client.ApiClient, namespace: str, **spec: Any) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "checkout"},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}}, **spec},
    }
    client.PolicyV1Api(k8s).create_namespaced_pod_disruption_budget(namespace, body)

    def counted() -> bool:
        found = client.PolicyV1Api(k8s).read_namespaced_pod_disruption_budget("checkout", namespace)
        return bool(found.status and found.status.expected_pods)

    wait_for(counted, timeout=30, what="the disruption controller to count the budget's pods")


def run_of(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status.get("currentRun") or status.get("lastRun") or {})


def test_drain_cordons_with_a_mark_evicts_within_the_budget_uncordons_and_records_recovery(
    capsys: pytest.CaptureFixture[str],
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],
    namespace: str,
    nodes: Nodes,
    isolated_policies: list[str],
) -> None:
    drained = nodes.add("a", {DRAINABLE: "true"})
    deploy_pinned(k8s, namespace, nodes, 4)
    spare = nodes.add("b")
    budget(k8s, namespace, maxUnavailable=1)  # evictions one at a time: the rest are refused (429) and retried
    create_policy(k8s, f"nodes-{namespace}", scoped_policy(namespace, maxPercentage=50))
    isolated_policies.append(f"nodes-{namespace}")
    drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "20s"), namespace)
    wait_for(lambda: nodes.cordoned(drained), timeout=30, what=f"node {drained} cordoned")
    assert nodes.mark(drained) == f"{namespace}/{NAME} run {run_of(status_of(k8s, namespace, NAME))['id']}"
    assert not nodes.cordoned(spare)
    wait_for(lambda: not nodes.pods_on(drained, namespace), timeout=60, what=f"every checkout pod off {drained}")
    assert nodes.cordoned(drained)  # cordoned for the run's whole duration

    status = wait_for_phase(k8s, namespace, NAME, "Completed", timeout=90)
    run = run_of(status)
    assert [f["name"] for f in run["faults"]] == [drained] and run["faults"][0]["state"] == "Removed", run
    assert run["faults"][0]["removedBy"] == "deadline"
    evicted = [k for k in run["kills"] if k["result"] == "Killed"]
    assert len(evicted) == 4 and {k["node"] for k in evicted} == {drained} and run["killsTotal"] == 4, run
    assert all(k["method"] == "eviction" and k["recoveredAfterSeconds"] is not None for k in evicted), run
    assert not nodes.cordoned(drained) and nodes.mark(drained) is None
    assert len(nodes.pods_on(spare, namespace)) == 4
    reasons = {event.reason for event in events_for(k8s, namespace, NAME)}
    assert {"NodeDrained", "DrainRemoved", "WorkloadRecovered"} <= reasons, reasons

    from chaosguard.cli import ops

    assert ops.main(["report", NAME, "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig)]) == 0
    report = capsys.readouterr().out
    assert f"injected into node {drained}" in report and f"removed from node {drained} by deadline" in report, report
    assert "back at full Ready strength" in report, report


def test_a_budget_that_allows_nothing_holds_and_an_abort_uncordons(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],
    namespace: str,
    nodes: Nodes,
) -> None:
    drained, _ = node_held_by_a_budget(k8s, namespace, nodes)
    drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "5m"), namespace)
    held = wait_for(
        lambda: (
            len(
                [
                    k
                    for k in run_of(status_of(k8s, namespace, NAME)).get("kills", [])
                    if k["result"] == "SkippedDisruptionBudget"
                ]
            )
            == 2
        ),
        timeout=30,
        what="both evictions refused by the budget",
    )
    assert held and nodes.cordoned(drained) and len(nodes.pods_on(drained, namespace)) == 2  # never forced

    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev",
        "v1alpha1",
        namespace,
        "chaosexperiments",
        NAME,
        {"metadata": {"annotations": {ABORT_ANNOTATION: "game day over"}}},
    )
    status = wait_for_phase(k8s, namespace, NAME, "Aborted", timeout=30)
    fault = run_of(status)["faults"][0]
    assert fault["state"] == "Removed" and not nodes.cordoned(drained) and nodes.mark(drained) is None, fault
    assert len(nodes.pods_on(drained, namespace)) == 2


def test_guards_never_drain_a_protected_node_nor_take_over_anothers_cordon(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],
    namespace: str,
    nodes: Nodes,
    isolated_policies: list[str],
) -> None:
    drained = nodes.add("a", {DRAINABLE: "true", "tier": "payments"})
    deploy_pinned(k8s, namespace, nodes, 2)
    drain_operator()
    create_policy(
        k8s,
        f"protect-{namespace}",
        scoped_policy(namespace, protectedNodeSelector={"matchLabels": {"tier": "payments"}}),
    )
    isolated_policies.append(f"protect-{namespace}")

    apply_yaml(control_plane, with_duration(EXAMPLE, "3s"), namespace)
    event = wait_for_event(k8s, namespace, NAME, "NoTargets")
    assert (
        "protected-node" in event.message
        and f"protectedNodeSelector of ChaosPolicy/protect-{namespace}" in event.message
    )
    wait_for_phase(k8s, namespace, NAME, "Completed", timeout=30)
    assert not nodes.cordoned(drained) and len(nodes.pods_on(drained, namespace)) == 2

    # Someone else's cordon: the node is never chosen, and stays cordoned after the run.
    delete_policy(k8s, f"protect-{namespace}")
    nodes.core.patch_node(drained, {"spec": {"unschedulable": True}})
    client.CustomObjectsApi(k8s).delete_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", namespace, "chaosexperiments", NAME
    )
    wait_for(lambda: not _exists(k8s, namespace), timeout=30, what="the first experiment gone")
    apply_yaml(control_plane, with_duration(EXAMPLE, "3s"), namespace)
    wait_for_phase(k8s, namespace, NAME, "Completed", timeout=30)
    messages = [e.message for e in events_for(k8s, namespace, NAME) if e.reason == "NoTargets"]
    assert any("already-cordoned" in message and "by someone else" in message for message in messages), messages
    assert nodes.cordoned(drained) and nodes.mark(drained) is None and len(nodes.pods_on(drained, namespace)) == 2


def _exists(k8s: client.ApiClient, namespace: str) -> bool:
    try:
        client.CustomObjectsApi(k8s).get_namespaced_custom_object(
            "chaosguard.dev", "v1alpha1", namespace, "chaosexperiments", NAME
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_an_operator_killed_mid_drain_uncordons_the_node_after_it_starts_again(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],
    namespace: str,
    nodes: Nodes,
) -> None:
    drained = nodes.add("a", {DRAINABLE: "true"})
    deploy_pinned(k8s, namespace, nodes, 2)
    nodes.add("b")
    operator = drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "15s"), namespace)
    wait_for(lambda: nodes.cordoned(drained), timeout=30, what=f"node {drained} cordoned")
    operator.kill()  # SIGKILL mid-drain: nothing of the operator is left to take the cordon out
    assert nodes.cordoned(drained) and nodes.mark(drained)

    drain_operator()
    status = wait_for_phase(k8s, namespace, NAME, "Completed", timeout=90)
    assert not nodes.cordoned(drained) and nodes.mark(drained) is None, status
    assert run_of(status)["faults"][0]["state"] == "Removed"


def test_the_author_needs_pod_evictions_in_the_target_namespaces_and_patch_nodes_cluster_wide(
    k8s: client.ApiClient, namespace: str
) -> None:
    """The SubjectAccessReviews admission and every run start make (judge.permission_refusals), asked of
    the real API server's authorizer for a user who gains the two permissions one by one."""
    import asyncio

    from chaosguard.admission.judge import permission_refusals
    from chaosguard.api.models import Action
    from chaosguard.clients.kube import Cluster
    from chaosguard.decisions.stamps import Identity

    cluster = Cluster(client.CoreV1Api(k8s), client.AppsV1Api(k8s), client.CustomObjectsApi(k8s))
    user = f"drainer-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(k8s)

    def refusals() -> list[str]:
        found = asyncio.run(permission_refusals(cluster, [Identity(user)], [namespace], Action.NODE_DRAIN))
        return [refusal.message for refusal in found]

    before = refusals()
    assert len(before) == 2, before
    assert f"may not create pods/eviction in namespace {namespace!r}" in before[0]
    assert "may not patch nodes (cluster-wide)" in before[1] and "ClusterRole" in before[1]

    rule = {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "evict"}, "rules": [rule]})
    subject = {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
    binding = {"metadata": {"name": "evict"}, "subjects": [subject]}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "evict"}
    rbac.create_namespaced_role_binding(namespace, {**binding, "roleRef": role_ref})
    wait_for(lambda: len(refusals()) == 1, timeout=10, what="the Role to count")
    assert "patch nodes" in refusals()[0]

    rbac.create_cluster_role(
        {"metadata": {"name": user}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]}
    )
    cluster_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user}
    rbac.create_cluster_role_binding({"metadata": {"name": user}, "subjects": [subject], "roleRef": cluster_ref})
    try:
        wait_for(lambda: refusals() == [], timeout=10, what="the ClusterRole to count")
    finally:
        rbac.delete_cluster_role_binding(user)
        rbac.delete_cluster_role(user)


def test_plan_shows_which_node_would_be_drained_which_pods_go_and_which_nodes_are_left_out(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    namespace: str,
    nodes: Nodes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from chaosguard.cli.main import main

    drained = nodes.add("a", {DRAINABLE: "true"})
    deploy_pinned(k8s, namespace, nodes, 2)
    control = nodes.add("cp", {DRAINABLE: "true", "node-role.kubernetes.io/control-plane": ""})
    cordoned = nodes.add("cord", {DRAINABLE: "true"})
    nodes.core.patch_node(cordoned, {"spec": {"unschedulable": True}})
    carrier = nodes.add("op", {DRAINABLE: "true"})
    operator_namespace = f"chaosguard-{nodes.id}"
    nodes.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=operator_namespace)))
    replica = {
        "metadata": {"name": "chaosguard-0", "labels": {"app.kubernetes.io/name": "chaosguard"}},
        "spec": {
            "nodeName": carrier,
            "tolerations": [{**nodes.taint, "operator": "Equal"}],
            "containers": [{"name": "operator", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    nodes.core.create_namespaced_pod(operator_namespace, replica)
    wait_for(
        lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in (nodes.core.read_namespaced_pod("chaosguard-0", operator_namespace).status.conditions or [])
        ),
        timeout=30,
        what="the stand-in operator replica Ready",
    )
    experiment = tmp_path / "node-drain.yaml"
    experiment.write_text(EXAMPLE.replace(f"name: {NAME}", f"name: {NAME}\n  namespace: {namespace}"))
    try:
        code = main(
            [
                "plan",
                "-f",
                str(experiment),
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "--operator-namespace",
                operator_namespace,
            ]
        )
    finally:
        nodes.core.delete_namespace(operator_namespace)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "would drain 1 of 1 eligible nodes now" in out and f"    HIT  node {drained}\n" in out, out
    assert out.count("      EVICT ") == 2 and f"EVICT {namespace}/checkout-" in out, out
    assert f"LEFT-OUT node {control}: control-plane-node" in out
    assert f"LEFT-OUT node {cordoned}: already-cordoned" in out
    assert f"LEFT-OUT node {carrier}: last-operator-replica" in out


def test_at_start_up_a_node_marked_by_a_gone_experiment_is_uncordoned_and_anothers_cordon_stays(
    k8s: client.ApiClient, drain_operator: Callable[[], OperatorProcess], nodes: Nodes
) -> None:
    orphan = nodes.add("orphan")
    theirs = nodes.add("theirs")
    gone = {"metadata": {"annotations": {CORDON_MARK: "nowhere/deleted-while-no-operator-ran run r1"}}}
    nodes.core.patch_node(orphan, {**gone, "spec": {"unschedulable": True}})
    nodes.core.patch_node(theirs, {"spec": {"unschedulable": True}})

    operator = drain_operator()
    wait_for(
        lambda: not nodes.cordoned(orphan), timeout=30, what=f"node {orphan} uncordoned", describe=operator.log_tail
    )
    assert nodes.mark(orphan) is None
    assert nodes.cordoned(theirs), "a cordon without chaosguard's mark is never lifted"
    assert "its experiment nowhere/deleted-while-no-operator-ran is gone" in operator.log_tail(200)


def test_a_dry_run_records_the_node_it_would_drain_and_touches_nothing(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],
    namespace: str,
    nodes: Nodes,
) -> None:
    drained = nodes.add("a", {DRAINABLE: "true"})
    deploy_pinned(k8s, namespace, nodes, 2)
    drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "3s") + "  dryRun: true\n", namespace)
    status = wait_for_phase(k8s, namespace, NAME, "Completed", timeout=30)
    (fault,) = run_of(status)["faults"]
    assert fault["state"] == "WouldInject" and fault["name"] == drained, fault
    assert wait_for_event(k8s, namespace, NAME, "WouldDrain").message.startswith("dry run: would cordon node")
    assert not nodes.cordoned(drained) and len(nodes.pods_on(drained, namespace)) == 2
