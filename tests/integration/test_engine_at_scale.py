"""The engine's scale machinery against the real API server: the urgent lane, and the fresh reads
that guard a kill when the watch caches are behind.

These tests drive an ExperimentDriver of their own on ChaosExperiments they create. The session's
operator would drive the same objects (admit and start them, kill or inject, write their status),
so the world would move under the test: it is stopped while this module runs, and started again
after it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.api.models import ChaosExperimentSpec, FaultState, KillResult, Phase, RunStatus
from chaosguard.clients.informers import ClusterCache
from chaosguard.clients.kube import Cluster, load_config
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.runtime import lanes
from chaosguard.runtime.clock import Clock
from chaosguard.runtime.engine import ExperimentDriver, OperatorContext
from chaosguard.runtime.guard import GuardScheduler
from chaosguard.runtime.lanes import ApiLanes
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    experiment,
    label_namespace,
    ready_pods,
    scoped_policy,
)
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane

ROUTINE_CALLS = 1000

EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: cached}
spec:
  action: pod-kill
  podKill: {gracePeriodSeconds: 1}
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: 10m
"""


@pytest.fixture(scope="module", autouse=True)
def no_operator(chaos_operator: OperatorProcess) -> Iterator[None]:
    """Nothing but the test drives its experiments: a live operator picked the test's own pod-kill
    up and replaced the victim before the test's kill, which then read "REFUSED gone"."""
    chaos_operator.stop()
    yield
    chaos_operator.start()


def _block(cluster: Cluster, gate: threading.Event) -> None:
    """A routine call that holds its thread until the test lets it go."""
    gate.wait(timeout=120)


def test_an_abort_does_not_wait_behind_a_thousand_routine_calls(
    chaosguard_crds: ControlPlane, namespace: str, k8s: client.ApiClient
) -> None:
    apply_yaml(chaosguard_crds, EXPERIMENT, namespace)
    load_config(str(chaosguard_crds.kubeconfig))
    api = ApiLanes.connect(str(chaosguard_crds.kubeconfig))
    gate = threading.Event()

    async def scenario() -> tuple[int, int, bool]:
        routine = [asyncio.ensure_future(api.call(_block, gate)) for _ in range(ROUTINE_CALLS)]
        await asyncio.sleep(0)  # every routine call is submitted: 16 running, the rest queued
        with lanes.urgent():
            await api.call(Cluster.patch_experiment_status, namespace, "cached", {"message": "aborted"})
            read = await api.call(Cluster.experiment, namespace, "cached")
        pending_when_done = sum(not call.done() for call in routine)
        # The same call on the routine lane waits behind the thousand: the lane, not luck, made the difference.
        queued = asyncio.ensure_future(api.call(Cluster.experiment, namespace, "cached"))
        await asyncio.sleep(0.2)
        queued_done_while_blocked = queued.done()
        gate.set()
        await asyncio.gather(*routine, queued)
        assert read is not None and read["status"]["message"] == "aborted"
        return pending_when_done, sum(call.done() for call in routine), queued_done_while_blocked

    try:
        pending_when_done, finished, queued_done_while_blocked = asyncio.run(scenario())
    finally:
        gate.set()
        api.close()
    assert pending_when_done == ROUTINE_CALLS, "the abort's calls finished while every routine call still waited"
    assert not queued_done_while_blocked, "a routine call must queue behind the routine lane's backlog"
    assert finished == ROUTINE_CALLS


def _context(control_plane: ControlPlane, cache: ClusterCache) -> OperatorContext:
    load_config(str(control_plane.kubeconfig))
    batcher = QueryBatcher()
    clock = Clock.from_environment()
    events: list[tuple[str, str, str]] = []
    return OperatorContext(
        api=ApiLanes.connect(str(control_plane.kubeconfig)),
        cache=cache,
        clock=clock,
        emit=lambda body, kind, reason, message: events.append((kind, reason, message)),
        batcher=batcher,
        guard=GuardScheduler(batcher, clock.now),
    )


