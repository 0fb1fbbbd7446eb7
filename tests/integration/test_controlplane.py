"""The local control plane behaves like a real cluster: version, controllers, scheduling, auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localcluster.controlplane import ControlPlane
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace

pytestmark = pytest.mark.controlplane

EXPECTED_KUBE_VERSION = "v1.36.3"  # pinned in hack/build-control-plane.sh
REPLICAS = 5
TIMEOUT = 60.0


def _ready_pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    """Pods that are Running, Ready and not being deleted."""
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def _describe_pods(api: client.ApiClient, namespace: str, selector: str) -> str:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    states = [
        f"{p.metadata.name} phase={p.status.phase} node={p.spec.node_name} "
        f"deleting={p.metadata.deletion_timestamp is not None}"
        for p in pods
    ]
    return "pods: " + ("; ".join(states) or "none")


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def test_version_is_the_pinned_release(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == EXPECTED_KUBE_VERSION
    assert version["clientVersion"]["gitVersion"] == EXPECTED_KUBE_VERSION


def test_fake_nodes_are_ready(control_plane: ControlPlane, k8s: client.ApiClient) -> None:
    nodes = client.CoreV1Api(k8s).list_node(label_selector="type=kwok").items
    assert sorted(n.metadata.name for n in nodes) == sorted(control_plane.node_names)
    for node in nodes:
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
        assert node.status.allocatable["cpu"] == "32"
        assert not [t for t in node.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]


@pytest.fixture(scope="module")
def web(k8s: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A 5-replica Deployment `web` in its own namespace: (namespace, label selector)."""
    namespace = create_namespace(k8s, "deploy")
    client.AppsV1Api(k8s).create_namespaced_deployment(namespace, _deployment("web", REPLICAS))
    yield namespace, "app=web"
    client.CoreV1Api(k8s).delete_namespace(namespace)


def test_deployment_pods_become_running_and_ready_on_kwok_nodes(
    control_plane: ControlPlane, k8s: client.ApiClient, web: tuple[str, str]
) -> None:
    namespace, selector = web
    pods = wait_for(
        lambda: (ready := _ready_pods(k8s, namespace, selector)) and len(ready) == REPLICAS and ready,
        timeout=TIMEOUT,
        what=f"{REPLICAS} Running+Ready pods of Deployment web",
        describe=lambda: _describe_pods(k8s, namespace, selector),
    )
    assert {p.spec.node_name for p in pods} <= set(control_plane.node_names)
    # The ReplicaSet controller made them, and the scheduler spread them over the nodes.
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)
    assert len({p.spec.node_name for p in pods}) > 1
    wait_for(
        lambda: client.AppsV1Api(k8s).read_namespaced_deployment("web", namespace).status.ready_replicas == REPLICAS,
        timeout=TIMEOUT,
        what=f"Deployment web to report {REPLICAS} ready replicas",
    )


def test_deleted_pod_is_replaced(k8s: client.ApiClient, web: tuple[str, str]) -> None:
    namespace, selector = web
    core = client.CoreV1Api(k8s)
    before = wait_for(
        lambda: (ready := _ready_pods(k8s, namespace, selector)) and len(ready) == REPLICAS and ready,
        timeout=TIMEOUT,
        what=f"{REPLICAS} Ready pods before the deletion",
        describe=lambda: _describe_pods(k8s, namespace, selector),
    )
    victim = before[0]
    core.delete_namespaced_pod(victim.metadata.name, namespace)
    old_uids = {p.metadata.uid for p in before}

    # kwok's pod-delete stage finishes the graceful deletion as a kubelet would.
    wait_for(
        lambda: (
            victim.metadata.uid
            not in {p.metadata.uid for p in core.list_namespaced_pod(namespace, label_selector=selector).items}
        ),
        timeout=TIMEOUT,
        what=f"deleted pod {victim.metadata.name} to disappear",
        describe=lambda: _describe_pods(k8s, namespace, selector),
    )
    after = wait_for(
        lambda: (ready := _ready_pods(k8s, namespace, selector)) and len(ready) == REPLICAS and ready,
        timeout=TIMEOUT,
        what=f"a replacement pod and {REPLICAS} Ready pods again",
        describe=lambda: _describe_pods(k8s, namespace, selector),
    )
    new_uids = {p.metadata.uid for p in after}
    assert victim.metadata.uid not in new_uids
    assert len(new_uids - old_uids) == 1, "exactly one new pod replaces the deleted one"


def _forbidden(result: Any) -> bool:
    return result.returncode != 0 and "Forbidden" in result.stderr


