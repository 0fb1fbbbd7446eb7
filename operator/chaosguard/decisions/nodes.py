"""node-drain's judgement, pure: which nodes may be drained, how many, and which of a node's pods go.

A node is never drained when it is a control-plane node, matches a policy's protectedNodeSelector, is
already cordoned (by anyone: chaosguard never takes over a cordon it did not make, so it never
uncordons a node someone else cordoned), is not Ready, or carries an operator replica while no other
Ready replica runs on another node (the drain must not take the last guard away). Cluster-wide, the
nodes cordoned at any moment, whoever cordoned them, plus the one about to be cordoned stay within
maxNodePercentage of all nodes. The mode picks how many nodes, as for pods; a seeded `random.Random`
picks which. Of a drained node's pods, only those spec.target picks (its namespaces and selector) and
that pod-kill could kill are evicted; the rest stay on the cordoned node, each with its rule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from chaosguard.api.models import LabelSelector
from chaosguard.decisions.policy import CONTROL_PLANE_LABEL, EffectivePolicy, Refusal
from chaosguard.decisions.selection import Exclusion, PodView, pod_refusal

# The annotation that marks a node chaosguard cordoned; its value names the experiment and the run.
CORDON_MARK = "chaosguard.dev/cordoned-by"


@dataclass(frozen=True)
class NodeView:
    """What node-drain needs to know about a node; built from the API object by the clients layer."""

    name: str
    uid: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool
    mark: str | None = None  # the CORDON_MARK annotation's value, if any

    @property
    def key(self) -> str:
        return f"node/{self.name}"


def mark_of(experiment_key: str, run_id: str) -> str:
    """The mark's value for one run of one experiment: only that run's clean-up uncordons the node."""
    return f"{experiment_key} run {run_id}"


def experiment_of_mark(mark: str) -> str:
    """The experiment ("namespace/name") a mark names."""
    return mark.split(" run ", 1)[0]


@dataclass(frozen=True)
class NodeEligibility:
    eligible: tuple[NodeView, ...]
    excluded: tuple[tuple[NodeView, Refusal], ...]


def node_refusal(
    node: NodeView, effective: EffectivePolicy, replicas_by_node: Mapping[str, int], operator_known: bool = True
) -> Refusal | None:
    """Why this node may not be drained now, or None. `replicas_by_node` counts the operator's Ready replicas
    on each node; `operator_known` False means where they run cannot be known (then no node is drained)."""
    if CONTROL_PLANE_LABEL in node.labels:
        return Refusal(
            "control-plane-node",
            f"node {node.name} is a control-plane node ({CONTROL_PLANE_LABEL}), which is never drained; "
            "select worker nodes in spec.nodeDrain.nodeSelector",
            "spec.nodeDrain.nodeSelector",
        )
    for source, selector in effective.protected_node_selectors:
        if selector.matches(node.labels):
            return Refusal(
                "protected-node",
                f"node {node.name} matches the protectedNodeSelector of {source}; select other nodes",
                "spec.nodeDrain.nodeSelector",
            )
    if node.unschedulable:
        return Refusal(
            "already-cordoned",
            f"node {node.name} is already cordoned"
            + (" by another chaosguard run" if node.mark else " by someone else")
            + "; chaosguard drains only nodes it cordons itself, so it never uncordons another's cordon",
            "spec.nodeDrain.nodeSelector",
        )
    if not node.ready:
        return Refusal("node-not-ready", f"node {node.name} is not Ready", "spec.nodeDrain.nodeSelector")
    if not operator_known:
        return Refusal(
            "operator-replicas-unknown",
            "the operator's own namespace is unknown, so whether a node carries the last operator replica cannot "
            "be judged; set CHAOSGUARD_NAMESPACE in the operator's environment (the shipped manifests set it)",
            "spec.action",
        )
    here = replicas_by_node.get(node.name, 0)
    elsewhere = sum(count for name, count in replicas_by_node.items() if name != node.name)
    if here and not elsewhere:
        return Refusal(
            "last-operator-replica",
            f"node {node.name} carries the operator's only Ready replica{'s' if here > 1 else ''}: a node with an "
            "operator replica is drained only while another replica runs on another node; run more replicas "
            "spread over nodes, or select other nodes",
            "spec.nodeDrain.nodeSelector",
        )
    return None


def node_cap_refusal(node: NodeView, nodes: Sequence[NodeView], effective: EffectivePolicy) -> Refusal | None:
    """Whether cordoning `node` now would put more of the cluster's nodes out of scheduling than
    maxNodePercentage allows (nodes cordoned by anyone count)."""
    if effective.max_node_percentage is None:
        return None
    cap, source = effective.max_node_percentage
    total = len(nodes)
    cordoned = sum(1 for other in nodes if other.unschedulable and other.name != node.name)
    limit = math.floor(total * cap / 100)
    if cordoned + 1 > limit:
        return Refusal(
            "max-node-percentage",
            f"cordoning node {node.name} would leave {cordoned + 1} of {total} nodes cordoned, above the {cap}% "
            f"({limit} nodes) allowed by {source}; wait for cordoned nodes to come back, or add nodes",
            "spec.nodeDrain",
        )
    return None


def classify_nodes(
    nodes: Iterable[NodeView],
    selector: LabelSelector,
    effective: EffectivePolicy,
    replicas_by_node: Mapping[str, int],
    operator_known: bool = True,
) -> NodeEligibility:
    """Splits the nodes the selector matches into eligible ones and exclusions with their rule."""
    eligible: list[NodeView] = []
    excluded: list[tuple[NodeView, Refusal]] = []
    for node in sorted(nodes, key=lambda node: node.name):
        if not selector.matches(node.labels):
            continue
        refusal = node_refusal(node, effective, replicas_by_node, operator_known)
        if refusal is None:
            eligible.append(node)
        else:
            excluded.append((node, refusal))
    return NodeEligibility(tuple(eligible), tuple(excluded))


def choose_nodes(eligible: Sequence[NodeView], count: int, rng: random.Random) -> list[NodeView]:
    """A reproducible random choice of `count` nodes (the seed decides)."""
    ordered = sorted(eligible, key=lambda node: node.name)
    return rng.sample(ordered, min(count, len(ordered)))


@dataclass(frozen=True)
class DrainPlan:
    evict: tuple[PodView, ...]
    stay: tuple[Exclusion, ...]


def drain_plan(
    pods: Iterable[PodView],
    target_namespaces: Sequence[str],
    selector: LabelSelector,
    effective: EffectivePolicy,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> DrainPlan:
    """Which of a node's pods the drain evicts: those spec.target picks (its namespaces and selector) that
    pod-kill could kill (every pod rule: namespace, protection, controller, Running and Ready). DaemonSet
    pods stay, as with `kubectl drain`: their controller would put them back on the node at once."""
    evict: list[PodView] = []
    stay: list[Exclusion] = []
    verdicts: dict[str, Refusal | None] = {}
    for pod in sorted(pods, key=lambda pod: (pod.namespace, pod.name)):
        if pod.namespace not in target_namespaces:
            stay.append(Exclusion(pod, Refusal("not-targeted", f"pod {pod.key} is not in spec.target.namespaces")))
            continue
        if not selector.matches(pod.labels):
            continue
        refusal = pod_refusal(pod, effective, namespace_labels, verdicts)
        if refusal is None and pod.workload is not None and pod.workload.startswith("DaemonSet/"):
            refusal = Refusal("daemonset-pod", f"pod {pod.key} belongs to {pod.workload}, which keeps it on its node")
        if refusal is None:
            evict.append(pod)
        else:
            stay.append(Exclusion(pod, refusal))
    return DrainPlan(tuple(evict), tuple(stay))