@pytest.mark.parametrize("change", ["policy", "namespace-label"])
def test_a_kill_is_judged_by_the_policy_of_now_even_when_the_cache_is_behind(
    chaosguard_crds: ControlPlane, k8s: client.ApiClient, shop: str, isolated_policies: list[str], change: str
) -> None:
    """The cache chose the target; a moment later, before the kill, a policy protects the pods (or
    the namespace opts out). The caches are stopped, so they still show the old world: the kill
    must be refused from the fresh reads that guard it."""
    apply_yaml(chaosguard_crds, EXPERIMENT, shop)
    load_config(str(chaosguard_crds.kubeconfig))
    cache = ClusterCache()
    cache.start()
    context = _context(chaosguard_crds, cache)
    body: dict[str, Any] = experiment(k8s, shop, "cached")
    spec = ChaosExperimentSpec.model_validate(body["spec"])

    async def scenario() -> Any:
        await cache.wait_synced(60)
        wait_for(lambda: len(cache.pods(shop)) == 5, timeout=30, what="the cache to hold the shop's pods")
        driver = ExperimentDriver(context, body, logging.getLogger("test"))
        world = await driver.world(spec)
        now = driver.now()
        run = RunStatus(id="r1-test", phase=Phase.RUNNING, started_at=now, deadline=now + timedelta(minutes=10))
        driver.status.current_run = run
        [victim] = await driver.pick_targets(spec, world, run, 0, "")
        cache.stop()  # from here on the cache shows the world as it was when the target was chosen
        if change == "policy":
            name = f"protect-{shop}"
            isolated_policies.append(name)
            selector = {"matchLabels": {"app": "checkout"}}
            create_policy(k8s, name, scoped_policy(shop, requireNamespaceOptIn=False, protectedSelector=selector))
        else:
            create_policy(k8s, f"opt-in-{shop}", scoped_policy(shop, requireNamespaceOptIn=True))
            isolated_policies.append(f"opt-in-{shop}")
            label_namespace(k8s, shop, {"chaosguard.dev/chaos": None})
        await driver.kill_one(spec, world, run, victim, 0)
        return run.kills[-1]

    try:
        record = asyncio.run(scenario())
    finally:
        cache.stop()
        context.api.close()
    assert record.result is not KillResult.KILLED, record
    rule = "protected-pod" if change == "policy" else "namespace-opt-in"
    assert record.message.startswith(f"REFUSED {rule}: "), record.message
    assert len(ready_pods(k8s, shop, "checkout")) == 5


def test_a_late_sample_batch_never_revives_a_run_that_has_ended(
    chaosguard_crds: ControlPlane, namespace: str, k8s: client.ApiClient
) -> None:
    """The guard's sample batches go out in the background; one that lands after the run ended
    (or after a newer run began) must change nothing, and one for the current run lands."""
    apply_yaml(chaosguard_crds, EXPERIMENT, namespace)
    load_config(str(chaosguard_crds.kubeconfig))
    cache = ClusterCache()
    context = _context(chaosguard_crds, cache)
    now = datetime.now(UTC)
    samples = {"error-ratio": [{"at": now.isoformat(), "status": "Holds", "value": "0.001"}]}

    async def scenario() -> dict[str, Any]:
        driver = ExperimentDriver(context, experiment(k8s, namespace, "cached"), logging.getLogger("test"))
        current = RunStatus(id="r2-now", phase=Phase.RUNNING, started_at=now, deadline=now + timedelta(minutes=5))
        driver.status.current_run = current
        await driver.save()
        ended = current.model_copy(update={"id": "r1-before", "sli_samples": samples})
        await driver.write_samples(ended)  # the test op fails: nothing may change
        untouched = dict(experiment(k8s, namespace, "cached")["status"]["currentRun"])
        current.sli_samples = samples
        await driver.write_samples(current)
        return untouched

    try:
        untouched = asyncio.run(scenario())
    finally:
        context.api.close()
    assert untouched["id"] == "r2-now" and not untouched.get("sliSamples"), untouched
    run = experiment(k8s, namespace, "cached")["status"]["currentRun"]
    assert run["id"] == "r2-now"
    assert run["sliSamples"] == samples


