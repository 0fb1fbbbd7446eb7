"""The Node API calls of node-drain: fresh reads of the nodes and of one node's pods, the cordon that
marks the node as chaosguard's, and the uncordon that only ever lifts chaosguard's own cordon.

Each takes the `Cluster` first, so it runs on the operator's API lanes like the Cluster methods. Nodes
are read with `list` (the role grants nodes list, get is not needed) and written with `patch`, always
with the resourceVersion read just before: a cordon or uncordon that raced with someone else's change
is refused by the API (409) instead of overwriting it.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from chaosguard.clients.kube import Cluster, _OwnerResolver, _pod_view, api_message
from chaosguard.decisions.nodes import CORDON_MARK, NodeView
from chaosguard.decisions.selection import PodView, serving

# The label of the operator's own pods (deploy/base/deployment.yaml and the Helm chart).
OPERATOR_POD_SELECTOR = "app.kubernetes.io/name=chaosguard"


def _node_view(node: Any) -> NodeView:
    conditions = (node.status.conditions or []) if node.status else []
    return NodeView(
        name=node.metadata.name,
        uid=node.metadata.uid,
        labels=dict(node.metadata.labels or {}),
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        unschedulable=bool(node.spec and node.spec.unschedulable),
        mark=(node.metadata.annotations or {}).get(CORDON_MARK),
    )


def nodes(cluster: Cluster) -> list[NodeView]:
    """Every node, read fresh (a cordon cannot be judged against a cache's view of a moment ago)."""
    return [_node_view(node) for node in cluster.core.list_node().items]


def _read(cluster: Cluster, name: str) -> Any | None:
    found = cluster.core.list_node(field_selector=f"metadata.name={name}").items
    return found[0] if found else None


def pods_on_node(cluster: Cluster, node: str) -> list[PodView]:
    """The pods bound to a node, in every namespace, with their controlling workloads."""
    pods: list[Any] = cluster.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    owners: dict[str, _OwnerResolver] = {}
    views = []
    for pod in pods:
        namespace = pod.metadata.namespace
        resolver = owners.setdefault(namespace, _OwnerResolver(cluster.apps, namespace))
        views.append(_pod_view(pod, resolver))
    return views


def operator_replicas_by_node(cluster: Cluster, operator_namespace: str) -> dict[str, int]:
    """How many of the operator's Ready replicas run on each node."""
    pods: list[Any] = cluster.core.list_namespaced_pod(operator_namespace, label_selector=OPERATOR_POD_SELECTOR).items
    counts: dict[str, int] = {}
    for pod in pods:
        node = pod.spec.node_name if pod.spec else None
        if node and serving(_pod_view(pod, _OwnerResolver(cluster.apps, operator_namespace))):
            counts[node] = counts.get(node, 0) + 1
    return counts


def cordon(cluster: Cluster, name: str, uid: str, mark: str) -> tuple[bool, str]:
    """Cordons a node that nobody has cordoned, and marks it with `mark`. Returns (cordoned, what happened);
    a node already cordoned, by anyone, is left exactly as it is."""
    node = _read(cluster, name)
    if node is None or node.metadata.uid != uid:
        return False, f"node {name} is gone (or was replaced)"
    if node.spec and node.spec.unschedulable:
        return False, f"node {name} was cordoned by someone else meanwhile; left as it is"
    body = {
        "metadata": {"resourceVersion": node.metadata.resource_version, "annotations": {CORDON_MARK: mark}},
        "spec": {"unschedulable": True},
    }
    try:
        cluster.core.patch_node(name, body)
    except ApiException as error:
        if error.status == 409:
            return False, f"node {name} changed while it was being cordoned; left as it is"
        raise
    return True, f"node {name} cordoned (annotation {CORDON_MARK}={mark})"


def uncordon(cluster: Cluster, name: str, mark: str) -> tuple[bool, str]:
    """Uncordons a node only if it still carries exactly this run's mark, and removes the mark. Returns
    (whether the node is now free of this run's cordon, what happened). Never touches a node whose
    cordon is someone else's."""
    for _ in range(3):  # a 409 means the node changed under us: read it again and decide again
        node = _read(cluster, name)
        if node is None:
            return True, f"node {name} is gone"
        current = (node.metadata.annotations or {}).get(CORDON_MARK)
        if current != mark:
            return True, f"node {name} no longer carries this run's mark ({current or 'none'}); left as it is"
        body = {
            "metadata": {"resourceVersion": node.metadata.resource_version, "annotations": {CORDON_MARK: None}},
            "spec": {"unschedulable": None},
        }
        try:
            cluster.core.patch_node(name, body)
        except ApiException as error:
            if error.status == 409:
                continue
            return False, f"the API refused to uncordon node {name} ({error.status}): {api_message(error)}"
        return True, f"node {name} uncordoned"
    return False, f"node {name} kept changing; it was not uncordoned (the next step retries)"


def marked_nodes(cluster: Cluster) -> list[NodeView]:
    """Every node carrying chaosguard's cordon mark."""
    return [node for node in nodes(cluster) if node.mark]
