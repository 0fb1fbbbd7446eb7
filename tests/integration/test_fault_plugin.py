"""Adding a fault kind needs one module, one row in the table of actions and its model: a test-only kind
(it marks a pod with an annotation, and takes the mark off again) registered here, not shipped, runs
through the whole round loop against the real API server: pick, live refusal, record before acting,
the leader-only call, save, Event; a dry run that touches nothing; and an abort that takes it out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from chaosguard.api import actions
from chaosguard.api.actions import ActionFacts, EventReasons, Permission
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, Phase, RunStatus
from chaosguard.clients.informers import ClusterCache
from chaosguard.clients.kube import Cluster, load_config
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.selection import PodView
from chaosguard.runtime.clock import Clock
from chaosguard.runtime.context import World
from chaosguard.runtime.engine import ExperimentDriver, OperatorContext
from chaosguard.runtime.faults import base as fault_kinds
from chaosguard.runtime.faults.base import Host, Notice
from chaosguard.runtime.guard import GuardScheduler
from chaosguard.runtime.lanes import ApiLanes
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import apply_yaml, create_deployment, experiment, install_crds, label_namespace
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane

ACTION = "test-annotate"
MARK = "chaosguard.dev/test-fault"

EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: marked}
spec:
  action: latency
  latency: {delay: 100ms}
  target: {selector: {matchLabels: {app: checkout}}, mode: fixed, value: 2}
  duration: 10m
"""

ROW = ActionFacts(
    action=ACTION,
    spec_block="testAnnotate",
    spec_block_required=False,
    permission=Permission("patch", "pods"),
    record_kind="Annotation",
    counts="injections",
    reasons=EventReasons(
        skipped="AnnotationSkipped", would="WouldAnnotate", done="AnnotationInjected", failed="AnnotationFailed"
    ),
)


def _mark(cluster: Cluster, namespace: str, name: str, value: str | None) -> None:
    cluster.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {MARK: value}}})


class Annotate:
    """The test-only kind: everything a kind must answer, and nothing the loop does for it."""

    action = ACTION

    @property
    def facts(self) -> ActionFacts:
        return actions.facts_of(self.action)

    def records(self, run: RunStatus) -> list[Any]:
        return list(run.faults)

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None:
        return None

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        return 0

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        return None

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        container = f"chaosguard-{ACTION}-{run.id}"
        return FaultRecord(
            namespace=victim.namespace,
            name=victim.name,
            uid=victim.uid,
            container=container,
            impairment=self.describe(spec),
            deadline=run.deadline,
        )

    def refuse(self, run: RunStatus, record: Any, refusal: Refusal) -> str:
        record.state, record.message = FaultState.FAILED, f"not marked: {refusal}"
        run.faults.append(record)
        return str(record.message)

    def would(self, run: RunStatus, record: Any, victim: PodView) -> str:
        record.state, record.message = FaultState.WOULD_INJECT, f"dry run: would mark {victim.key}"
        run.faults.append(record)
        return str(record.message)

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        return run.id

    def fail(self, run: RunStatus, record: Any, message: str) -> None:
        record.state, record.message = FaultState.FAILED, message
        run.faults.append(record)

    def begin(self, run: RunStatus, record: Any) -> None:
        run.faults.append(record)

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        await host.context.api.call(_mark, victim.namespace, victim.name, str(prepared))
        record.state, record.injected_at = FaultState.ACTIVE, host.now()
        run.injections_total += 1
        return [Notice("Normal", self.facts.reasons.done, f"marked {victim.key}")]

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        return None

    def interrupted(self, record: Any) -> None:
        record.state, record.message = FaultState.FAILED, "not marked: this replica stopped leading"

    async def resume(self, host: Host, run: RunStatus) -> bool:
        return False

    async def settle(self, host: Host, run: RunStatus) -> bool:
        return False

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        await host.context.api.call(_mark, fault.namespace, fault.name, None)
        fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, host.now(), why

    def describe(self, spec: ChaosExperimentSpec) -> str:
        return f"annotation {MARK}"


@pytest.fixture
def annotate_kind() -> Iterator[Annotate]:
    actions.register(ROW)
    kind = Annotate()
    fault_kinds.register(kind)
    try:
        yield kind
    finally:
        fault_kinds.unregister(ACTION)
        actions.unregister(ACTION)


