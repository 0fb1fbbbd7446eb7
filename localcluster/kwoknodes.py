"""Simulated nodes of one test or benchmark (kwok), and a workload that runs only on them: kwok nodes
tainted for their owner alone, so no other test's pods land there, and a Deployment that tolerates the
taint and selects them. For node-drain's tests (tests/integration/test_operator_nodedrain.py) and its
benchmark (bench/node_drain.py)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.decisions.nodes import CORDON_MARK
from localcluster.controlplane import KWOK_NODE_ANNOTATION
from localcluster.operator import label_namespace
from localcluster.wait import wait_for


class Nodes:
    """kwok nodes of one test (or benchmark), tainted for it alone."""

    def __init__(self, k8s: client.ApiClient) -> None:
        self.core = client.CoreV1Api(k8s)
        self.id = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    @property
    def taint(self) -> dict[str, str]:
        return {"key": "chaosguard.dev/drain-test", "value": self.id, "effect": "NoSchedule"}

    def add(self, suffix: str, labels: dict[str, str] | None = None) -> str:
        name = f"drain-{self.id}-{suffix}"
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok-drain",
                    "drain-test": self.id,
                    "kubernetes.io/hostname": name,
                    **(labels or {}),
                },
            },
            "spec": {"taints": [self.taint]},
            "status": {"capacity": resources, "allocatable": resources},
        }
        self.core.create_node(cast(client.V1Node, body))  # the API client takes a dict as well
        self.names.append(name)
        wait_for(lambda: self.ready(name), timeout=60, what=f"kwok to make node {name} Ready")
        return name

    def node(self, name: str) -> Any:
        return self.core.read_node(name)

    def ready(self, name: str) -> bool:
        conditions = self.node(name).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def cordoned(self, name: str) -> bool:
        return bool(self.node(name).spec.unschedulable)

    def mark(self, name: str) -> str | None:
        return (self.node(name).metadata.annotations or {}).get(CORDON_MARK)

    def pods_on(self, name: str, namespace: str) -> list[Any]:
        pods: list[Any] = self.core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={name}").items
        return [pod for pod in pods if pod.metadata.deletion_timestamp is None]

    def delete_all(self) -> None:
        for name in self.names:
            try:
                self.core.delete_node(name)
            except ApiException as error:
                if error.status != 404:
                    raise


def deploy_pinned(k8s: client.ApiClient, namespace: str, nodes: Nodes, replicas: int) -> None:
    """`replicas` checkout pods, which run only on these nodes (whichever are schedulable)."""
    label_namespace(k8s, namespace, {"chaosguard.dev/chaos": "allowed", "chaosguard.dev/test": namespace})
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "nodeSelector": {"drain-test": nodes.id},
                    "tolerations": [{**nodes.taint, "operator": "Equal"}],
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }
    client.AppsV1Api(k8s).create_namespaced_deployment(namespace, cast(client.V1Deployment, body))
    wait_for(lambda: ready_count(k8s, namespace) == replicas, timeout=90, what=f"{replicas} Ready checkout pods")


def ready_count(k8s: client.ApiClient, namespace: str) -> int:
    pods: list[Any] = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="app=checkout").items
    return sum(
        1
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    )
