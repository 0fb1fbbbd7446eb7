"""Pause and resume of a node-drain through the paths a user takes: `kubectl apply` of examples/node-drain.yaml
and `chaosguard pause|resume`, on a real API server with kwok nodes and pods and the operator as a process.

A pause uncordons the nodes the run cordoned (by its mark) within the guard interval + 1 s and evicts
nothing more, the deadline never moves, and a resume drains again (the same run's mark, the pods the plan
picks) until the deadline, which uncordons. An operator that was down when the pause came uncordons when
it starts, a restart while paused cordons nothing, and an abort while paused leaves no node cordoned. A
PodDisruptionBudget that refuses every eviction keeps the pods on the drained node, so what a paused run
would do to them shows once the budget opens."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from chaosguard.api.models import ABORT_ANNOTATION
from localcluster.controlplane import ControlPlane
from localcluster.kwoknodes import Nodes
from localcluster.operator import OperatorProcess, apply_yaml, events_for, status_of, wait_for_phase
from localcluster.wait import wait_for
from tests.integration.test_failover import (  # noqa: F401 (fixtures)
    LEASE_DURATION,
    failover_namespace,
    long_lease_replicas,
    two_replicas,
)
from tests.integration.test_leader_election import Replica, lease_spec, wait_for_holder
from tests.integration.test_operator_nodedrain import (  # noqa: F401 (fixtures)
    EXAMPLE,
    NAME,
    drain_operator,
    node_held_by_a_budget,
    nodes,
    run_of,
    with_duration,
)
from tests.integration.test_operator_pause import DEFAULT_GUARD_INTERVAL, cli, moment, unchanged_for

pytestmark = pytest.mark.controlplane


def held_back(k8s: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    kills = run_of(status_of(k8s, namespace, NAME)).get("kills", [])
    return [kill for kill in kills if kill["result"] == "SkippedDisruptionBudget"]


def open_budget(k8s: client.ApiClient, namespace: str, allowed: int) -> None:
    """Lets every eviction through from now on (once the disruption controller has counted it)."""
    policy = client.PolicyV1Api(k8s)
    policy.patch_namespaced_pod_disruption_budget("checkout", namespace, {"spec": {"minAvailable": 0}})

    def counted() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("checkout", namespace).status
        return status is not None and (status.disruptions_allowed or 0) >= allowed

    wait_for(
        counted,
        timeout=30,
        what=f"the budget to allow {allowed} disruptions",
    )


def removal_recorded(k8s: client.ApiClient, namespace: str, what: str) -> dict[str, Any]:
    """Waits until the run records its pause and the drain the pause took out; returns the run."""

    def recorded() -> dict[str, Any]:
        run = run_of(status_of(k8s, namespace, NAME))
        return run if run.get("pauses") and run["faults"][0]["state"] == "Removed" else {}

    return wait_for(recorded, timeout=30, what=what, describe=lambda: str(run_of(status_of(k8s, namespace, NAME))))


def drained_and_held(k8s: client.ApiClient, namespace: str, kwok: Nodes, node: str, pods: int) -> str:
    """Waits until the run cordoned `node` and the budget refused each of its `pods` evictions; returns the mark."""
    wait_for(lambda: kwok.cordoned(node), timeout=30, what=f"node {node} cordoned")
    wait_for(lambda: len(held_back(k8s, namespace)) == pods, timeout=30, what="every eviction refused by the budget")
    mark = f"{namespace}/{NAME} run {run_of(status_of(k8s, namespace, NAME))['id']}"
    assert kwok.mark(node) == mark and len(kwok.pods_on(node, namespace)) == pods  # never forced
    return mark


def test_a_paused_drain_uncordons_in_time_evicts_nothing_and_a_resume_drains_again_until_the_deadline(
    capsys: pytest.CaptureFixture[str],
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],  # noqa: F811
    namespace: str,
    nodes: Nodes,  # noqa: F811
) -> None:
    drained, spare = node_held_by_a_budget(k8s, namespace, nodes)
    drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "45s"), namespace)
    mark = drained_and_held(k8s, namespace, nodes, drained, 2)
    deadline = run_of(status_of(k8s, namespace, NAME))["deadline"]

    # Timed from the CLI's patch (it returns once set): the operator's latency, not the wait's polling.
    started = time.monotonic()
    assert cli(control_plane, "pause", NAME, "-n", namespace, "--no-wait") == 0
    wait_for(
        lambda: not nodes.cordoned(drained),
        timeout=DEFAULT_GUARD_INTERVAL + 1,
        interval=0.05,
        what=f"node {drained} uncordoned by the pause",
    )
    took = time.monotonic() - started
    print(f"chaosguard pause -> drained node uncordoned: {took:.2f}s")
    assert took <= DEFAULT_GUARD_INTERVAL + 1 and nodes.mark(drained) is None
    run = removal_recorded(k8s, namespace, "the pause's removal recorded")
    [paused_drain] = run["faults"]
    assert paused_drain["removedBy"] == "pause" and run["deadline"] == deadline, run
    [pause] = run["pauses"]
    assert pause.get("resumedAt") is None
    removals = [e.message for e in events_for(k8s, namespace, NAME) if e.reason == "DrainRemoved"]
    assert any(f"in node {drained} removed: pause" in message for message in removals), removals

    # While paused, nothing is evicted even once the budget allows it, and the node stays schedulable.
    open_budget(k8s, namespace, 2)
    unchanged_for(
        5.0,
        lambda: (
            nodes.cordoned(drained),
            len(nodes.pods_on(drained, namespace)),
            [(k["uid"], k["result"]) for k in run_of(status_of(k8s, namespace, NAME))["kills"]],
        ),
        "the paused drain",
    )

    assert cli(control_plane, "resume", NAME, "-n", namespace) == 0
    wait_for(lambda: nodes.cordoned(drained), timeout=10, what=f"node {drained} cordoned again after the resume")
    assert nodes.mark(drained) == mark, "the same run's mark: its end uncordons it"
    wait_for(lambda: not nodes.pods_on(drained, namespace), timeout=30, what=f"every checkout pod off {drained}")
    run = run_of(status_of(k8s, namespace, NAME))
    [pause] = run["pauses"]
    evicted = [k for k in run["kills"] if k["result"] == "Killed"]
    assert len(evicted) == 2 and all(moment(k["at"]) >= moment(pause["resumedAt"]) for k in evicted), run["kills"]
    again = run["faults"][1]
    assert again["name"] == drained and again["state"] == "Active" and again["container"].endswith("-p1"), run

    status = wait_for_phase(k8s, namespace, NAME, "Completed", timeout=90)
    run = status["lastRun"]
    assert run["deadline"] == deadline, "a pause never moves the deadline"
    assert [(f["name"], f["state"], f["removedBy"]) for f in run["faults"]] == [
        (drained, "Removed", "pause"),
        (drained, "Removed", "deadline"),
    ], run["faults"]
    assert not nodes.cordoned(drained) and nodes.mark(drained) is None
    assert len(nodes.pods_on(spare, namespace)) == 2
    capsys.readouterr()
    assert cli(control_plane, "report", NAME, "-n", namespace) == 0
    report = capsys.readouterr().out
    for cause in ("pause", "deadline"):
        assert f"removed from node {drained} by {cause}" in report, report


def test_a_pause_while_the_operator_is_down_uncordons_when_it_starts_a_restart_cordons_nothing_and_an_abort_leaves_nothing_cordoned(  # noqa: E501
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    drain_operator: Callable[[], OperatorProcess],  # noqa: F811
    namespace: str,
    nodes: Nodes,  # noqa: F811
) -> None:
    drained, _ = node_held_by_a_budget(k8s, namespace, nodes)  # a drain would evict them once it opens
    operator = drain_operator()

    apply_yaml(control_plane, with_duration(EXAMPLE, "5m"), namespace)
    drained_and_held(k8s, namespace, nodes, drained, 2)
    operator.kill()  # SIGKILL: nothing of the operator is left to act on the pause
    assert cli(control_plane, "pause", NAME, "-n", namespace, "--no-wait") == 0
    assert nodes.cordoned(drained)

    operator = drain_operator()
    wait_for(
        lambda: not nodes.cordoned(drained),
        timeout=30,
        what=f"node {drained} uncordoned by the restarted operator",
        describe=operator.log_tail,
    )
    run = removal_recorded(k8s, namespace, "the pause's removal recorded")
    assert run["faults"][0]["removedBy"] == "pause" and len(run["pauses"]) == 1, run

    # Killed and started again while paused, with the budget open: it neither cordons nor evicts.
    open_budget(k8s, namespace, 2)
    operator.kill()
    operator = drain_operator()
    unchanged_for(
        6.0,
        lambda: (nodes.cordoned(drained), nodes.mark(drained), len(nodes.pods_on(drained, namespace))),
        "the node of the paused drain after the restart",
    )
    status = status_of(k8s, namespace, NAME)
    assert status["phase"] == "Running" and [f["state"] for f in run_of(status)["faults"]] == ["Removed"], status

    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev",
        "v1alpha1",
        namespace,
        "chaosexperiments",
        NAME,
        {"metadata": {"annotations": {ABORT_ANNOTATION: "game day over"}}},
    )
    status = wait_for_phase(k8s, namespace, NAME, "Aborted", timeout=30)
    [pause] = status["lastRun"]["pauses"]
    assert pause.get("resumedAt") is None and "the run ended while paused" in pause["message"], pause
    assert not nodes.cordoned(drained) and nodes.mark(drained) is None
    assert len(nodes.pods_on(drained, namespace)) == 2


def test_the_standby_uncordons_a_drain_paused_while_the_leader_is_dead(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],  # noqa: F811
    failover_namespace: str,  # noqa: F811
    namespace: str,
    nodes: Nodes,  # noqa: F811
) -> None:
    """Two `chaosguard run --leader-elect` replicas with a 30 s Lease (test_failover's): the standby takes the
    node's cordon out itself while the Lease still names the dead leader; once it leads, it records both."""
    drained, _ = node_held_by_a_budget(k8s, namespace, nodes)
    leader, standby = two_replicas(k8s, long_lease_replicas, failover_namespace)
    apply_yaml(control_plane, with_duration(EXAMPLE, "2m"), namespace)
    drained_and_held(k8s, namespace, nodes, drained, 2)

    leader.process.kill()
    started = time.monotonic()
    assert cli(control_plane, "pause", NAME, "-n", namespace, "--no-wait") == 0
    wait_for(
        lambda: not nodes.cordoned(drained),
        timeout=DEFAULT_GUARD_INTERVAL + 1,
        interval=0.05,
        what=f"node {drained} uncordoned by the standby",
        describe=lambda: "the standby's log ends:\n" + standby.process.log_tail(),
    )
    print(f"pause with the leader dead -> drained node uncordoned by the standby: {time.monotonic() - started:.2f}s")
    assert lease_spec(k8s, failover_namespace)["holder"] == leader.identity, "the standby did it, not a new leader"
    assert nodes.mark(drained) is None

    wait_for_holder(k8s, failover_namespace, {standby.identity}, timeout=LEASE_DURATION + 15)
    run = removal_recorded(k8s, namespace, "the new leader to record the pause and the removal")
    assert run["faults"][0]["removedBy"].startswith("pause"), run["faults"]
    assert not nodes.cordoned(drained) and len(nodes.pods_on(drained, namespace)) == 2
