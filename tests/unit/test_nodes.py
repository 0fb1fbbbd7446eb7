"""node-drain's pure judgement (decisions.nodes and the policy's on-face rules), and `chaosguard validate`
judging examples/node-drain.yaml with the same rules as admission."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from chaosguard.api.models import ChaosExperimentSpec, ChaosPolicy, LabelSelector, TargetMode
from chaosguard.cli.main import main
from chaosguard.decisions.nodes import (
    NodeView,
    choose_nodes,
    classify_nodes,
    drain_plan,
    experiment_of_mark,
    mark_of,
    node_cap_refusal,
    node_refusal,
)
from chaosguard.decisions.policy import CONTROL_PLANE_LABEL, combine, static_refusals
from chaosguard.decisions.selection import PodView, count_for_mode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def node(name: str, *, labels: dict[str, str] | None = None, ready: bool = True, cordoned: bool = False) -> NodeView:
    return NodeView(name=name, uid=f"uid-{name}", labels=labels or {}, ready=ready, unschedulable=cordoned)


def policy(name: str = "p", **spec: object) -> ChaosPolicy:
    return ChaosPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def pod(namespace: str, name: str, workload: str | None = "Deployment/checkout", **labels: str) -> PodView:
    return PodView(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        labels={"app": "checkout", **labels},
        phase="Running",
        ready=True,
        terminating=False,
        workload=workload,
    )


def test_control_plane_protected_cordoned_and_not_ready_nodes_are_never_drained() -> None:
    effective = combine([policy(protectedNodeSelector={"matchLabels": {"tier": "payments"}})])
    rules = {
        "cp": node_refusal(node("cp", labels={CONTROL_PLANE_LABEL: ""}), effective, {}),
        "payments": node_refusal(node("payments", labels={"tier": "payments"}), effective, {}),
        "cordoned": node_refusal(node("cordoned", cordoned=True), effective, {}),
        "down": node_refusal(node("down", ready=False), effective, {}),
        "worker": node_refusal(node("worker"), effective, {}),
    }
    assert {name: refusal.rule if refusal else None for name, refusal in rules.items()} == {
        "cp": "control-plane-node",
        "payments": "protected-node",
        "cordoned": "already-cordoned",
        "down": "node-not-ready",
        "worker": None,
    }
    assert "ChaosPolicy/p" in str(rules["payments"]) and "by someone else" in str(rules["cordoned"])


def test_a_node_with_an_operator_replica_is_drained_only_while_another_runs_elsewhere() -> None:
    effective = combine([])
    alone = node_refusal(node("a"), effective, {"a": 2})
    assert alone is not None and alone.rule == "last-operator-replica"
    assert node_refusal(node("a"), effective, {"a": 1, "b": 1}) is None
    assert node_refusal(node("c"), effective, {"a": 1}) is None
    unknown = node_refusal(node("a"), effective, {}, operator_known=False)
    assert unknown is not None and unknown.rule == "operator-replicas-unknown"


def test_max_node_percentage_counts_every_cordoned_node_cluster_wide() -> None:
    effective = combine([policy("a", maxNodePercentage=50), policy("b", maxNodePercentage=40)])
    assert effective.max_node_percentage == (40, "ChaosPolicy/b")
    nodes = [node("n0"), node("n1"), node("n2"), node("n3"), node("n4")]  # 40 % of 5 = 2
    assert node_cap_refusal(nodes[0], nodes, effective) is None
    one_down = [node("n0"), node("n1", cordoned=True), *nodes[2:]]
    assert node_cap_refusal(one_down[0], one_down, effective) is None
    two_down = [node("n0"), node("n1", cordoned=True), node("n2", cordoned=True), *nodes[3:]]
    refusal = node_cap_refusal(two_down[0], two_down, effective)
    assert refusal is not None and refusal.rule == "max-node-percentage" and "3 of 5 nodes" in refusal.message
    assert node_cap_refusal(nodes[0], nodes, combine([])) is None


def test_nodes_are_chosen_by_selector_and_mode_reproducibly() -> None:
    nodes = [node(f"w{i}", labels={"pool": "workers"}) for i in range(4)] + [node("x", labels={"pool": "gpu"})]
    selector = LabelSelector.model_validate({"matchLabels": {"pool": "workers"}})
    eligibility = classify_nodes(nodes, selector, combine([]), {})
    assert [n.name for n in eligibility.eligible] == ["w0", "w1", "w2", "w3"]
    assert count_for_mode(TargetMode.FIXED_PERCENT, 50, 4) == 2
    assert count_for_mode(TargetMode.ONE, None, 0) == 0
    first = choose_nodes(eligibility.eligible, 2, random.Random("seed"))
    assert first == choose_nodes(list(reversed(eligibility.eligible)), 2, random.Random("seed")) and len(first) == 2


def test_the_drain_evicts_only_targeted_killable_pods_and_leaves_the_rest() -> None:
    effective = combine([policy(protectedSelector={"matchLabels": {"keep": "yes"}})])
    pods = [
        pod("shop", "a"),
        pod("shop", "kept", keep="yes"),
        pod("shop", "bare", workload=None),
        pod("shop", "agent", workload="DaemonSet/agent"),
        pod("other", "b"),
        pod("kube-system", "dns"),
    ]
    selector = LabelSelector.model_validate({"matchLabels": {"app": "checkout"}})
    plan = drain_plan(pods, ["shop", "kube-system"], selector, effective, {})
    assert [p.name for p in plan.evict] == ["a"]
    stay = {exclusion.pod.name: exclusion.refusal.rule for exclusion in plan.stay}
    assert stay == {
        "kept": "protected-pod",
        "bare": "not-controller-owned",
        "agent": "daemonset-pod",
        "b": "not-targeted",
        "dns": "builtin-excluded-namespace",
    }


def test_the_mark_names_the_experiment_and_the_run() -> None:
    mark = mark_of("shop/drain", "run-7")
    assert mark == "shop/drain run run-7" and experiment_of_mark(mark) == "shop/drain"


def spec(**drain: object) -> ChaosExperimentSpec:
    return ChaosExperimentSpec.model_validate(
        {"action": "node-drain", "nodeDrain": drain, "target": {}, "duration": "1m"}
    )


def test_on_its_face_a_drain_of_control_plane_nodes_or_above_the_node_cap_is_refused() -> None:
    effective = combine([policy(maxNodePercentage=20)])
    rules = [
        r.rule
        for r in static_refusals(
            spec(nodeSelector={"matchExpressions": [{"key": CONTROL_PLANE_LABEL, "operator": "Exists"}]}),
            "shop",
            effective,
            None,
        )
    ]
    assert rules == ["control-plane-node"]
    assert [r.rule for r in static_refusals(spec(mode="fixed-percent", value=30), "shop", effective, None)] == [
        "max-node-percentage"
    ]
    assert [r.field for r in static_refusals(spec(mode="all"), "shop", effective, None)] == ["spec.nodeDrain.mode"]
    assert static_refusals(spec(mode="fixed-percent", value=20), "shop", effective, None) == []


def test_validate_judges_the_example_with_the_rules_of_admission(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    example = str(EXAMPLES / "node-drain.yaml")
    allowing = tmp_path / "allowing.yaml"
    allowing.write_text(
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosPolicy\nmetadata: {name: nodes}\n"
        "spec: {maxNodePercentage: 30, allowedActions: [pod-kill, node-drain]}\n"
    )
    assert main(["validate", "-f", example, "--policy", str(allowing)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    code = main(["validate", "-f", example, "--policy", str(EXAMPLES / "policy-default.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED allowed-actions: action 'node-drain' is not allowed" in out, out
