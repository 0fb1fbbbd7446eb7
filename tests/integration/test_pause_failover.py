"""A pause while the leader is dead: the standby takes the run's faults out itself (a clean-up is idempotent
from any replica) within the guard interval + 1 s, while the Lease still names the dead leader; once it
leads, it records the pause and the removal. Two `chaosguard run --leader-elect` processes with a 30 s
Lease (test_failover's), on the local control plane with kwok-simulated pods."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import apply_yaml, status_of
from localcluster.wait import wait_for
from tests.integration.test_failover import LEASE_DURATION, failover_namespace, long_lease_replicas, two_replicas  # noqa: F401
from tests.integration.test_leader_election import Replica, lease_spec, wait_for_holder
from tests.integration.test_operator_latency import ephemeral, latency_yaml

pytestmark = pytest.mark.controlplane
DEFAULT_GUARD_INTERVAL = 5.0


def test_the_standby_takes_the_faults_out_of_a_run_paused_while_the_leader_is_dead(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    long_lease_replicas: Callable[[str], Replica],  # noqa: F811
    failover_namespace: str,  # noqa: F811
    shop: str,
) -> None:
    leader, standby = two_replicas(k8s, long_lease_replicas, failover_namespace)
    apply_yaml(control_plane, latency_yaml("paused-alone", duration="2m"), shop)

    def faults() -> list[dict[str, Any]]:
        return list((status_of(k8s, shop, "paused-alone").get("currentRun") or {}).get("faults", []))

    placed = wait_for(
        lambda: len(found := [f for f in faults() if f["state"] == "Active"]) == 2 and found,
        timeout=60,
        what="two active latency faults",
    )
    leader.process.kill()
    started = time.monotonic()
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "paused-alone", {"spec": {"paused": True}}
    )

    def cleaned() -> bool:
        by_pod = ephemeral(k8s, shop)
        return all(any(c["name"].startswith("chaosguard-clear") for c in by_pod[f["uid"]]) for f in placed)

    wait_for(cleaned, timeout=DEFAULT_GUARD_INTERVAL + 1, interval=0.05, what="a clean-up container in each pod")
    took = time.monotonic() - started
    print(f"pause with the leader dead -> every fault's clean-up added by the standby: {took:.2f}s")
    assert lease_spec(k8s, failover_namespace)["holder"] == leader.identity, "the standby did it, not a new leader"

    wait_for_holder(k8s, failover_namespace, {standby.identity}, timeout=LEASE_DURATION + 15)
    run = wait_for(
        lambda: (
            (r := status_of(k8s, shop, "paused-alone").get("currentRun") or {}).get("pauses")
            and all(f["state"] == "Removed" for f in r["faults"])
            and r
        ),
        timeout=30,
        what="the new leader to record the pause and the removal",
        describe=lambda: str(status_of(k8s, shop, "paused-alone").get("currentRun")),
    )
    assert all(f["removedBy"].startswith("pause (clear container") for f in run["faults"]), run["faults"]
    by_pod = ephemeral(k8s, shop)
    for fault in placed:
        cleaners = [c["name"] for c in by_pod[fault["uid"]] if c["name"].startswith("chaosguard-clear")]
        assert len(cleaners) == 1, by_pod[fault["uid"]]  # the leader's record reuses the standby's clean-up
    errors = [r for r in standby.log_records() if r.get("levelname") == "ERROR" or "Traceback" in r["message"]]
    assert not errors, errors