LATENCY_EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: delayed}
spec:
  action: latency
  latency: {delay: 100ms}
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: 10m
"""


class FailsOnce:
    """The operator's API lanes, except that the first call of `method` fails as a busy API server would."""

    def __init__(self, api: ApiLanes, method: Any) -> None:
        self.api = api
        self.method = method
        self.failed = False

    async def call(self, fn: Any, *args: Any) -> Any:
        if fn is self.method and not self.failed:
            self.failed = True
            raise ApiException(status=500, reason="etcdserver: leader changed")
        return await self.api.call(fn, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


def test_a_network_fault_round_that_fails_half_way_is_taken_up_again_and_never_injects_twice(
    chaosguard_crds: ControlPlane, k8s: client.ApiClient, shop: str
) -> None:
    """The read right before the injection fails once: the step fails, the round is not counted as
    done, and the next step injects the chosen pod; a further retry (an operator that died before
    it could count the round) finds the pod's fault recorded and adds no second injector."""
    apply_yaml(chaosguard_crds, LATENCY_EXPERIMENT, shop)
    load_config(str(chaosguard_crds.kubeconfig))
    cache = ClusterCache()
    cache.start()
    context = _context(chaosguard_crds, cache)
    flaky = FailsOnce(context.api, Cluster.live_pods)
    context.api = cast(ApiLanes, flaky)
    body: dict[str, Any] = experiment(k8s, shop, "delayed")
    spec = ChaosExperimentSpec.model_validate(body["spec"])

    async def scenario() -> tuple[int, int, RunStatus]:
        await cache.wait_synced(60)
        wait_for(lambda: len(cache.pods(shop)) == 5, timeout=30, what="the cache to hold the shop's pods")
        driver = ExperimentDriver(context, body, logging.getLogger("test"))
        world = await driver.world(spec)
        now = driver.now()
        run = RunStatus(
            id="r1-test", phase=Phase.RUNNING, started_at=now, deadline=now + timedelta(minutes=10), next_round_at=now
        )
        driver.status.current_run = run
        with pytest.raises(ApiException):
            await driver.inject_round(spec, world, run, now)
        after_failure = (run.rounds_done, len(run.faults))
        await driver.inject_round(spec, world, run, driver.now())
        run.rounds_done, run.next_round_at = 0, now  # as if the operator died before counting the round
        await driver.inject_round(spec, world, run, driver.now())
        return *after_failure, run

    try:
        rounds_after_failure, faults_after_failure, run = asyncio.run(scenario())
    finally:
        cache.stop()
        flaky.api.close()
    assert flaky.failed
    assert (rounds_after_failure, faults_after_failure) == (0, 0), "a failed round must stay to be taken up again"
    assert run.rounds_done == 1 and run.next_round_at is None
    assert [fault.state for fault in run.faults] == [FaultState.ACTIVE], run.faults
    [fault] = run.faults
    pod = client.CoreV1Api(k8s).read_namespaced_pod(fault.name, shop)
    injectors = [c.name for c in pod.spec.ephemeral_containers or [] if c.name.startswith("chaosguard-")]
    assert injectors == [fault.container], injectors


NETWORK_EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: lossy}
spec:
  action: network
  network: {loss: 30}
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: 10m
"""


def test_an_impairment_the_injector_cannot_take_fails_its_fault_and_the_run(
    chaosguard_crds: ControlPlane, k8s: client.ApiClient, shop: str
) -> None:
    """The model refuses a percentage tc would render as 0; should one reach the engine anyway (a
    spec that skipped validation), the fault fails with the reason and an Event, nothing is added
    to the pod, and the run ends Failed instead of the step failing forever."""
    apply_yaml(chaosguard_crds, NETWORK_EXPERIMENT, shop)
    load_config(str(chaosguard_crds.kubeconfig))
    cache = ClusterCache()
    cache.start()
    context = _context(chaosguard_crds, cache)
    events: list[tuple[str, str, str]] = []
    context.emit = lambda body, kind, reason, message: events.append((kind, reason, message))
    body: dict[str, Any] = experiment(k8s, shop, "lossy")
    spec = ChaosExperimentSpec.model_validate(body["spec"])
    assert spec.network is not None
    unvalidated = spec.model_copy(update={"network": spec.network.model_copy(update={"loss": 1e-7})})

    async def scenario() -> tuple[RunStatus, bool, ExperimentDriver]:
        await cache.wait_synced(60)
        wait_for(lambda: len(cache.pods(shop)) == 5, timeout=30, what="the cache to hold the shop's pods")
        driver = ExperimentDriver(context, body, logging.getLogger("test"))
        world = await driver.world(spec)
        now = driver.now()
        run = RunStatus(id="r1-test", phase=Phase.RUNNING, started_at=now, deadline=now + timedelta(minutes=10))
        driver.status.current_run = run
        [victim] = await driver.pick_targets(spec, world, run, 0, "")
        await driver.inject_one(unvalidated, world, run, victim)
        return run, await driver.settle_injectors(run), driver

    try:
        run, ended, driver = asyncio.run(scenario())
    finally:
        cache.stop()
        context.api.close()
    [fault] = run.faults
    assert fault.state is FaultState.FAILED and "network impairs nothing" in fault.message, fault
    assert ("Warning", "NetworkFailed") in [(kind, reason) for kind, reason, _ in events], events
    assert ended and driver.status.last_run is not None and driver.status.last_run.phase is Phase.FAILED
    pod = client.CoreV1Api(k8s).read_namespaced_pod(fault.name, shop)
    assert not [c.name for c in pod.spec.ephemeral_containers or [] if c.name.startswith("chaosguard-")]
