"""The watch caches against the real kube-apiserver: they sync, follow every change, lose nothing
across a broken watch, and re-list (replacing the store) when their resourceVersion has expired.

Each test gets its own `ClusterCache` on its own `ApiClient`. Some list functions are wrapped in a
`Gate`, which can hold the informer's next watch call (the connection stays down while the test
changes the cluster) and make it resume from a resourceVersion the server no longer has. What
the cache says is always checked against a fresh read of the same thing (`kube.Cluster`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.clients.informers import CacheNotReady, ClusterCache, Informer
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.selection import PodView
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    GROUP,
    VERSION,
    create_deployment,
    create_policy,
    delete_policy,
    label_namespace,
    wait_for_ready_pods,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace

pytestmark = pytest.mark.controlplane


def without_sightings(pods: list[PodView]) -> list[PodView]:
    """The cache's pods as a fresh list shows them: only a watch knows when it first saw one Ready."""
    return [dataclasses.replace(pod, ready_seen_at=None) for pod in pods]


CONVERGE = 30.0  # seconds for the cache to show a change the API server already has


class Gate:
    """Wraps a list function: while closed, watch calls wait (the informer stays disconnected);
    `resume_from` replaces the resourceVersion of the next watch call."""

    def __init__(self, list_call: Callable[..., Any]) -> None:
        self._list_call = list_call
        self._open = threading.Event()
        self._open.set()
        self.holding = threading.Event()  # a watch call is waiting at the closed gate
        self.resume_from: str | None = None
        self.watch_versions: list[str | None] = []

    def close(self) -> None:
        self.holding.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            if not self._open.is_set():
                self.holding.set()
            self._open.wait(120)
            if self.resume_from is not None:
                kwargs["resource_version"], self.resume_from = self.resume_from, None
            self.watch_versions.append(kwargs.get("resource_version"))
        return self._list_call(**kwargs)


@pytest.fixture
def fresh(k8s: client.ApiClient) -> Cluster:
    """The fresh reads the cache must agree with."""
    return Cluster(client.CoreV1Api(k8s), client.AppsV1Api(k8s), client.CustomObjectsApi(k8s))


@pytest.fixture
def gates(chaosguard_crds: ControlPlane) -> Iterator[dict[str, Gate]]:
    api = chaosguard_crds.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    yield {
        "namespaces": Gate(core.list_namespace),
        "pods": Gate(core.list_pod_for_all_namespaces),
        "chaospolicies": Gate(functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, "chaospolicies")),
    }
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def cache(chaosguard_crds: ControlPlane, gates: dict[str, Gate]) -> Iterator[ClusterCache]:
    api = chaosguard_crds.api_client()
    cache = ClusterCache(api, list_functions=gates)
    cache.start()
    try:
        asyncio.run(cache.wait_synced(30))
        yield cache
    finally:
        for gate in gates.values():
            gate.open()
        cache.stop()
        api.close()  # type: ignore[no-untyped-call]


def disconnect(informer: Informer[Any], gate: Gate) -> None:
    """Breaks the informer's watch and holds it down until the gate opens."""
    gate.close()
    informer.interrupt()
    wait_for(gate.holding.is_set, timeout=10, what=f"the {informer.kind} watch to be held down")


def pod_names(pods: list[Any]) -> list[str]:
    return sorted(pod.name for pod in pods)


def create_bare_pod(api: client.ApiClient, namespace: str, name: str) -> None:
    body: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bare"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    client.CoreV1Api(api).create_namespaced_pod(namespace, body)


def delete_pod(api: client.ApiClient, namespace: str, name: str) -> None:
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def policy_names(policies: list[Any], prefix: str) -> set[str]:
    return {policy.metadata.name for policy in policies if policy.metadata.name.startswith(prefix)}


# --------------------------------------------------------------------------- it follows the cluster


def test_the_cache_follows_namespaces_and_their_labels(
    cache: ClusterCache, k8s: client.ApiClient, fresh: Cluster
) -> None:
    name = create_namespace(k8s, "informer-ns", labels={"team": "shop"})

    def labels_agree(wanted: dict[str, str]) -> bool:
        labels = cache.namespace_labels().get(name)
        return labels == fresh.namespace_labels().get(name) and labels is not None and wanted.items() <= labels.items()

    wait_for(lambda: labels_agree({"team": "shop"}), timeout=CONVERGE, what="the new namespace")
    label_namespace(k8s, name, {"chaosguard.dev/chaos": "allowed", "team": None})
    wait_for(
        lambda: labels_agree({"chaosguard.dev/chaos": "allowed"}) and "team" not in cache.namespace_labels()[name],
        timeout=CONVERGE,
        what="the namespace's new labels",
        describe=lambda: str(cache.namespace_labels().get(name)),
    )
    client.CoreV1Api(k8s).delete_namespace(name)
    wait_for(lambda: name not in cache.namespace_labels(), timeout=60, what="the deleted namespace to go")


