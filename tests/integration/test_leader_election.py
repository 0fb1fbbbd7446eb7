"""Two replicas, one leader: `chaosguard run --leader-elect` on the local control plane.

Two operator processes compete for the Lease chaosguard-leader; exactly one holds it and drives the
experiments (kills counted once); both say ready; the standby takes over when the leader is killed
(within a lease duration and two retry periods) or steps down on SIGTERM (at once); a leader that
finds another holder exits at once. The session's operator is stopped for these tests, so that only
the replicas under test drive experiments, and started again afterwards.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    _free_port,
    apply_yaml,
    create_policy,
    events_for,
    ready_pods,
    scoped_policy,
    wait_for_phase,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace

pytestmark = pytest.mark.controlplane

LEASE = "chaosguard-leader"
LEASE_DURATION, RENEW_DEADLINE, RENEW_PERIOD, RETRY_PERIOD = 6, 4, 2, 1


def election(lease_duration: int, renew_deadline: int, renew_period: int, retry_period: int) -> list[str]:
    return [
        "--leader-elect",
        f"--leader-election-lease-duration={lease_duration}",
        f"--leader-election-renew-deadline={renew_deadline}",
        f"--leader-election-renew-period={renew_period}",
        f"--leader-election-retry-period={retry_period}",
        "--log-format=json",
    ]


ELECTION = election(LEASE_DURATION, RENEW_DEADLINE, RENEW_PERIOD, RETRY_PERIOD)


@dataclass
class Replica:
    identity: str
    process: OperatorProcess
    readiness_port: int

    def readiness(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.readiness_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), json.loads(error.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def exit_code(self) -> int | None:
        assert self.process.process is not None
        return self.process.process.poll()


@pytest.fixture
def lease_namespace(k8s: client.ApiClient) -> Iterator[str]:
    name = create_namespace(k8s, "chaosguard-system")
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


@contextlib.contextmanager
def replica_starter(
    chaos_operator: OperatorProcess, crds: ControlPlane, namespace: str, logs: Path, election: list[str]
) -> Iterator[Callable[[str], Replica]]:
    """Starts `chaosguard run --leader-elect` replicas with the Lease in `namespace`; the session's operator
    is stopped meanwhile, so that only the replicas under test drive experiments."""
    chaos_operator.stop()
    started: list[Replica] = []

    def start(identity: str) -> Replica:
        port = _free_port()
        args = [*election, f"--leader-election-identity={identity}", f"--readiness=http://127.0.0.1:{port}/readyz"]
        env = {"CHAOSGUARD_NAMESPACE": namespace}
        process = OperatorProcess(crds.kubeconfig, logs / f"{identity}.log", env, args=args)
        replica = Replica(identity, process, port)
        started.append(replica)
        process.start()
        return replica

    try:
        yield start
    finally:
        for replica in started:
            replica.process.stop()
        chaos_operator.start()


@pytest.fixture
def replicas(
    chaos_operator: OperatorProcess, chaosguard_crds: ControlPlane, lease_namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], Replica]]:
    with replica_starter(chaos_operator, chaosguard_crds, lease_namespace, tmp_path, ELECTION) as start:
        yield start


def lease_spec(k8s: client.ApiClient, namespace: str) -> dict[str, Any]:
    try:
        lease = client.CoordinationV1Api(k8s).read_namespaced_lease(LEASE, namespace)
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    return {
        "holder": lease.spec.holder_identity or "",
        "transitions": lease.spec.lease_transitions or 0,
        "duration": lease.spec.lease_duration_seconds,
    }


def wait_for_holder(k8s: client.ApiClient, namespace: str, among: set[str], timeout: float) -> str:
    holder: str = wait_for(
        lambda: (spec := lease_spec(k8s, namespace)).get("holder") in among and spec["holder"],
        timeout=timeout,
        interval=0.1,
        what=f"the Lease {namespace}/{LEASE} to be held by one of {sorted(among)}",
        describe=lambda: str(lease_spec(k8s, namespace)),
    )
    return holder


def pod_kill(name: str, duration: str = "3s", interval: str | None = None) -> str:
    lines = [
        "apiVersion: chaosguard.dev/v1alpha1",
        "kind: ChaosExperiment",
        f"metadata: {{name: {name}}}",
        "spec:",
        "  action: pod-kill",
        "  podKill: {gracePeriodSeconds: 1}",
        "  target:",
        "    selector: {matchLabels: {app: checkout}}",
        "    mode: fixed",
        "    value: 2",
        f"  duration: {duration}",
        *([f"  interval: {interval}"] if interval else []),
    ]
    return "\n".join(lines) + "\n"


def checkout_uids(k8s: client.ApiClient, namespace: str) -> set[str]:
    pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="app=checkout").items
    return {pod.metadata.uid for pod in pods if pod.metadata.deletion_timestamp is None}


def killed(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [k for k in status["lastRun"].get("kills", []) if k["result"] == "Killed"]


def leader_and_standby(replicas: list[Replica], holder: str) -> tuple[Replica, Replica]:
    (leader,) = [r for r in replicas if r.identity == holder]
    (standby,) = [r for r in replicas if r.identity != holder]
    return leader, standby


def both_ready(leader: Replica, standby: Replica) -> bool:
    (code_l, body_l), (code_s, body_s) = leader.readiness(), standby.readiness()
    return code_l == 200 and body_l.get("leader") is True and code_s == 200 and body_s.get("leader") is False


# --------------------------------------------------------------------------- the tests


def test_two_replicas_one_leader_and_every_kill_happens_once(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    replicas: Callable[[str], Replica],
    lease_namespace: str,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    a, b = replicas("replica-a"), replicas("replica-b")
    holder = wait_for_holder(k8s, lease_namespace, {a.identity, b.identity}, timeout=30)
    leader, standby = leader_and_standby([a, b], holder)
    # Both are ready (a rolling update must go on), only one leads; the standby answers liveness too.
    wait_for(lambda: both_ready(leader, standby), timeout=15, what="the leader and the standby to be ready")
    assert standby.process._healthy()

    before = checkout_uids(k8s, shop)
    apply_yaml(control_plane, pod_kill("kill-two"), shop)
    status = wait_for_phase(k8s, shop, "kill-two", "Completed", timeout=90)

    kills = killed(status)
    assert len(kills) == 2 and status["lastRun"]["killsTotal"] == 2, status["lastRun"]
    assert len({k["uid"] for k in kills}) == 2
    # Exactly two of the original pods are gone: nobody killed a third.
    wait_for(lambda: len(ready_pods(k8s, shop, "checkout")) == 5, timeout=60, what="5 Ready checkout pods")
    assert len(before - checkout_uids(k8s, shop)) == 2
    reasons = [event.reason for event in events_for(k8s, shop, "kill-two")]
    assert reasons.count("PodKilled") == 2 and reasons.count("RunStarted") == 1, reasons
    assert lease_spec(k8s, lease_namespace)["holder"] == leader.identity  # it never changed hands

    # The structured logs: the leader's lines about the run carry the experiment and the run id.
    run_id = status["lastRun"]["id"]
    lines = [r for r in leader.log_records() if r.get("experiment") == f"{shop}/kill-two"]
    assert lines, leader.process.log_tail()
    started = [r for r in lines if r["message"].startswith("RunStarted")]
    assert len(started) == 1 and started[0]["run"] == run_id, started
    assert started[0]["object"]["name"] == "kill-two" and started[0]["object"]["namespace"] == shop
    assert {r["run"] for r in lines if r["message"].startswith("PodKilled")} == {run_id}
    assert not [r for r in standby.log_records() if r.get("experiment")], "the standby drove the experiment"


def test_the_standby_takes_over_when_the_leader_is_killed(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    replicas: Callable[[str], Replica],
    lease_namespace: str,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    a, b = replicas("replica-a"), replicas("replica-b")
    holder = wait_for_holder(k8s, lease_namespace, {a.identity, b.identity}, timeout=30)
    leader, standby = leader_and_standby([a, b], holder)
    wait_for(lambda: both_ready(leader, standby), timeout=15, what="the leader and the standby to be ready")
    transitions = lease_spec(k8s, lease_namespace)["transitions"]

    killed_at = time.monotonic()
    leader.process.kill()  # SIGKILL: no release, the lease must expire
    wait_for_holder(k8s, lease_namespace, {standby.identity}, timeout=LEASE_DURATION + 2 * RETRY_PERIOD + 10)
    takeover = time.monotonic() - killed_at
    print(f"\nBENCH leader-takeover-after-sigkill {takeover:.2f} s (lease {LEASE_DURATION} s, retry {RETRY_PERIOD} s)")
    # The last renewal was at most a renew period before the kill; the standby counts a lease duration
    # from when it saw that renewal (up to a retry period later), and looks every retry period.
    assert LEASE_DURATION - RENEW_PERIOD <= takeover <= LEASE_DURATION + 2 * RETRY_PERIOD + 1, takeover
    assert lease_spec(k8s, lease_namespace)["transitions"] == transitions + 1
    wait_for(lambda: standby.readiness()[1].get("leader") is True, timeout=10, what="the new leader to say so")

    before = checkout_uids(k8s, shop)
    apply_yaml(control_plane, pod_kill("after-takeover"), shop)
    status = wait_for_phase(k8s, shop, "after-takeover", "Completed", timeout=90)
    assert len(killed(status)) == 2, status["lastRun"]
    wait_for(lambda: len(ready_pods(k8s, shop, "checkout")) == 5, timeout=60, what="5 Ready checkout pods")
    assert len(before - checkout_uids(k8s, shop)) == 2
    assert any(r.get("run") == status["lastRun"]["id"] for r in standby.log_records())


def test_sigterm_stops_the_leader_cleanly_and_hands_over_at_once(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    replicas: Callable[[str], Replica],
    lease_namespace: str,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    a, b = replicas("replica-a"), replicas("replica-b")
    holder = wait_for_holder(k8s, lease_namespace, {a.identity, b.identity}, timeout=30)
    leader, standby = leader_and_standby([a, b], holder)
    wait_for(lambda: both_ready(leader, standby), timeout=15, what="the leader and the standby to be ready")

    # A run in progress (one kill every 4 s for 20 s) when the leader is told to stop.
    apply_yaml(control_plane, pod_kill("rolling", duration="20s", interval="4s"), shop)
    wait_for_phase(k8s, shop, "rolling", "Running", timeout=30)

    stopped_at = time.monotonic()
    leader.process.stop()  # SIGTERM, as the kubelet sends it
    assert leader.exit_code() == 0, leader.process.log_tail()
    wait_for_holder(k8s, lease_namespace, {standby.identity}, timeout=LEASE_DURATION)
    handover = time.monotonic() - stopped_at
    print(f"\nBENCH leader-handover-after-sigterm {handover:.2f} s (lease {LEASE_DURATION} s)")
    # Released, not expired: the standby leads within a retry period of the release.
    assert handover < LEASE_DURATION - RENEW_PERIOD, handover
    log = leader.log_records()
    assert any(r["message"].startswith("released the lease") for r in log), leader.process.log_tail()
    # kopf stopped the experiment's daemon within its cancellation timeout: nothing left orphaned, and
    # the process was gone well before the kubelet's 30 s grace period would end.
    assert not [r for r in log if "did not exit in time" in r["message"]], log[-20:]
    assert handover < 10, handover

    # The new leader resumes the run from the experiment's status and finishes it.
    status = wait_for_phase(k8s, shop, "rolling", "Completed", timeout=90)
    kills = killed(status)
    assert len({k["uid"] for k in kills}) == len(kills), "a pod was killed twice"
    per_round = [sum(k["round"] == r for k in kills) for r in {k["round"] for k in kills}]
    assert kills and max(per_round) <= 2, f"a round killed more than its 2 pods: {kills}"
    assert any(r.get("run") == status["lastRun"]["id"] for r in standby.log_records())


def test_a_leader_that_finds_another_holder_exits_at_once(
    k8s: client.ApiClient, replicas: Callable[[str], Replica], lease_namespace: str
) -> None:
    only = replicas("replica-a")
    wait_for_holder(k8s, lease_namespace, {only.identity}, timeout=30)
    # Someone else writes the Lease (as a replica on the far side of a network partition would once
    # this one's lease expired there): the leader must stop acting at once.
    api = client.CoordinationV1Api(k8s)
    lease = api.read_namespaced_lease(LEASE, lease_namespace)
    lease.spec.holder_identity = "intruder"
    api.replace_namespaced_lease(LEASE, lease_namespace, lease)
    taken_at = time.monotonic()
    code = wait_for(
        lambda: only.exit_code() is not None,
        timeout=RENEW_PERIOD + RENEW_DEADLINE + 5,
        what="the leader to exit",
        describe=only.process.log_tail,
    )
    assert code and only.exit_code() == 3, only.process.log_tail()  # leader.EXIT_LOST_LEASE
    assert time.monotonic() - taken_at <= RENEW_PERIOD + RETRY_PERIOD + 1
    assert any(r["message"].startswith("lost the leader lease") for r in only.log_records())
