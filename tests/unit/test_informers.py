"""The watch caches without a cluster: projections, store semantics, and the reflector's state machine
(resume from the last resourceVersion, re-list and replace on 410, bookmarks) driven by scripted
list and watch responses in place of the API server."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY
from urllib3.exceptions import ProtocolError

from chaosguard.api.models import ChaosPolicy
from chaosguard.clients import informers
from chaosguard.clients.informers import (
    CacheNotReady,
    ClusterCache,
    Informer,
    ResourceVersionExpired,
    Store,
    WatchError,
    project_approval,
    project_experiment,
    project_namespace_labels,
    project_pod,
    project_policy,
    project_workload,
    selector_string,
)
from localcluster.wait import wait_for

# --------------------------------------------------------------------------- raw objects


def meta(name: str, namespace: str | None = None, rv: str = "1", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": rv, **extra}
    if namespace is not None:
        metadata["namespace"] = namespace
    return metadata


def owner(kind: str, name: str, controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}", "controller": controller}


def raw_pod(
    name: str,
    namespace: str = "shop",
    *,
    rv: str = "1",
    ready: bool = True,
    ready_at: str = "2026-11-28T10:00:00Z",
    phase: str | None = "Running",
    owners: Sequence[dict[str, Any]] = (),
    labels: Mapping[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata = meta(name, namespace, rv, uid=f"uid-{name}", labels=dict(labels or {"app": "checkout"}))
    metadata["ownerReferences"] = list(owners)
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-28T10:05:00Z"
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-28T09:59:00Z"},
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at},
    ]
    status: dict[str, Any] = {"conditions": conditions}
    if phase is not None:
        status["phase"] = phase
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status}


def raw_replica_set(name: str, deployment: str | None, namespace: str = "shop", replicas: int = 3) -> dict[str, Any]:
    owners = [owner("Deployment", deployment)] if deployment else []
    return {
        "metadata": meta(name, namespace, ownerReferences=owners),
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "checkout", "pod-template-hash": "abc"}}},
    }


def raw_workload(
    name: str, namespace: str = "shop", replicas: int | None = 5, selector: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector or {"matchLabels": {"app": name}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": meta(name, namespace), "spec": spec}


def raw_policy(name: str, rv: str = "1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "chaosguard.dev/v1alpha1", "kind": "ChaosPolicy", "metadata": meta(name, rv=rv), "spec": spec}


def event(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": dict(obj)}


def bookmark(rv: str) -> dict[str, Any]:
    return event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}})


def expired(message: str = "too old resource version: 1 (42)") -> dict[str, Any]:
    return event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": message})


# --------------------------------------------------------------------------- projections


def test_pod_projection_keeps_what_selection_needs() -> None:
    pod = project_pod(raw_pod("a", owners=[owner("ReplicaSet", "checkout-abc", controller=False), owner("X", "x")]))
    assert (pod.namespace, pod.name, pod.uid, pod.phase) == ("shop", "a", "uid-a", "Running")
    assert pod.ready and not pod.terminating
    assert pod.ready_since == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert pod.ready_since is not None and pod.ready_since.tzinfo is not None
    assert pod.workload == "X/x"  # the controller, not the first owner
    assert dict(pod.labels) == {"app": "checkout"}
    with pytest.raises(TypeError):
        pod.labels["app"] = "other"  # type: ignore[index]


def test_pod_projection_of_a_pod_not_ready_without_owner_or_phase() -> None:
    pod = project_pod(raw_pod("a", ready=False, phase=None, deleting=True))
    assert not pod.ready and pod.ready_since is None
    assert pod.phase == "Unknown" and pod.terminating
    assert pod.workload is None


def test_workload_projection_of_replica_sets_deployments_and_selectors() -> None:
    replica_set = project_workload(raw_replica_set("checkout-abc", "checkout"))
    assert replica_set.deployment == "checkout" and replica_set.replicas == 3
    assert replica_set.selector == "app=checkout,pod-template-hash=abc"
    assert project_workload(raw_replica_set("lonely", None)).deployment is None
    unset = project_workload(raw_workload("db", replicas=None))
    assert unset.replicas is None and unset.selector == "app=db"
    expressions = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}
    assert project_workload(raw_workload("web", selector=expressions)).selector == "tier in (web,api)"


@pytest.mark.parametrize(
    "selector",
    [None, {}, {"matchLabels": {}}, {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}],
    ids=["missing", "empty", "empty-labels", "invalid"],
)
def test_a_selector_that_would_select_the_whole_namespace_or_nothing_sane_is_none(
    selector: dict[str, Any] | None,
) -> None:
    assert selector_string(selector) is None


def test_small_projections() -> None:
    assert project_experiment({"metadata": meta("e", "shop"), "status": {"phase": "Running"}}).phase == "Running"
    assert project_experiment({"metadata": meta("e", "shop")}).phase is None
    assert dict(project_namespace_labels({"metadata": meta("shop", labels={"a": "b"})})) == {"a": "b"}
    assert project_namespace_labels({"metadata": meta("bare")}) == {}
    approval = project_approval({"metadata": meta("ok", "shop", managedFields=[{"manager": "kubectl"}]), "spec": {}})
    assert "managedFields" not in approval["metadata"] and approval["metadata"]["name"] == "ok"
    policy = project_policy(raw_policy("p", maxPercentage=20))
    assert isinstance(policy, ChaosPolicy) and policy.spec.max_percentage == 20


# --------------------------------------------------------------------------- the store


def names(store: Store[Any], namespace: str | None = None) -> list[tuple[str, str]]:
    return [key for key, _ in store.entries(namespace)]


def test_store_add_modify_delete_and_snapshots() -> None:
    store: Store[Any] = Store("pods", project_pod)
    store.upsert(raw_pod("b"))
    store.upsert(raw_pod("a", "other"))
    store.upsert(raw_pod("a"))
    snapshot = store.items("shop")
    assert names(store) == [("other", "a"), ("shop", "a"), ("shop", "b")]
    store.upsert(raw_pod("a", ready=False))
    store.delete(raw_pod("b"))
    assert [(pod.name, pod.ready) for pod in snapshot] == [("a", True), ("b", True)]  # reads are snapshots
    assert [(pod.name, pod.ready) for pod in store.items("shop")] == [("a", False)]
    store.delete(raw_pod("gone-already"))  # deleting what is not there is no error
    store.delete(raw_pod("a", "other"))
    assert names(store) == [("shop", "a")] and len(store) == 1 and store.get("other", "a") is None


def test_store_replace_drops_what_the_new_list_does_not_have() -> None:
    store: Store[Any] = Store("pods", project_pod)
    for name in ("a", "b", "c"):
        store.upsert(raw_pod(name))
    store.replace([raw_pod("b", rv="9"), raw_pod("d", "elsewhere")])
    assert names(store) == [("elsewhere", "d"), ("shop", "b")]


def test_an_invalid_policy_is_kept_out_and_recorded_not_silently_dropped(caplog: pytest.LogCaptureFixture) -> None:
    store: Store[Any] = Store("chaospolicies", project_policy)
    store.upsert(raw_policy("strict", maxPercentage=10))
    with caplog.at_level(logging.ERROR, logger="chaosguard.informers"):
        store.upsert(raw_policy("strict", maxPercentage=1000))  # was valid, now is not
    assert store.items() == []
    assert store.rejected() == {("", "strict"): "spec.maxPercentage: Input should be less than or equal to 100"}
    assert "chaospolicies strict left out of the cache: it does not project: spec.maxPercentage" in caplog.text
    store.upsert(raw_policy("strict", maxPercentage=10))
    assert store.rejected() == {} and len(store) == 1
    store.replace([raw_policy("bad", maxPercentage=-1)])
    assert len(store) == 0 and list(store.rejected()) == [("", "bad")]
    store.delete(raw_policy("bad"))
    assert store.rejected() == {}


# --------------------------------------------------------------------------- events


def test_events_change_the_store_and_move_the_resource_version() -> None:
    informer: Informer[Any] = Informer("pods", lambda **_: None, project_pod)
    informer.apply_event(event("ADDED", raw_pod("a", rv="5")))
    informer.apply_event(event("MODIFIED", raw_pod("a", rv="6", ready=False)))
    assert informer.resource_version == "6" and informer.events == 2
    informer.apply_event(bookmark("10"))
    assert informer.resource_version == "10" and informer.bookmarks == 1 and informer.events == 2
    assert informer.last_event_monotonic is not None and informer.staleness() < 5
    assert [pod.ready for pod in informer.store.items()] == [False]  # a bookmark changes nothing else
    informer.apply_event(event("DELETED", raw_pod("a", rv="11")))
    assert informer.store.items() == [] and informer.resource_version == "11"


def test_error_events() -> None:
    informer: Informer[Any] = Informer("pods", lambda **_: None, project_pod)
    with pytest.raises(ResourceVersionExpired, match="too old"):
        informer.apply_event(expired())
    with pytest.raises(WatchError, match="500"):
        informer.apply_event(event("ERROR", {"code": 500, "reason": "InternalError", "message": "boom"}))


# --------------------------------------------------------------------------- the reflector, scripted


class FakeResponse:
    """Stands in for urllib3's HTTPResponse: a list body, or watch lines, then (optionally) a
    failure, or a block until shut down as an idle open watch does."""

    def __init__(
        self,
        *,
        data: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] = (),
        then: Exception | None = None,
        block: bool = False,
    ) -> None:
        self.data = json.dumps(data or {}).encode()
        self._lines = [json.dumps(each).encode() + b"\n" for each in events]
        self._then = then
        self._block = block
        self.shut = threading.Event()
        self.status = 200

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self._lines
        if self._then is not None:
            raise self._then
        if self._block:
            self.shut.wait(30)

    def shutdown(self) -> None:
        self.shut.set()

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


Step = FakeResponse | Exception


@dataclass
class FakeServer:
    """Answers list calls from `lists` and watch calls from `watches` in order; once the script is
    used up, every watch blocks until shut down. Records every call's keyword arguments."""

    lists: list[Step] = field(default_factory=list)
    watches: list[Step] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    idle: list[FakeResponse] = field(default_factory=list)

    def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        queue = self.watches if kwargs.get("watch") else self.lists
        if not queue:
            if not kwargs.get("watch"):
                raise AssertionError("unexpected list call")
            self.idle.append(FakeResponse(block=True))
            return self.idle[-1]
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def watch_versions(self) -> list[str | None]:
        return [call.get("resource_version") for call in self.calls if call.get("watch")]

    def list_count(self) -> int:
        return sum(1 for call in self.calls if not call.get("watch"))

    def idle_watching(self) -> bool:
        return not self.watches and bool(self.idle)