def test_rbac_denies_alice_until_a_rolebinding_allows_her(control_plane: ControlPlane, namespace: str) -> None:
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", user="alice").stdout)
    assert whoami["status"]["userInfo"]["username"] == "alice"

    denied = control_plane.kubectl("get", "pods", "-n", namespace, user="alice", check=False)
    assert _forbidden(denied), denied.stderr
    assert 'User "alice" cannot list resource "pods"' in denied.stderr

    control_plane.kubectl("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", namespace)
    control_plane.kubectl(
        "create", "rolebinding", "alice-reads-pods", "--role=pod-reader", "--user=alice", "-n", namespace
    )
    # The RBAC authorizer sees new bindings through an informer: allow it a moment, boundedly.
    allowed = wait_for(
        lambda: (
            (r := control_plane.kubectl("get", "pods", "-n", namespace, user="alice", check=False)).returncode == 0
            and r
        ),
        timeout=30,
        what="alice to be allowed to list pods after the RoleBinding",
    )
    assert "No resources found" in allowed.stderr

    # Only alice: mallory has no binding, and alice may still not delete.
    assert _forbidden(control_plane.kubectl("get", "pods", "-n", namespace, user="mallory", check=False))
    can_delete = control_plane.kubectl("auth", "can-i", "delete", "pods", "-n", namespace, user="alice", check=False)
    assert can_delete.stdout.strip() == "no"


def test_static_users_carry_their_groups(control_plane: ControlPlane) -> None:
    for user, groups in control_plane.users.items():
        info = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", user=user).stdout)
        user_info = info["status"]["userInfo"]
        assert user_info["username"] == user
        assert set(groups) | {"system:authenticated"} == set(user_info["groups"])


def test_service_account_token_authenticates(control_plane: ControlPlane, namespace: str) -> None:
    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "ci-bot")
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:ci-bot"
    assert f"system:serviceaccounts:{namespace}" in whoami["status"]["userInfo"]["groups"]

    denied = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert _forbidden(denied), denied.stderr
    control_plane.kubectl(
        "create", "rolebinding", "ci-bot-view", "--clusterrole=view", f"--serviceaccount={namespace}:ci-bot",
        "-n", namespace,
    )  # fmt: skip

    # The same token through the Python client, as the operator would use it.
    with control_plane.api_client(kubeconfig=kubeconfig) as api:
        core = client.CoreV1Api(api)

        def can_list() -> bool:
            try:
                core.list_namespaced_config_map(namespace)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        wait_for(can_list, timeout=30, what="ci-bot to list configmaps after the RoleBinding")
        # kube-root-ca.crt is published into every namespace by kube-controller-manager.
        wait_for(
            lambda: "kube-root-ca.crt" in {c.metadata.name for c in core.list_namespaced_config_map(namespace).items},
            timeout=TIMEOUT,
            what="kube-root-ca.crt ConfigMap in the namespace",
        )


def test_pod_security_admission_enforces_namespace_labels(k8s: client.ApiClient) -> None:
    namespace = create_namespace(k8s, "restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "privileged"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.k8s.io/pause:3.10",
                        "securityContext": {"privileged": True},
                    }
                ]
            },
        }
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(k8s).create_namespaced_pod(namespace, pod)
        assert refused.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body)["message"]
    finally:
        client.CoreV1Api(k8s).delete_namespace(namespace)


def test_controllers_manage_namespaces_and_garbage(k8s: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    namespace = create_namespace(k8s, "lifecycle")
    # serviceaccount controller
    wait_for(
        lambda: "default" in {sa.metadata.name for sa in core.list_namespaced_service_account(namespace).items},
        timeout=TIMEOUT,
        what=f"ServiceAccount {namespace}/default",
    )
    apps.create_namespaced_deployment(namespace, _deployment("gc", 2))
    wait_for(
        lambda: len(_ready_pods(k8s, namespace, "app=gc")) == 2,
        timeout=TIMEOUT,
        what="2 Ready pods of Deployment gc",
        describe=lambda: _describe_pods(k8s, namespace, "app=gc"),
    )
    # garbage collector: deleting the Deployment takes its ReplicaSet and pods with it
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace).items and not core.list_namespaced_pod(namespace).items,
        timeout=TIMEOUT,
        what="the garbage collector to remove the ReplicaSet and pods of a deleted Deployment",
        describe=lambda: _describe_pods(k8s, namespace, "app=gc"),
    )
    # namespace controller
    core.delete_namespace(namespace)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(namespace_gone, timeout=TIMEOUT, what=f"namespace {namespace} to be deleted")
