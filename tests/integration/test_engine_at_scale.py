"""The engine's scale machinery against the real API server: the urgent lane, and the fresh reads
that guard a kill when the watch caches are behind.

These tests drive an ExperimentDriver of their own on ChaosExperiments they create. The session's
operator would drive the same objects (admit and start them, kill or inject, write their status),
so the world would move under the test: it is stopped while this module runs, and started again
after it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import statistics
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.api.models import (
    ChaosExperimentSpec,
    FaultState,
    KillRecord,
    KillResult,
    OnUnavailable,
    Phase,
    RunStatus,
    SliSummary,
    SteadyStateCondition,
    TargetRecord,
)
from chaosguard.clients.informers import ClusterCache
from chaosguard.clients.kube import Cluster, load_config
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.decisions.samples import TREND_POINTS
from chaosguard.decisions.slo import GuardState, QueryOutcome, Sample, UnavailableKind, evaluate, ok, unavailable
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
from tests.support.slis import trend_of

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
    samples = [SliSummary(name="error-ratio", status="Holding", value="0.001", at=now, samples=1)]

    async def scenario() -> dict[str, Any]:
        driver = ExperimentDriver(context, experiment(k8s, namespace, "cached"), logging.getLogger("test"))
        current = RunStatus(id="r2-now", phase=Phase.RUNNING, started_at=now, deadline=now + timedelta(minutes=5))
        driver.status.current_run = current
        await driver.save()
        ended = current.model_copy(update={"id": "r1-before", "slis": samples})
        await driver.write_samples(ended)  # the test op fails: nothing may change
        untouched = dict(experiment(k8s, namespace, "cached")["status"]["currentRun"])
        current.slis = samples
        await driver.write_samples(current)
        return untouched

    try:
        untouched = asyncio.run(scenario())
    finally:
        context.api.close()
    assert untouched["id"] == "r2-now" and not untouched.get("slis"), untouched
    run = experiment(k8s, namespace, "cached")["status"]["currentRun"]
    assert run["id"] == "r2-now"
    assert run["slis"] == [sli.model_dump(by_alias=True, mode="json", exclude_none=True) for sli in samples]


GUARDED_EXPERIMENT = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: {name}}}
spec:
  action: pod-kill
  target: {{selector: {{matchLabels: {{app: checkout}}}}, mode: one}}
  duration: 2h
  interval: 2h
  steadyState:
    interval: 1s
    prometheus: {{url: "http://prometheus.monitoring:9090"}}
    conditions:
{conditions}
"""
SLIS = [
    {
        "name": "error-ratio",
        "query": 'sum(rate(http_requests_total{app="checkout",code=~"5.."}[1m])) '
        '/ sum(rate(http_requests_total{app="checkout"}[1m]))',
        "operator": "<",
        "threshold": 0.05,
        "for": "10s",
    },
    {
        "name": "latency-p99",
        "query": "histogram_quantile(0.99, sum by (le) "
        '(rate(http_request_duration_seconds_bucket{app="checkout"}[1m])))',
        "operator": "<",
        "threshold": 0.5,
    },
]
STATUS_BUDGET = 4096  # bytes of JSON: issue 24's goal for a running guarded experiment with 2 SLIs