def test_deployment_pods_resolve_to_their_deployment(
    cache: ClusterCache, k8s: client.ApiClient, fresh: Cluster, namespace: str
) -> None:
    create_deployment(k8s, namespace, "web", 3)
    wait_for(
        lambda: without_sightings(cache.pods(namespace)) == fresh.pods(namespace) and len(cache.pods(namespace)) == 3,
        timeout=CONVERGE,
        what="the cache's pods to equal a fresh list",
        describe=lambda: f"cache {cache.pods(namespace)}\nfresh {fresh.pods(namespace)}",
    )
    pods = cache.pods(namespace)
    assert {pod.workload for pod in pods} == {"Deployment/web"}
    assert all(pod.ready and pod.phase == "Running" and pod.ready_since is not None for pod in pods)
    assert (
        cache.desired_replicas(namespace, "Deployment/web") == fresh.desired_replicas(namespace, "Deployment/web") == 3
    )
    selector = cache.workload_label_selector(namespace, "Deployment/web")
    assert selector == "app=web"
    listed = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector=selector).items
    assert sorted(str(pod.metadata and pod.metadata.name) for pod in listed) == pod_names(pods)

    client.AppsV1Api(k8s).patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 5}})
    wait_for(lambda: cache.desired_replicas(namespace, "Deployment/web") == 5, timeout=CONVERGE, what="5 replicas")
    wait_for_ready_pods(k8s, namespace, "web", 5)
    wait_for(
        lambda: without_sightings(cache.pods(namespace)) == fresh.pods(namespace),
        timeout=CONVERGE,
        what="the scaled-up pods in the cache",
        describe=lambda: f"cache {pod_names(cache.pods(namespace))}, fresh {pod_names(fresh.pods(namespace))}",
    )


def test_policies_approvals_and_experiments(
    cache: ClusterCache, k8s: client.ApiClient, fresh: Cluster, namespace: str, isolated_policies: list[str]
) -> None:
    policy = f"informer-{uuid.uuid4().hex[:6]}"
    isolated_policies.append(policy)
    create_policy(k8s, policy, {"maxPercentage": 20, "namespaceSelector": {"matchLabels": {"x": namespace}}})
    wait_for(lambda: policy in policy_names(cache.policies(), policy), timeout=CONVERGE, what="the new policy")
    assert next(p for p in cache.policies() if p.metadata.name == policy).spec.max_percentage == 20
    delete_policy(k8s, policy)
    wait_for(lambda: not policy_names(cache.policies(), policy), timeout=CONVERGE, what="the deleted policy to go")

    custom = client.CustomObjectsApi(k8s)
    approval = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosApproval",
        "metadata": {"name": "ok", "namespace": namespace},
        "spec": {"experiment": "kill", "specHash": "sha256:" + "0" * 64},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "chaosapprovals", approval)

    def same_approvals() -> bool:
        def plain(items: list[dict[str, Any]]) -> list[tuple[str, Any]]:
            return [(item["metadata"]["name"], item["spec"]) for item in items]

        return plain(cache.approvals(namespace)) == plain(fresh.approvals(namespace)) != []

    wait_for(same_approvals, timeout=CONVERGE, what="the approval in the cache")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "chaosapprovals", "ok")
    wait_for(lambda: cache.approvals(namespace) == [], timeout=CONVERGE, what="the deleted approval to go")

    experiment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosExperiment",
        "metadata": {"name": "kill", "namespace": namespace},
        "spec": {
            "action": "pod-kill",
            "target": {"selector": {"matchLabels": {"app": "nothing-here"}}, "mode": "one"},
            "duration": "1m",
            "dryRun": True,
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments", experiment)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "chaosexperiments", "kill", {"status": {"phase": "Running"}}
    )
    key = f"{namespace}/kill"

    def fresh_phase() -> str | None:
        item = fresh.experiment(namespace, "kill") or {}
        return (item.get("status") or {}).get("phase")

    # An operator running in this test session may move the phase on; the cache must follow either way.
    wait_for(
        lambda: (
            (key in cache.running_experiments()) == (fresh_phase() == "Running")
            and cache.informers["chaosexperiments"].store.get(namespace, "kill") is not None
        ),
        timeout=CONVERGE,
        what="the experiment's phase in the cache",
    )


# --------------------------------------------------------------------------- reconnects and expiry