def listing(rv: str, *items: Mapping[str, Any], token: str | None = None) -> FakeResponse:
    metadata = {"resourceVersion": rv, **({"continue": token} if token else {})}
    return FakeResponse(data={"kind": "PodList", "metadata": metadata, "items": list(items)})


@pytest.fixture
def run_informer() -> Iterator[Callable[[FakeServer], Informer[Any]]]:
    started: list[Informer[Any]] = []

    def run(server: FakeServer) -> Informer[Any]:
        informer: Informer[Any] = Informer("pods", server, project_pod, page_size=2)
        started.append(informer)
        informer.start()
        wait_for(server.idle_watching, timeout=10, what="the script to be used up", describe=lambda: str(server.calls))
        return informer

    yield run
    for informer in started:
        informer.stop()


def pod_names(informer: Informer[Any]) -> list[str]:
    return [pod.name for pod in informer.store.items()]


def test_a_closed_watch_resumes_from_the_last_resource_version(
    run_informer: Callable[[FakeServer], Informer[Any]],
) -> None:
    server = FakeServer(
        lists=[listing("10", raw_pod("a"))],
        watches=[
            FakeResponse(events=[event("ADDED", raw_pod("b", rv="11")), bookmark("15")]),  # the server's timeout
            FakeResponse(events=[event("DELETED", raw_pod("a", rv="16"))], then=ProtocolError("connection reset")),
        ],
    )
    informer = run_informer(server)
    assert server.watch_versions() == ["10", "15", "16"]
    assert server.list_count() == 1 and informer.relists == 0
    assert pod_names(informer) == ["b"]
    assert informer.synced and informer.connected
    assert informer.failures == 1 and informer.last_error is None  # cleared by the watch that worked
    call = next(call for call in server.calls if call.get("watch"))
    assert call["allow_watch_bookmarks"] is True and call["_preload_content"] is False
    assert 200 <= call["timeout_seconds"] <= 270


