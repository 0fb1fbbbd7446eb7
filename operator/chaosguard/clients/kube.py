"""All Kubernetes API I/O of the operator and the CLI, through the official `kubernetes` client.

Everything here is synchronous and small; the operator calls it from asyncio with
`asyncio.to_thread`. API objects are turned into the plain views of `selection` before they reach
any decision, so policy and selection never see a V1Pod. Kills use UID preconditions so that a
pod replaced under the same name (StatefulSets) is never hit by mistake, and never grace 0.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import GROUP, VERSION, ChaosPolicy, KillResult
from chaosguard.decisions.policy import GuardedAddress
from chaosguard.decisions.selection import PodView

_REPLICA_KINDS = {
    "Deployment": ("apps", "read_namespaced_deployment"),
    "StatefulSet": ("apps", "read_namespaced_stateful_set"),
    "ReplicaSet": ("apps", "read_namespaced_replica_set"),
}


class KubeError(RuntimeError):
    """An API call failed in a way the caller should surface (with the API's own message)."""


def load_config(kubeconfig: str | None = None) -> None:
    """An explicit kubeconfig wins; else the in-cluster config; else $KUBECONFIG or ~/.kube/config."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)


@dataclass
class Cluster:
    """A thin wrapper over the API groups chaosguard uses."""

    core: client.CoreV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, connections: int | None = None) -> Cluster:
        """A client with a connection pool of its own (`connections` wide, else the client's default)."""
        load_config(kubeconfig)
        configuration = client.Configuration.get_default_copy()
        if connections is not None:
            configuration.connection_pool_maxsize = connections
        api = client.ApiClient(configuration)
        return cls(client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api))

    def live_pods(self, namespace: str, label_selector: str | None) -> list[PodView]:
        """A fresh read of the pods a label selector picks (all of the namespace's without one): the
        population a kill is judged against, right before it, never from a cache."""
        pods: list[Any] = self.core.list_namespaced_pod(namespace, label_selector=label_selector or None).items
        owners = _OwnerResolver(self.apps, namespace)
        return [_pod_view(pod, owners) for pod in pods]

    def namespace_labels_of(self, namespace: str) -> dict[str, str] | None:
        """One namespace's labels, fresh (None when it does not exist)."""
        try:
            obj: Any = self.core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(obj.metadata.labels or {})

    # ------------------------------------------------------------------ reading

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        namespaces: list[Any] = self.core.list_namespace().items
        return {ns.metadata.name: dict(ns.metadata.labels or {}) for ns in namespaces}

    def policies(self) -> list[ChaosPolicy]:
        raw = cast(dict[str, Any], self.custom.list_cluster_custom_object(GROUP, VERSION, "chaospolicies"))
        return [ChaosPolicy.model_validate(item) for item in raw.get("items", [])]

    def policies_checked(self) -> tuple[list[ChaosPolicy], dict[str, str]]:
        """(the valid policies, the invalid ones by name with the model's message): a policy the API
        server accepted but the model refuses is reported, not raised, so the operator can refuse in
        its name instead of failing every step."""
        raw = cast(dict[str, Any], self.custom.list_cluster_custom_object(GROUP, VERSION, "chaospolicies"))
        valid: list[ChaosPolicy] = []
        invalid: dict[str, str] = {}
        for item in raw.get("items", []):
            try:
                valid.append(ChaosPolicy.model_validate(item))
            except ValidationError as error:
                name = str((item.get("metadata") or {}).get("name", "?"))
                invalid[name] = "; ".join(describe_validation_error(error))
        return valid, invalid

    def experiments(self) -> list[dict[str, Any]]:
        raw = cast(dict[str, Any], self.custom.list_cluster_custom_object(GROUP, VERSION, "chaosexperiments"))
        items: list[dict[str, Any]] = raw.get("items", [])
        return items

    def pods(self, namespace: str) -> list[PodView]:
        """Every pod of the namespace (the cap needs whole workloads, not only selected pods)."""
        return self.live_pods(namespace, None)

    def desired_replicas(self, namespace: str, workload: str) -> int | None:
        kind, _, name = workload.partition("/")
        if kind not in _REPLICA_KINDS:
            return None
        try:
            obj = getattr(self.apps, _REPLICA_KINDS[kind][1])(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        replicas = obj.spec.replicas
        return 1 if replicas is None else int(replicas)

    def workload_object(self, namespace: str, workload: str) -> dict[str, Any] | None:
        """A minimal body of the workload, for posting Events on it."""
        kind, _, name = workload.partition("/")
        if kind not in _REPLICA_KINDS:
            return None
        try:
            obj = getattr(self.apps, _REPLICA_KINDS[kind][1])(name, namespace)
        except ApiException:
            return None
        return {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "uid": obj.metadata.uid},
        }

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        secret: Any = self.core.read_namespaced_secret(name, namespace)
        data = dict(secret.data or {})
        if key not in data:
            raise KubeError(f"Secret {namespace}/{name} has no key {key!r} (keys: {', '.join(sorted(data))})")
        return base64.b64decode(data[key]).decode()

    # ------------------------------------------------------------------ writing

    def kill(
        self, pod: PodView, *, grace_period_seconds: int | None, use_eviction: bool
    ) -> tuple[KillResult, str, str]:
        """Evicts (default) or deletes one pod, never forced. Returns (result, method, message)."""
        if grace_period_seconds is not None and grace_period_seconds < 1:
            raise ValueError("chaosguard never force-deletes: grace period must be at least 1 second")
        options = client.V1DeleteOptions(
            grace_period_seconds=grace_period_seconds,
            preconditions=client.V1Preconditions(uid=pod.uid),
        )
        method = "eviction" if use_eviction else "delete"
        try:
            if use_eviction:
                eviction = client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace),
                    delete_options=options,
                )
                self.core.create_namespaced_pod_eviction(pod.name, pod.namespace, eviction)
            else:
                self.core.delete_namespaced_pod(pod.name, pod.namespace, body=options)
        except ApiException as error:
            message = api_message(error)
            if error.status == 429:
                return (
                    KillResult.SKIPPED_BUDGET,
                    method,
                    f"a PodDisruptionBudget refused the eviction: {message}",
                )
            if error.status in (404, 409):
                return KillResult.GONE, method, f"the pod was already gone or replaced: {message}"
            return KillResult.FAILED, method, f"the API refused the {method} ({error.status}): {message}"
        return KillResult.KILLED, method, f"{method} accepted"

    def add_ephemeral_container(self, namespace: str, pod: str, uid: str, container: dict[str, Any]) -> None:
        """Adds one ephemeral container (the latency injector, or a clean-up) to a pod, by UID."""
        body = {"metadata": {"uid": uid}, "spec": {"ephemeralContainers": [container]}}
        self.core.patch_namespaced_pod_ephemeralcontainers(pod, namespace, body)

    def ephemeral_containers(self, namespace: str, pod: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The pod's UID and its ephemeral containers as plain dicts (empty when the pod is gone)."""
        try:
            obj: Any = self.core.read_namespaced_pod(pod, namespace)
        except ApiException as error:
            if error.status == 404:
                return None, []
            raise
        containers = self.core.api_client.sanitize_for_serialization(obj.spec.ephemeral_containers or [])
        return obj.metadata.uid, list(containers)

    def pods_with_ephemeral_containers(
        self, prefix: str | tuple[str, ...]
    ) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
        """(namespace, name, uid, ephemeral containers) of every pod with one whose name starts with prefix
        (or one of several)."""
        found = []
        pods: list[Any] = self.core.list_pod_for_all_namespaces().items
        for pod in pods:
            containers = pod.spec.ephemeral_containers or []
            if any(container.name.startswith(prefix) for container in containers):
                plain = self.core.api_client.sanitize_for_serialization(containers)
                found.append((pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, list(plain)))
        return found

    def guarded_addresses(self, operator_namespace: str | None) -> list[GuardedAddress]:
        """Addresses a network fault must not name as a destination (policy.destination_refusals):
        every node's (and the gateway of each of its pod CIDRs), the API server's (the `kubernetes`
        Service and its endpoints, ready or not), and the pods' and Services' of the operator's own
        namespace (when it is known; the engine refuses network faults when it is not). Raises when
        any cannot be read: a partition is never applied on a partial list."""
        plain = self.core.api_client.sanitize_for_serialization
        guarded: list[GuardedAddress] = []
        for node in plain(self.core.list_node())["items"]:
            name = node["metadata"]["name"]
            for address in node.get("status", {}).get("addresses") or []:
                if address.get("type") in ("InternalIP", "ExternalIP"):
                    guarded.append(GuardedAddress(address["address"], f"node {name}"))
            # On bridge CNIs (flannel's cni0) and Cilium, kubelet probes come from the node's pod-CIDR
            # gateway, the first host of each of its pod CIDRs.
            spec = node.get("spec") or {}
            for pod_cidr in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
                gateway = ip_network(pod_cidr, strict=False).network_address + 1
                guarded.append(GuardedAddress(str(gateway), f"node {name} (gateway of its pod CIDR {pod_cidr})"))
        api_server = "the API server ({} default/kubernetes)"
        service = plain(self.core.read_namespaced_service("kubernetes", "default"))["spec"]
        for ip in service.get("clusterIPs") or [service.get("clusterIP")]:
            guarded.append(GuardedAddress(ip, api_server.format("Service")))
        endpoints = plain(self.core.read_namespaced_endpoints("kubernetes", "default"))
        for subset in endpoints.get("subsets") or []:
            for address in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
                guarded.append(GuardedAddress(address["ip"], api_server.format("Endpoints")))
        if operator_namespace:
            own = "(chaosguard's own namespace)"
            for pod in plain(self.core.list_namespaced_pod(operator_namespace))["items"]:
                for pod_ip in pod.get("status", {}).get("podIPs") or []:
                    owner = f"pod {operator_namespace}/{pod['metadata']['name']} {own}"
                    guarded.append(GuardedAddress(pod_ip["ip"], owner, operator=True))
            for item in plain(self.core.list_namespaced_service(operator_namespace))["items"]:
                for ip in item.get("spec", {}).get("clusterIPs") or []:
                    if ip != "None":
                        owner = f"Service {operator_namespace}/{item['metadata']['name']} {own}"
                        guarded.append(GuardedAddress(ip, owner, operator=True))
        return guarded

    def exec_in_container(self, namespace: str, pod: str, container: str, command: list[str], timeout: float) -> str:
        """Runs a command in a running container (through the kubelet); raises on any failure."""
        from kubernetes.stream import stream

        output: Any = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            container=container,
            command=command,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _request_timeout=timeout,
        )
        return str(output)

    def remove_experiment_annotation(self, namespace: str, name: str, key: str) -> None:
        patch = {"metadata": {"annotations": {key: None}}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments", name, patch)

    def patch_experiment_status_ops(self, namespace: str, name: str, operations: list[dict[str, Any]]) -> None:
        """A JSON patch (RFC 6902) of the experiment: all its operations apply, or none (a failed
        `test` operation refuses the whole patch with 422)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "chaosexperiments", name, operations, _content_type="application/json-patch+json"
        )

    def patch_experiment_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "chaosexperiments", name, {"status": status}
        )

    # ------------------------------------------------------------------ approvals and identity (issue 6)

    def experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments", name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    def approvals(self, namespace: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "chaosapprovals")
        raw = cast(dict[str, Any], listed)
        items: list[dict[str, Any]] = raw.get("items", [])
        return items

    def create_approval(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "chaosapprovals", body)
        return cast(dict[str, Any], created)

    def may(
        self,
        user: str,
        groups: Sequence[str],
        namespace: str,
        verb: str,
        resource: str,
        subresource: str = "",
        *,
        uid: str = "",
        extra: Mapping[str, Sequence[str]] | None = None,
        name: str = "",
    ) -> tuple[bool, str]:
        """A SubjectAccessReview: may this user (with these groups) do this (to the object `name`, if
        given)? Returns (allowed, the API's reason)."""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=list(groups),
                uid=uid or None,
                extra={key: list(values) for key, values in (extra or {}).items()} or None,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    verb=verb,
                    group="",
                    resource=resource,
                    subresource=subresource or None,
                    name=name or None,
                ),
            )
        )
        result: Any = client.AuthorizationV1Api(self.core.api_client).create_subject_access_review(review)
        return bool(result.status.allowed), str(result.status.reason or "")

    def secret_data(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """A Secret's decoded data and resourceVersion, or None when there is no such Secret."""
        try:
            secret: Any = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return data, str(secret.metadata.resource_version)

    def create_secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            type="Opaque",
            data={key: base64.b64encode(value).decode() for key, value in data.items()},
        )
        self.core.create_namespaced_secret(namespace, body)

    def add_secret_data(self, namespace: str, name: str, data: Mapping[str, bytes], resource_version: str) -> None:
        """Adds keys to an existing Secret, only if nobody changed it since `resource_version` (else 409)."""
        patch = {
            "metadata": {"resourceVersion": resource_version},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        self.core.patch_namespaced_secret(name, namespace, patch)


class _OwnerResolver:
    """Maps a pod's controller to its top workload (ReplicaSet -> Deployment), caching lookups."""

    def __init__(self, apps: client.AppsV1Api, namespace: str) -> None:
        self._apps = apps
        self._namespace = namespace
        self._replica_set_owner: dict[str, str] = {}

    def workload_of(self, pod: Any) -> str | None:
        controller = next((ref for ref in pod.metadata.owner_references or [] if ref.controller), None)
        if controller is None:
            return None
        if controller.kind != "ReplicaSet":
            return f"{controller.kind}/{controller.name}"
        if controller.name not in self._replica_set_owner:
            self._replica_set_owner[controller.name] = self._replica_set_parent(controller.name)
        return self._replica_set_owner[controller.name]

    def _replica_set_parent(self, name: str) -> str:
        try:
            replica_set: Any = self._apps.read_namespaced_replica_set(name, self._namespace)
        except ApiException:
            return f"ReplicaSet/{name}"
        parent = next((ref for ref in replica_set.metadata.owner_references or [] if ref.controller), None)
        if parent is not None and parent.kind == "Deployment":
            return f"Deployment/{parent.name}"
        return f"ReplicaSet/{name}"


def _pod_view(pod: Any, owners: _OwnerResolver) -> PodView:
    conditions = pod.status.conditions or [] if pod.status else []
    ready_condition = next((c for c in conditions if c.type == "Ready" and c.status == "True"), None)
    return PodView(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        uid=pod.metadata.uid,
        labels=dict(pod.metadata.labels or {}),
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready=ready_condition is not None,
        terminating=pod.metadata.deletion_timestamp is not None,
        workload=owners.workload_of(pod),
        ready_since=ready_condition.last_transition_time if ready_condition is not None else None,
    )