class Outage:
    """One pod and one policy the cache has seen, then changes made while its watches are down:
    the pod and the policy deleted, a new pod and a new policy created."""

    def __init__(self, cache: ClusterCache, k8s: client.ApiClient, namespace: str, policies: list[str]) -> None:
        self.cache, self.k8s, self.namespace = cache, k8s, namespace
        suffix = uuid.uuid4().hex[:6]
        self.old_policy, self.new_policy = f"informer-old-{suffix}", f"informer-new-{suffix}"
        policies.extend([self.old_policy, self.new_policy])
        create_bare_pod(k8s, namespace, "doomed")
        create_policy(k8s, self.old_policy, {"maxPercentage": 10})
        wait_for(
            lambda: pod_names(cache.pods(namespace)) == ["doomed"] and self.cache_has_policies(self.old_policy),
            timeout=CONVERGE,
            what="the pod and the policy in the cache",
        )

    def cache_has_policies(self, *wanted: str) -> bool:
        return policy_names(self.cache.policies(), "informer-") & {self.old_policy, self.new_policy} == set(wanted)

    def change_the_cluster(self, fresh: Cluster) -> None:
        delete_pod(self.k8s, self.namespace, "doomed")
        create_bare_pod(self.k8s, self.namespace, "born-offline")
        delete_policy(self.k8s, self.old_policy)
        create_policy(self.k8s, self.new_policy, {"maxPercentage": 10})
        wait_for(
            lambda: pod_names(fresh.pods(self.namespace)) == ["born-offline"],
            timeout=CONVERGE,
            what="the API server to have only the new pod",
        )
        assert pod_names(self.cache.pods(self.namespace)) == ["doomed"]  # the cache really was cut off
        assert self.cache_has_policies(self.old_policy)

    def caught_up(self, fresh: Cluster) -> bool:
        pods_match = without_sightings(self.cache.pods(self.namespace)) == fresh.pods(self.namespace)
        return pods_match and self.cache_has_policies(self.new_policy)


@pytest.fixture
def outage(cache: ClusterCache, k8s: client.ApiClient, namespace: str, isolated_policies: list[str]) -> Outage:
    return Outage(cache, k8s, namespace, isolated_policies)


def test_a_broken_watch_loses_nothing(
    cache: ClusterCache, gates: dict[str, Gate], k8s: client.ApiClient, fresh: Cluster, outage: Outage
) -> None:
    namespace = outage.namespace
    watched = {kind: cache.informers[kind] for kind in gates}
    for kind, informer in watched.items():
        disconnect(informer, gates[kind])
    positions = {kind: informer.resource_version for kind, informer in watched.items()}
    resumed_at = {kind: len(gate.watch_versions) for kind, gate in gates.items()}

    outage.change_the_cluster(fresh)
    label_namespace(k8s, namespace, {"changed": "offline"})
    assert not any(informer.health().watching for informer in watched.values())
    wait_for(
        lambda: not any(informer.connected for informer in watched.values()),
        timeout=CONVERGE,
        what="the informers to count as disconnected once the grace has passed",
    )
    assert not cache.healthy
    with pytest.raises(CacheNotReady, match="pods disconnected"):
        cache.require_fresh("pods")

    for gate in gates.values():
        gate.open()
    wait_for(
        lambda: outage.caught_up(fresh) and cache.namespace_labels()[namespace].get("changed") == "offline",
        timeout=CONVERGE,
        what="the cache to catch up",
        describe=lambda: f"pods {pod_names(cache.pods(namespace))}, labels {cache.namespace_labels().get(namespace)}",
    )
    for kind, informer in watched.items():
        assert informer.relists == 0, f"{kind} re-listed; it should have resumed from its resourceVersion"
        assert gates[kind].watch_versions[resumed_at[kind]] == positions[kind], f"{kind} did not resume where it was"
    wait_for(lambda: cache.healthy, timeout=CONVERGE, what="the cache to be healthy again")


def test_an_expired_resource_version_relists_and_replaces_the_store(
    cache: ClusterCache, gates: dict[str, Gate], fresh: Cluster, outage: Outage
) -> None:
    """The policies' watch resumes from resourceVersion 1, older than anything the API server keeps for a
    custom resource (its watch cache starts when the CRD is installed), so the server answers 410; the
    policy deleted meanwhile can only disappear through the re-list replacing the store. (Built-in
    kinds are no use here: on a young cluster their watch caches still hold every event since 1.)"""
    policies = cache.informers["chaospolicies"]
    relists_before = policies.relists
    for kind in ("pods", "chaospolicies"):
        disconnect(cache.informers[kind], gates[kind])

    outage.change_the_cluster(fresh)
    gates["chaospolicies"].resume_from = "1"
    for kind in ("pods", "chaospolicies"):
        gates[kind].open()

    wait_for(
        lambda: policies.relists > relists_before,
        timeout=CONVERGE,
        what="the policies to be re-listed",
        describe=lambda: str(policies.health()),
    )
    assert "1" in gates["chaospolicies"].watch_versions
    wait_for(lambda: outage.caught_up(fresh), timeout=CONVERGE, what="the re-listed store to match the API server")
    wait_for(lambda: cache.healthy, timeout=CONVERGE, what="the cache to be healthy again")