def test_an_expired_resource_version_relists_and_replaces_the_store(
    run_informer: Callable[[FakeServer], Informer[Any]],
) -> None:
    before = _relists_metric("pods")
    server = FakeServer(
        lists=[listing("10", raw_pod("a"), raw_pod("b")), listing("50", raw_pod("b", rv="40"), raw_pod("c"))],
        watches=[FakeResponse(events=[expired()])],
    )
    informer = run_informer(server)
    assert pod_names(informer) == ["b", "c"]  # "a" was deleted while the informer could not see it
    assert informer.relists == 1 and _relists_metric("pods") == before + 1
    assert server.watch_versions() == ["10", "50"]


def test_an_http_410_on_the_watch_call_relists_too(run_informer: Callable[[FakeServer], Informer[Any]]) -> None:
    server = FakeServer(
        lists=[listing("10", raw_pod("a")), listing("20")],
        watches=[ApiException(status=410, reason="Gone")],
    )
    informer = run_informer(server)
    assert pod_names(informer) == [] and informer.relists == 1
    assert server.watch_versions() == ["10", "20"]


def test_a_failing_list_is_retried_and_the_list_is_paged(run_informer: Callable[[FakeServer], Informer[Any]]) -> None:
    server = FakeServer(
        lists=[
            ApiException(status=403, reason="Forbidden"),
            listing("7", raw_pod("a"), raw_pod("b"), token="page-2"),
            listing("7", raw_pod("c")),
        ],
    )
    informer = run_informer(server)
    assert pod_names(informer) == ["a", "b", "c"]
    lists = [call for call in server.calls if not call.get("watch")]
    assert [call.get("_continue") for call in lists] == [None, None, "page-2"]
    assert all(call["limit"] == 2 for call in lists)
    assert server.watch_versions() == ["7"]
    assert informer.failures == 1 and informer.last_error is None  # cleared by the list that worked
    assert informer.relists == 0  # the first list that worked is not a re-list