def test_a_guarded_runs_status_stays_small_however_long_it_runs(
    chaosguard_crds: ControlPlane, namespace: str, k8s: client.ApiClient
) -> None:
    """Runs of 30 s to an hour at a 1 s guard interval, 2 SLIs with noise, near misses and an outage of
    the metrics, 3 targets and a kill: every sample goes through the driver's own recording and its
    background batch write, then a full save, and the size is read back from the API server."""
    conditions = [SteadyStateCondition.model_validate(c) for c in SLIS]
    minutes = [0.5, 1, 2, 5, 10, 20, 30, 60]
    for index in range(len(minutes)):
        listed = "\n".join(f"    - {json.dumps(c)}" for c in SLIS)
        apply_yaml(chaosguard_crds, GUARDED_EXPERIMENT.format(name=f"long-{index}", conditions=listed), namespace)
    load_config(str(chaosguard_crds.kubeconfig))
    context = _context(chaosguard_crds, ClusterCache())
    noise = random.Random(24)

    async def one(name: str, minutes: float) -> tuple[int, dict[str, Any]]:
        driver = ExperimentDriver(context, experiment(k8s, namespace, name), logging.getLogger("test"))
        start = datetime.now(UTC) - timedelta(minutes=minutes)
        run = RunStatus(id=f"{name}-r1", started_at=start, deadline=start + timedelta(hours=2), spec_hash="0" * 64)
        run.target_namespaces = [namespace]
        run.targets = [
            TargetRecord(
                namespace=namespace,
                name=f"checkout-7d9f8b6c5d-{i:05d}",
                uid=str(uuid.uuid4()),
                workload="Deployment/checkout",
            )
            for i in range(3)
        ]
        victim = run.targets[0]
        run.kills = [
            KillRecord(
                namespace=namespace,
                name=victim.name,
                uid=victim.uid,
                workload=victim.workload,
                at=start + timedelta(seconds=2),
                result=KillResult.KILLED,
                method="eviction",
                message="eviction accepted",
                round=1,
                recovered_after_seconds=3.25,
            )
        ]
        run.kills_total = 1
        driver.status.phase, driver.status.current_run, driver.status.runs_total = Phase.RUNNING, run, 1
        driver.set_condition("Admitted", "True", "Admitted", "every ChaosPolicy allows this experiment")
        driver.set_condition("Started", "True", "RunStarted", f"run {run.id} started (trigger: apply)")
        await driver.save()
        state = GuardState()
        for tick in range(int(minutes * 60)):
            at = start + timedelta(seconds=tick + noise.uniform(0, 0.2))
            errors = 0.08 if noise.random() < 0.01 else abs(noise.gauss(0.004, 0.003))
            outcomes: dict[str, QueryOutcome] = {
                "error-ratio": ok(Sample({"app": "checkout"}, errors)),
                "latency-p99": unavailable(UnavailableKind.TIMEOUT, "slow")
                if tick % 300 == 299
                else ok(Sample({}, abs(noise.gauss(0.21, 0.05)))),
            }
            verdict = evaluate(conditions, outcomes, state, at, OnUnavailable.CONTINUE)
            state = verdict.state
            run.sli_state = state.to_wire()
            driver.record_samples(run, verdict)
            if tick % 5 == 4:  # the background batch, every SAMPLE_BATCH_SECONDS of guard ticks
                await driver.write_samples(run)
        await driver.write_samples(run)
        await driver.save()
        status = experiment(k8s, namespace, name)["status"]
        return len(json.dumps(status)), status

    async def every() -> list[tuple[int, dict[str, Any]]]:
        return [await one(f"long-{index}", length) for index, length in enumerate(minutes)]

    try:
        measured = asyncio.run(every())
    finally:
        context.api.close()
    sizes = sorted(size for size, _ in measured)
    p95 = sizes[max(0, math.ceil(0.95 * len(sizes)) - 1)]
    print(f"\n# status of running 2-SLI runs of {minutes} min: mean {statistics.mean(sizes):.0f} B, p95 {p95} B")
    for length, (size, status) in zip(minutes, measured, strict=True):
        run = status["currentRun"]
        assert size <= STATUS_BUDGET, f"{length} min: {size} B: {json.dumps(status)}"
        assert [sli["name"] for sli in run["slis"]] == ["error-ratio", "latency-p99"]
        errors = run["slis"][0]
        assert errors["samples"] == int(length * 60) and errors["trend"]["start"], errors
        points = trend_of(run, "error-ratio")
        started = datetime.fromisoformat(run["startedAt"].replace("Z", "+00:00"))
        # the trend spans the whole run, not its last minute
        assert points[0].at - started < timedelta(seconds=1) and len(points) <= TREND_POINTS, points
        last_tick = started + timedelta(seconds=int(length * 60) - 1)
        assert abs((last_tick - points[-1].at).total_seconds()) <= errors["trend"]["step"], (length, points[-1])


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
