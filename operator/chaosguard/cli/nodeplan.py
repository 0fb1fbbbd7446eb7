"""`chaosguard plan` for node-drain: which nodes a run would drain now, with the same rules the operator
judges them by (decisions.nodes), and which of each node's pods would be evicted or left on it."""

from __future__ import annotations

import random

from chaosguard.api.models import ChaosExperimentSpec
from chaosguard.clients import nodes as node_api
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.nodes import choose_nodes, classify_nodes, drain_plan, node_cap_refusal
from chaosguard.decisions.policy import EffectivePolicy
from chaosguard.decisions.selection import count_for_mode


def print_node_plan(
    cluster: Cluster,
    spec: ChaosExperimentSpec,
    effective: EffectivePolicy,
    labels: dict[str, dict[str, str]],
    namespaces: list[str],
    seed: str,
    operator_namespace: str | None,
) -> bool:
    """Prints the plan; returns whether the nodes chosen now would be refused (the cluster-wide cap)."""
    drain = spec.node_drain
    assert drain is not None  # the model requires the block with this action
    found = node_api.nodes(cluster)
    replicas = node_api.operator_replicas_by_node(cluster, operator_namespace) if operator_namespace else {}
    eligibility = classify_nodes(found, drain.node_selector, effective, replicas, bool(operator_namespace))
    count = count_for_mode(drain.mode, drain.value, len(eligibility.eligible))
    picked = choose_nodes(eligibility.eligible, count, random.Random(seed))
    print(f"  would drain {count} of {len(eligibility.eligible)} eligible nodes now, for example:")
    refused = False
    for node in picked:
        cap = node_cap_refusal(node, found, effective)
        print(f"    HIT  node {node.name}" + (f" ({cap})" if cap else ""))
        refused = refused or cap is not None
        plan = drain_plan(
            node_api.pods_on_node(cluster, node.name), namespaces, spec.target.selector, effective, labels
        )
        for pod in plan.evict:
            print(f"      EVICT {pod.key} ({pod.workload})")
        for exclusion in plan.stay:
            print(f"      STAYS {exclusion.pod.key}: {exclusion.refusal.rule}")
    for node in eligibility.eligible:
        if node not in picked:
            print(f"    ELIGIBLE node {node.name}")
    for node, refusal in eligibility.excluded:
        print(f"    LEFT-OUT node {node.name}: {refusal.rule}: {refusal.message}")
    return refused
