"""Every replica guards every running run: the operator's own failure never leaves a fault unwatched.

Two `chaosguard run --leader-elect` processes on the local control plane with a real Prometheus. The
Lease here lasts 30 s, far longer than any abort may take, so "the run was aborted while the Lease
still named the dead leader" shows that the standby aborted it on its own guard, without waiting to
take over. The session's operator is stopped for these tests and started again afterwards.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaosguard.runtime.driverbase import SAMPLE_BATCH_SECONDS
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    events_for,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, prometheus_available
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace
from tests.integration.test_leader_election import (
    Replica,
    both_ready,
    election,
    lease_spec,
    replica_starter,
    wait_for_holder,
)
from tests.integration.test_operator_latency import ephemeral
from tests.integration.test_operator_slo import guarded, healthy, prometheus, target  # noqa: F401 (fixtures)
from tests.support.slis import sli_of, trend_of

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.prometheus,
    pytest.mark.skipif(not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)"),
]

LEASE_DURATION, RENEW_DEADLINE, RENEW_PERIOD, RETRY_PERIOD = 30, 20, 2, 1


@pytest.fixture
def failover_namespace(k8s: client.ApiClient) -> Iterator[str]:
    name = create_namespace(k8s, "chaosguard-failover")
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


@pytest.fixture
def long_lease_replicas(
    chaos_operator: OperatorProcess, chaosguard_crds: ControlPlane, failover_namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], Replica]]:
    timings = election(LEASE_DURATION, RENEW_DEADLINE, RENEW_PERIOD, RETRY_PERIOD)
    with replica_starter(chaos_operator, chaosguard_crds, failover_namespace, tmp_path, timings) as start:
        yield start


def two_replicas(k8s: client.ApiClient, start: Callable[[str], Replica], namespace: str) -> tuple[Replica, Replica]:
    a, b = start("replica-a"), start("replica-b")
    holder = wait_for_holder(k8s, namespace, {a.identity, b.identity}, timeout=60)
    leader, standby = (a, b) if holder == a.identity else (b, a)
    wait_for(lambda: both_ready(leader, standby), timeout=60, what="the leader and the standby to be ready")
    return leader, standby


def killed_since(status: dict[str, Any], moment: datetime) -> list[dict[str, Any]]:
    run = status.get("lastRun") or {}
    return [
        kill
        for kill in run.get("kills", [])
        if kill["result"] == "Killed" and datetime.fromisoformat(kill["at"]) >= moment
    ]


def test_the_standby_aborts_a_breaching_run_when_the_leader_dies_at_the_breach(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],
    failover_namespace: str,
    healthy: str,  # noqa: F811
    target: MetricsTarget,  # noqa: F811
    prometheus: PrometheusServer,  # noqa: F811
    isolated_policies: list[str],
) -> None:
    shop = healthy
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    leader, standby = two_replicas(k8s, long_lease_replicas, failover_namespace)

    apply_yaml(control_plane, guarded("failover", shop, prometheus, duration="2m", interval="2s"), shop)
    wait_for(
        lambda: int((status_of(k8s, shop, "failover").get("currentRun") or {}).get("killsTotal", 0)) >= 1,
        timeout=60,
        what="a first kill",
    )
    # The node under the leader dies as the SLI breaches: no graceful stop, no Lease release.
    breached_at = datetime.now(UTC)
    leader.process.kill()
    target.set_error_ratio(0.5, app=shop)

    status = wait_for_phase(k8s, shop, "failover", "Aborted", timeout=LEASE_DURATION / 2)
    # The Lease still names the dead leader: the standby did not wait for it to expire.
    assert lease_spec(k8s, failover_namespace)["holder"] == leader.identity
    run = status["lastRun"]
    assert run["reason"] == "SLIBreached" and run["abort"]["condition"] == "error-ratio", run
    assert not killed_since(status, breached_at), run["kills"]
    aborts = [r for r in standby.log_records() if r.get("run") == run["id"] and r["message"].startswith("SLIBreached")]
    assert aborts, standby.process.log_tail()
    reasons = [event.reason for event in events_for(k8s, shop, "failover")]
    assert reasons.count("SLIBreached") == 1, reasons

    # The standby takes over later, and the aborted run stays aborted: nothing more is killed.
    wait_for_holder(k8s, failover_namespace, {standby.identity}, timeout=LEASE_DURATION + 15)
    time_of_takeover = datetime.now(UTC)
    wait_for(lambda: standby.readiness()[1].get("leader") is True, timeout=15, what="the new leader to say so")
    later = status_of(k8s, shop, "failover")
    assert later["phase"] == "Aborted" and later["lastRun"]["id"] == run["id"], later
    assert not killed_since(later, time_of_takeover)


BURST = 12  # more breaching runs at once than the leader writes at once: the standby's burst grace


def test_the_standby_aborts_a_burst_of_breaching_runs_when_the_leader_dies_at_the_breach(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],
    failover_namespace: str,
    healthy: str,  # noqa: F811
    target: MetricsTarget,  # noqa: F811
    prometheus: PrometheusServer,  # noqa: F811
    isolated_policies: list[str],
) -> None:
    """A standby waits longer for a leader facing a burst of aborts, and on while it sees the leader end
    runs: a leader dead at the breach still has every run of the burst ended by the standby, at once."""
    shop = healthy
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    isolated_policies.append(f"cap-{shop}")
    leader, standby = two_replicas(k8s, long_lease_replicas, failover_namespace)
    names = [f"burst-{index:02d}" for index in range(BURST)]
    for name in names:
        apply_yaml(control_plane, guarded(name, shop, prometheus, duration="2m", interval="2s"), shop)
    for name in names:
        wait_for_phase(k8s, shop, name, "Running", timeout=60)

    breached_at = datetime.now(UTC)
    leader.process.kill()
    target.set_error_ratio(0.5, app=shop)

    for name in names:
        status = wait_for_phase(k8s, shop, name, "Aborted", timeout=LEASE_DURATION / 2)
        run = status["lastRun"]
        assert run["reason"] == "SLIBreached", run
        assert not killed_since(status, breached_at), run["kills"]
        # Its Event follows the burst's writes: at most one, from the standby.
        wait_for_event(k8s, shop, name, "SLIBreached", timeout=10)
        assert [e.reason for e in events_for(k8s, shop, name)].count("SLIBreached") == 1
    assert lease_spec(k8s, failover_namespace)["holder"] == leader.identity
    ended_by_standby = {r.get("experiment") for r in standby.log_records() if r["message"].startswith("SLIBreached")}
    assert ended_by_standby == {f"{shop}/{name}" for name in names}, standby.process.log_tail()


def test_two_replicas_aborting_one_run_leave_one_record_and_one_clean_up_per_fault(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],
    failover_namespace: str,
    healthy: str,  # noqa: F811
    target: MetricsTarget,  # noqa: F811
    prometheus: PrometheusServer,  # noqa: F811
) -> None:
    shop = healthy
    leader, standby = two_replicas(k8s, long_lease_replicas, failover_namespace)
    manifest = (
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: both-abort}\n"
        "spec:\n  action: latency\n  latency: {delay: 150ms}\n"
        "  target: {selector: {matchLabels: {app: checkout}}, mode: fixed, value: 2}\n  duration: 2m\n"
        "  steadyState:\n"
        f"    prometheus: {{url: {prometheus.url}, timeout: 500ms}}\n"
        "    interval: 1s\n"
        "    conditions:\n"
        "      - name: error-ratio\n"
        f'        query: demo_error_ratio{{app="{shop}"}}\n'
        '        operator: "<"\n'
        "        threshold: 0.05\n"
    )
    apply_yaml(control_plane, manifest, shop)

    def active() -> list[dict[str, Any]]:
        run = status_of(k8s, shop, "both-abort").get("currentRun") or {}
        return [fault for fault in run.get("faults", []) if fault["state"] == "Active"]

    faults = wait_for(lambda: len(found := active()) == 2 and found, timeout=60, what="two active latency faults")
    # Both replicas are alive and guard the run at the same 1 s interval: both see the breach.
    target.set_error_ratio(0.5, app=shop)
    status = wait_for_phase(k8s, shop, "both-abort", "Aborted", timeout=30)
    run = status["lastRun"]
    assert [entry["id"] for entry in status["history"]] == [run["id"]]
    assert [f["state"] for f in run["faults"]] == ["Removed", "Removed"], run["faults"]
    reasons = [event.reason for event in events_for(k8s, shop, "both-abort")]
    assert reasons.count("SLIBreached") == 1, reasons
    by_pod = ephemeral(k8s, shop)
    for fault in faults:
        cleaners = [c["name"] for c in by_pod[fault["uid"]] if c["name"].startswith("chaosguard-clear")]
        assert len(cleaners) == 1, by_pod[fault["uid"]]
    for replica in (leader, standby):
        errors = [r for r in replica.log_records() if r.get("levelname") == "ERROR" or "Traceback" in r["message"]]
        assert not errors, errors


def last_verdicts(replica: Replica, key: str) -> float | None:
    """The replica's chaosguard_guard_last_verdict_timestamp_seconds for one run (None: not guarding it,
    or the replica is gone)."""
    try:
        text = replica.process.metrics()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("chaosguard_guard_last_verdict_timestamp_seconds{") and f'experiment="{key}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_rolling_update_never_leaves_a_guarded_run_without_a_tick_for_longer_than_its_interval(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],
    failover_namespace: str,
    healthy: str,  # noqa: F811
    prometheus: PrometheusServer,  # noqa: F811
) -> None:
    """A rolling update of two replicas, as the Deployment does it (maxUnavailable 0, maxSurge 1): a new
    replica starts and guards before an old one gets SIGTERM, the leader first. The run's guard ticks, as
    every live replica reports them, show no pause longer than the guard interval + 1 s; the run's record in
    status goes on under the new leader, without a hole in its trend."""
    shop, key = healthy, f"{healthy}/rolling"
    old_leader, old_standby = two_replicas(k8s, long_lease_replicas, failover_namespace)
    apply_yaml(control_plane, guarded("rolling", shop, prometheus, duration="90s", interval="30s"), shop)
    wait_for_phase(k8s, shop, "rolling", "Running", timeout=60)
    with TickWatch(key) as ticks:
        ticks.add(old_leader)
        ticks.add(old_standby)
        rolling_update(k8s, shop, key, ticks, old_leader, old_standby, long_lease_replicas, failover_namespace)


def rolling_update(
    k8s: client.ApiClient,
    shop: str,
    key: str,
    ticks: TickWatch,
    old_leader: Replica,
    old_standby: Replica,
    long_lease_replicas: Callable[[str], Replica],
    failover_namespace: str,
) -> None:
    wait_for(lambda: len(ticks.times()) >= 3, timeout=30, what="the first guard ticks")
    update_began = datetime.now(UTC)
    stops: list[tuple[datetime, datetime]] = []  # (SIGTERM sent, the process gone)
    for old, name in ((old_leader, "replica-c"), (old_standby, "replica-d")):
        new = long_lease_replicas(name)
        ticks.add(new)
        wait_for(
            lambda new=new: new.readiness()[0] == 200 and last_verdict(new, key) is not None,
            timeout=60,
            what=f"{name} to be ready and guarding the run",
        )
        sent = datetime.now(UTC)
        old.process.stop()  # SIGTERM, as the kubelet sends it once the new pod is Ready
        stops.append((sent, datetime.now(UTC)))
    update_ended = datetime.now(UTC)
    wait_for(
        lambda: lease_spec(k8s, failover_namespace)["holder"] in {"replica-c", "replica-d"},
        timeout=30,
        what="a new replica to lead",
    )
    wait_for(
        lambda: (at := latest_sample(k8s, shop)) is not None and at > update_ended + timedelta(seconds=3),
        timeout=30,
        what="the new leader to record samples from after the update",
    )
    times = ticks.times()
    window = [t for t in times if update_began - timedelta(seconds=3) <= t <= update_ended + timedelta(seconds=3)]
    assert window and window[0] <= update_began and window[-1] >= update_ended, (update_began, update_ended, times)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(window)]
    # The gaps across each stop (from the last tick before SIGTERM to the first one after the process was
    # gone, a tick of any replica in between counting) are the hand-over's own. Elsewhere a gap only measures
    # how late ticks ran on a busy machine (a new replica's start-up takes a core for seconds), which
    # chaosguard_guard_tick_lateness_seconds reports.
    across = [longest_gap(window, sent, gone) for sent, gone in stops]
    took = (update_ended - update_began).total_seconds()
    print(
        f"\n# rolling update ({took:.1f} s): {len(window)} guard ticks; across each replica's stop "
        f"{', '.join(f'{gap:.2f}' for gap in across)} s; longest gap anywhere {max(gaps):.2f} s"
    )
    assert max(across) <= 1.0 + 1.0, [t.isoformat() for t in window]  # the run's guard interval (1 s) + 1 s
    # The record in status goes on across each hand-over too: the new leader merges its own samples into it.
    # What the old leader took since its last write (up to SAMPLE_BATCH_SECONDS, plus that write's latency
    # on a busy machine) dies with it when the new leader started guarding later than that (the old standby
    # has them, but only merges them if it leads); the trend's points are `step` apart, so a gap may grow by
    # a step.
    run = status_of(k8s, shop, "rolling")["currentRun"]
    points, step = trend_of(run, "error-ratio"), sli_of(run, "error-ratio")["trend"]["step"]
    assert points and all(point.status == "Holding" for point in points), points
    recorded = [point.at for point in points]
    across_record = [longest_gap(recorded, sent, gone) for sent, gone in stops]
    print(f"# the record's trend: step {step} s; across each stop {across_record} s")
    assert max(across_record) <= SAMPLE_BATCH_SECONDS + 2.0 + step, (stops, [t.isoformat() for t in recorded])
    assert status_of(k8s, shop, "rolling")["phase"] == "Running"


def longest_gap(times: list[datetime], sent: datetime, gone: datetime) -> float:
    """The longest pause between consecutive `times` from the last one before `sent` to the first after `gone`."""
    first, last = max(t for t in times if t <= sent), min(t for t in times if t > gone)
    span = [t for t in times if first <= t <= last]
    return max((later - earlier).total_seconds() for earlier, later in itertools.pairwise(span))


def latest_sample(k8s: client.ApiClient, shop: str) -> datetime | None:
    """When the run's record in status last took an SLI sample (the leader writes it)."""
    at = sli_of(status_of(k8s, shop, "rolling").get("currentRun") or {}, "error-ratio").get("at")
    return datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None


class TickWatch:
    """Every guard tick of one run that a live replica judged: each replica's
    chaosguard_guard_last_verdict_timestamp_seconds, read every 0.1 s by a thread of its own (a replica
    that is stopping may hold a read for seconds; it must not hold up the others). A tick's value stays
    there for a whole interval (1 s), so no tick of a replica that answers is missed."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._seen: set[float] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, replica: Replica) -> None:
        thread = threading.Thread(target=self._watch, args=(replica,), name=f"ticks of {replica.identity}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def __enter__(self) -> TickWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _watch(self, replica: Replica) -> None:
        while not self._stop.is_set():
            at = last_verdict(replica, self.key)
            if at is not None:
                self._seen.add(at)
            self._stop.wait(0.1)

    def times(self) -> list[datetime]:
        return sorted(datetime.fromtimestamp(at, UTC) for at in list(self._seen))


def last_verdict(replica: Replica, key: str) -> float | None:
    """The replica's chaosguard_guard_last_verdict_timestamp_seconds for one run (None: not guarding it)."""
    try:
        text = replica.process.metrics()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("chaosguard_guard_last_verdict_timestamp_seconds{") and f'experiment="{key}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None