def test_an_error_event_resumes_after_a_backoff_without_relisting(
    run_informer: Callable[[FakeServer], Informer[Any]],
) -> None:
    server = FakeServer(
        lists=[listing("10", raw_pod("a"))],
        watches=[FakeResponse(events=[event("ERROR", {"code": 500, "reason": "InternalError", "message": "x"})])],
    )
    informer = run_informer(server)
    assert server.watch_versions() == ["10", "10"] and informer.relists == 0 and informer.failures == 1


def test_stop_ends_the_thread_promptly_while_a_watch_is_open(
    run_informer: Callable[[FakeServer], Informer[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informers, "CONNECTED_GRACE_SECONDS", 0.2)
    server = FakeServer(lists=[listing("1")])
    informer = run_informer(server)
    started = time.monotonic()
    informer.stop(timeout=5)
    assert time.monotonic() - started < 1.0
    assert informer._thread is not None and not informer._thread.is_alive()
    assert server.idle[-1].shut.is_set()
    wait_for(lambda: not informer.connected, timeout=5, interval=0.05, what="connected to lapse after the grace")


def _relists_metric(kind: str) -> float:
    return REGISTRY.get_sample_value("chaosguard_cache_relists_total", {"kind": kind}) or 0.0


# --------------------------------------------------------------------------- the cluster cache, scripted


def fake_cluster(**items: Sequence[Mapping[str, Any]]) -> dict[str, Callable[..., Any]]:
    """A list function per kind serving these items once, then an idle watch."""
    kinds = (
        "namespaces",
        "chaospolicies",
        "chaosexperiments",
        "chaosapprovals",
        "pods",
        "replicasets",
        "deployments",
        "statefulsets",
    )
    return {kind: FakeServer(lists=[listing("1", *items.get(kind, ()))]) for kind in kinds}


@pytest.fixture
def cache() -> Iterator[ClusterCache]:
    servers = fake_cluster(
        namespaces=[{"metadata": meta("shop", labels={"chaosguard.dev/chaos": "allowed"})}, {"metadata": meta("x")}],
        chaospolicies=[raw_policy("default", maxPercentage=30)],
        chaosexperiments=[
            {"metadata": meta("run", "shop"), "status": {"phase": "Running"}},
            {"metadata": meta("done", "shop"), "status": {"phase": "Completed"}},
            {"metadata": meta("new", "other")},
        ],
        chaosapprovals=[{"metadata": meta("ok", "shop"), "spec": {"experiment": "run"}}],
        pods=[
            raw_pod("web-1", owners=[owner("ReplicaSet", "web-abc")]),
            raw_pod("lone-1", owners=[owner("ReplicaSet", "lone-abc")]),
            raw_pod("orphan-rs-1", owners=[owner("ReplicaSet", "unknown-abc")]),
            raw_pod("db-0", owners=[owner("StatefulSet", "db")]),
            raw_pod("job-1", owners=[owner("Job", "nightly")]),
            raw_pod("bare"),
            raw_pod("elsewhere", "other", owners=[owner("ReplicaSet", "web-abc")]),
        ],
        replicasets=[raw_replica_set("web-abc", "web"), raw_replica_set("lone-abc", None)],
        deployments=[raw_workload("web", replicas=4)],
        statefulsets=[raw_workload("db", replicas=None)],
    )
    cache = ClusterCache(list_functions=servers)
    cache.start()
    asyncio.run(cache.wait_synced(10))
    yield cache
    cache.stop()


def test_cluster_cache_answers_as_the_fresh_reads_do(cache: ClusterCache) -> None:
    assert cache.namespace_labels() == {"shop": {"chaosguard.dev/chaos": "allowed"}, "x": {}}
    assert [policy.metadata.name for policy in cache.policies()] == ["default"]
    assert cache.invalid_policies() == {}
    assert cache.running_experiments() == {"shop/run"}
    approvals = cache.approvals("shop")
    assert approvals == [{"metadata": meta("ok", "shop"), "spec": {"experiment": "run"}}]
    approvals[0]["spec"]["experiment"] = "changed by a caller"
    assert cache.approvals("shop")[0]["spec"]["experiment"] == "run"  # callers get copies
    assert cache.approvals("nowhere") == []
    workloads = {pod.name: pod.workload for pod in cache.pods("shop")}
    assert workloads == {
        "bare": None,
        "db-0": "StatefulSet/db",
        "job-1": "Job/nightly",
        "lone-1": "ReplicaSet/lone-abc",
        "orphan-rs-1": "ReplicaSet/unknown-abc",
        "web-1": "Deployment/web",
    }
    assert [pod.workload for pod in cache.pods("other")] == ["ReplicaSet/web-abc"]  # owners are per namespace
    assert cache.pods("shop")[0].ready_since == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert cache.desired_replicas("shop", "Deployment/web") == 4
    assert cache.desired_replicas("shop", "StatefulSet/db") == 1  # unset replicas
    assert cache.desired_replicas("shop", "ReplicaSet/lone-abc") == 3
    assert cache.desired_replicas("shop", "Deployment/missing") is None
    assert cache.desired_replicas("shop", "Job/nightly") is None
    assert cache.workload_label_selector("shop", "Deployment/web") == "app=web"
    assert cache.workload_label_selector("shop", "ReplicaSet/lone-abc") == "app=checkout,pod-template-hash=abc"
    assert cache.workload_label_selector("shop", "Job/nightly") is None
    assert cache.workload_label_selector("other", "Deployment/web") is None


def test_cluster_cache_health(cache: ClusterCache) -> None:
    assert cache.synced and cache.healthy
    cache.require_fresh()
    cache.require_fresh("pods", "chaospolicies")
    with pytest.raises(ValueError, match="no watch cache for nodes; there are: namespaces, chaospolicies"):
        cache.require_fresh("nodes")
    health = cache.informer_health()
    assert set(health) == set(cache.informers) and all(each.synced and each.connected for each in health.values())
    assert health["pods"].objects == 7
    assert all(0 <= seconds < 10 for seconds in cache.staleness().values())
    sample = REGISTRY.get_sample_value("chaosguard_cache_staleness_seconds", {"kind": "pods"})
    assert sample is not None and 0 <= sample < 10  # read through the gauge's callback


def test_reads_before_sync_refuse_rather_than_answer_empty() -> None:
    never = {kind: FakeServer(lists=[ApiException(status=403, reason="Forbidden")] * 100) for kind in fake_cluster()}
    cache = ClusterCache(list_functions=never)
    with pytest.raises(CacheNotReady, match="chaospolicies watch cache has not synced"):
        cache.policies()
    cache.start()
    try:
        with pytest.raises(CacheNotReady, match=r"not synced after 0\.3s: .*pods not synced \(last error: HTTP 403"):
            asyncio.run(cache.wait_synced(0.3))
        with pytest.raises(CacheNotReady, match="namespaces not synced"):
            cache.require_fresh("namespaces")
        assert not cache.healthy
    finally:
        cache.stop()


def test_unknown_kinds_in_list_functions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kinds: nodes"):
        ClusterCache(list_functions={"nodes": FakeServer()})


def test_resolved_pods_follow_changes_to_pods_and_replica_sets(cache: ClusterCache) -> None:
    first = cache.pods("shop")
    again = cache.pods("shop")
    assert again == first and all(a is b for a, b in zip(again, first, strict=True))  # kept while unchanged
    pods, replica_sets = cache.informers["pods"], cache.informers["replicasets"]

    # A pod whose ReplicaSet the cache has not seen yet belongs to the ReplicaSet, until it arrives.
    pods.apply_event(event("ADDED", raw_pod("new-1", owners=[owner("ReplicaSet", "new-abc")])))
    assert {pod.name: pod.workload for pod in cache.pods("shop")}["new-1"] == "ReplicaSet/new-abc"
    replica_sets.apply_event(event("ADDED", raw_replica_set("new-abc", "new")))
    after = {pod.name: pod for pod in cache.pods("shop")}
    assert after["new-1"].workload == "Deployment/new"
    assert after["web-1"] is {pod.name: pod for pod in first}["web-1"]  # unchanged pods keep their view

    pods.apply_event(event("MODIFIED", raw_pod("web-1", ready=False, owners=[owner("ReplicaSet", "web-abc")])))
    web = next(pod for pod in cache.pods("shop") if pod.name == "web-1")
    assert not web.ready and web.workload == "Deployment/web"
    pods.apply_event(event("DELETED", raw_pod("web-1")))
    assert "web-1" not in {pod.name for pod in cache.pods("shop")}
    assert [pod.name for pod in cache.pods("other")] == ["elsewhere"]  # other namespaces untouched


def test_the_pod_store_stamps_when_it_first_saw_each_pod_ready() -> None:
    store = informers.Store("pods", informers.project_pod, informers.carry_ready_sighting)
    store.upsert(raw_pod("a", ready=False))
    assert store.items()[0].ready_seen_at is None
    before = datetime.now(UTC)
    store.upsert(raw_pod("a", rv="2", ready_at="2026-11-28T10:00:07Z"))
    seen = store.items()[0].ready_seen_at
    assert seen is not None and seen >= before
    store.upsert(raw_pod("a", rv="3", ready_at="2026-11-28T10:00:07Z", labels={"app": "checkout", "x": "y"}))
    store.replace([raw_pod("a", rv="4", ready_at="2026-11-28T10:00:07Z")])
    assert store.items()[0].ready_seen_at == seen  # kept while Ready since the same transition
    store.upsert(raw_pod("a", rv="5", ready=False))
    store.upsert(raw_pod("a", rv="6", ready_at="2026-11-28T10:09:00Z"))
    again = store.items()[0].ready_seen_at
    assert again is not None and again > seen  # a new transition, a new sighting