def _context(control_plane: ControlPlane, cache: ClusterCache, events: list[tuple[str, str, str]]) -> OperatorContext:
    load_config(str(control_plane.kubeconfig))
    batcher = QueryBatcher()
    clock = Clock.from_environment()
    return OperatorContext(
        api=ApiLanes.connect(str(control_plane.kubeconfig)),
        cache=cache,
        clock=clock,
        emit=lambda body, kind, reason, message: events.append((kind, reason, message)),
        batcher=batcher,
        guard=GuardScheduler(batcher, clock.now),
    )


def _marked(k8s: client.ApiClient, namespace: str) -> dict[str, str]:
    pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="app=checkout").items
    return {pod.metadata.name: (pod.metadata.annotations or {}).get(MARK) for pod in pods if pod.metadata.annotations}


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane no operator process watches: the session's operator (started by an earlier module)
    would otherwise drive `marked` too and race the driver under test for its status."""
    with ControlPlane(tmp_path_factory.mktemp("plugin-plane"), default_bin_dir()) as plane:
        install_crds(plane)
        yield plane


@pytest.fixture
def own_api(own_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with own_plane.api_client() as api:
        yield api


@pytest.fixture
def own_shop(own_api: client.ApiClient, request: pytest.FixtureRequest) -> str:
    namespace = f"plugin-{request.node.callspec.id.lower()}"
    client.CoreV1Api(own_api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    label_namespace(own_api, namespace, {"chaosguard.dev/chaos": "allowed"})
    create_deployment(own_api, namespace, "checkout", 5)
    return namespace


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_kind_registered_in_a_test_runs_through_the_whole_loop_and_its_abort(
    own_plane: ControlPlane, own_api: client.ApiClient, own_shop: str, annotate_kind: Annotate, dry_run: bool
) -> None:
    chaosguard_crds, k8s, shop = own_plane, own_api, own_shop
    apply_yaml(chaosguard_crds, EXPERIMENT, shop)
    load_config(str(chaosguard_crds.kubeconfig))
    cache = ClusterCache()
    cache.start()
    events: list[tuple[str, str, str]] = []
    context = _context(chaosguard_crds, cache, events)
    body: dict[str, Any] = experiment(k8s, shop, "marked")
    spec = ChaosExperimentSpec.model_validate(body["spec"]).model_copy(update={"action": ACTION, "dry_run": dry_run})

    async def scenario() -> tuple[RunStatus, dict[str, str], dict[str, Any]]:
        await cache.wait_synced(60)
        wait_for(lambda: len(cache.pods(shop)) == 5, timeout=30, what="the cache to hold the shop's pods")
        driver = ExperimentDriver(context, body, logging.getLogger("test"))
        world = await driver.world(spec)
        await driver.start_run(spec, world, driver.now())
        run = driver.status.current_run
        assert run is not None
        await driver.play_round(spec, world, run, driver.now())
        marked_during = {name: value for name, value in _marked(k8s, shop).items() if value}
        written = dict(experiment(k8s, shop, "marked")["status"]["currentRun"])
        await driver.end_run(Phase.ABORTED, "AbortRequested", "aborted by the test")
        driver.stop_guard()
        return run, marked_during, written

    try:
        run, marked_during, written = asyncio.run(scenario())
    finally:
        cache.stop()
        context.api.close()
    reasons = [reason for _, reason, _ in events]
    # Recorded before acting and written to the API server, as the loop does for every kind.
    assert [fault["container"].startswith(f"chaosguard-{ACTION}-") for fault in written["faults"]] == [True, True]
    assert all(FaultRecord.model_validate(fault).kind == "Annotation" for fault in written["faults"])
    if dry_run:
        assert marked_during == {}, "a dry run touches nothing"
        assert [fault.state for fault in run.faults] == [FaultState.WOULD_INJECT] * 2
        assert reasons.count("WouldAnnotate") == 2 and written["injectionsTotal"] == 0
        return
    assert sorted(marked_during) == sorted(fault.name for fault in run.faults)
    assert set(marked_during.values()) == {run.id}
    assert reasons.count("AnnotationInjected") == 2 and written["injectionsTotal"] == 2
    # The abort took every mark out through the kind's own recover, and said so.
    assert {name: value for name, value in _marked(k8s, shop).items() if value} == {}
    assert [fault.state for fault in run.faults] == [FaultState.REMOVED] * 2
    assert reasons.count("AnnotationRemoved") == 2
    final = experiment(k8s, shop, "marked")["status"]
    assert final["lastRun"]["phase"] == "Aborted" and final["lastRun"]["killsTotal"] == 0
