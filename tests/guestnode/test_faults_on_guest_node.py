"""The network faults end to end on a real kubelet whose kernel has netem (the QEMU guest's node),
through `kubectl apply` of the shipped examples: the ephemeral container from the injector image
puts the fault in the client pod, and busybox's ping in that pod measures what it does.

The examples are aimed at the test's pods (namespace, target selector) and at the server pod's
address instead of the examples' database network (destinationCIDRs instead of ports: ICMP, which
the pod can time by itself, has no port). The latency example also asks for 100 ms without jitter,
the figure this test checks. The rest of each example is as shipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from localcluster import guestpods
from localcluster.guestpods import Kubectl, Pair
from localcluster.operator import OperatorProcess
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals
from localcluster.wait import wait_for
from tests.guestnode.conftest import GuestCluster

DELAY_MS = 100.0
DELAY_TOLERANCE_MS = 10.0
LOSS_PERCENT = 30.0
LOSS_TOLERANCE_POINTS = 7.0
GUARD_INTERVAL_S = 1.0
TCG_DEADLINE_BOUND_S = 6.0  # from the injector's deadline to the RTT at baseline, in the emulated guest
TCG_RESTORE_BOUND_S = 30.0  # from the abort decision to the RTT at baseline, in the emulated guest
CLIENT = {"selector": {"matchLabels": {"app": "client"}}, "mode": "one"}
# The first test also waits for the guest to boot and its node to join (minutes under TCG on a busy
# machine: README's figures), and each one for pods and ephemeral containers at TCG's pace.
pytestmark = pytest.mark.timeout(1800)


def latency_example(pair: Pair, *, duration: str, steady_state: Mapping[str, Any] | None = None) -> str:
    return guestpods.example(
        "latency-port.yaml",
        target=CLIENT,
        latency={"delay": f"{DELAY_MS:.0f}ms", "destinationCIDRs": [f"{pair.server_ip}/32"]},
        duration=duration,
        steadyState=steady_state,
    )


def baseline_ms(kubectl: Kubectl, pair: Pair, pod: str) -> float:
    return guestpods.ping(kubectl, pair.namespace, pod, pair.server_ip, count=21).median_ms


def delayed(kubectl: Kubectl, pair: Pair, pod: str, baseline: float) -> float:
    """The median RTT once the delay is in (the fault is Active once the API took the injector)."""
    return wait_for(
        lambda: (
            (ms := guestpods.ping(kubectl, pair.namespace, pod, pair.server_ip, count=5).median_ms)
            > baseline + DELAY_MS / 2
            and ms
        ),
        timeout=120,
        interval=0.5,
        what=f"pings from {pod} to slow down",
    )


@pytest.mark.usefixtures("operator")
def test_latency_adds_100ms_between_two_pods_and_an_sli_breach_takes_it_out_within_an_interval(
    guest_cluster: GuestCluster,
    kubectl: Kubectl,
    pair: Pair,
    sli: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    namespace = pair.namespace
    before = {pod: baseline_ms(kubectl, pair, pod) for pod in pair.clients}
    sli.set_error_ratio(0.001, app=namespace)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{namespace}"}}', equals(0.001))
    guarded = {
        "prometheus": {"url": prometheus.url, "timeout": "500ms"},
        "interval": f"{GUARD_INTERVAL_S:.0f}s",
        "onUnavailable": "abort",
        "recovery": {"timeout": "30s"},
        "conditions": [
            {
                "name": "error-ratio",
                "query": f'demo_error_ratio{{app="{namespace}"}}',
                "operator": "<",
                "threshold": 0.05,
            }
        ],
    }
    name = "checkout-db-latency"
    kubectl("apply", "-n", namespace, "-f", "-", input=latency_example(pair, duration="2m", steady_state=guarded))
    target = guestpods.active_fault(kubectl, namespace, name)["name"]
    delayed(kubectl, pair, target, before[target])
    during = guestpods.ping(kubectl, pair.namespace, target, pair.server_ip, count=31)
    added = during.median_ms - before[target]
    print(f"RTT {target} -> server: {before[target]:.2f} ms without, {during.median_ms:.2f} ms with; added {added:.2f}")
    assert added == pytest.approx(DELAY_MS, abs=DELAY_TOLERANCE_MS), (before, during)
    # A bystander pod's address is not delayed: the fault is the server's /32 only.
    other = guestpods.ping(kubectl, namespace, target, pair.bystander_ip, count=5).median_ms
    assert other < before[target] + DELAY_TOLERANCE_MS, other

    stream = guestpods.ping_stream(guest_cluster.kubectl_argv(), namespace, target, pair.server_ip, interval=0.1)
    try:
        wait_for(lambda: len(stream.replies) >= 5, timeout=60, what="the ping stream's first replies")
        breached_at = time.time()
        sli.set_error_ratio(0.5, app=namespace)
        status = guestpods.ended(kubectl, namespace, name, timeout=120)
        assert status["phase"] == "Aborted", yaml.safe_dump(status)[:3000]
        run = status["lastRun"]
        assert run["reason"] == "SLIBreached", yaml.safe_dump(run)[:3000]
        decided_at = guestpods.instant(run["abort"]["at"])
        threshold = before[target] + DELAY_TOLERANCE_MS
        restored = stream.first_reply_below(threshold, after=breached_at, timeout=60)
    finally:
        stream.stop()
    arrived, _seq, rtt_ms = restored
    back_at = arrived - rtt_ms / 1000
    slow_after = [r for r in stream.replies if r[0] > arrived and r[2] >= threshold]
    print(
        f"breach set at 0; abort decided at {decided_at - breached_at:+.2f} s; "
        f"RTT back at baseline at {back_at - breached_at:+.2f} s ({back_at - decided_at:.2f} s after the decision)"
    )
    (fault,) = run["faults"]
    assert fault["state"] == "Removed" and fault["removedBy"].startswith("SLI guard: SLIBreached"), fault
    assert "(clear container " in fault["removedBy"], fault
    cleaner = fault["removedBy"].split("(clear container ")[-1].rstrip(")")
    cleaner_started = guestpods.ephemeral_started_at(kubectl, namespace, target, cleaner)
    print(f"clean-up container {cleaner} started at {cleaner_started - breached_at:+.0f} s (kubelet, to the second)")
    # The operator's part: the breach is acted on within one guard interval (+1 s for Prometheus's scrape).
    assert decided_at - breached_at <= GUARD_INTERVAL_S + 1.0, (breached_at, decided_at)
    # The node's part: a clean-up container starts and runs `clear`. On a real node that takes under
    # a second (shared/notes/real-node.md: an ephemeral container runs 0.67 s after it is added);
    # under TCG on a busy machine it took 9.8 s (README, "The guest node"), so the bound here is TCG's.
    assert back_at - decided_at <= TCG_RESTORE_BOUND_S, (decided_at, back_at)
    assert not slow_after, slow_after
    assert "netem" not in guestpods.qdiscs_in_pod(kubectl, namespace, target)
    guestpods.settled(kubectl, namespace, target)


def test_with_the_operator_gone_the_injector_removes_the_delay_at_its_deadline(
    guest_cluster: GuestCluster, kubectl: Kubectl, pair: Pair, operator: OperatorProcess
) -> None:
    namespace = pair.namespace
    name = "checkout-db-latency"
    guestpods.delete_experiment(kubectl, namespace, name)
    before = {pod: baseline_ms(kubectl, pair, pod) for pod in pair.clients}
    kubectl("apply", "-n", namespace, "-f", "-", input=latency_example(pair, duration="45s"))
    fault = guestpods.active_fault(kubectl, namespace, name)
    target = fault["name"]
    delayed(kubectl, pair, target, before[target])
    operator.kill()  # SIGKILL: nothing of the operator's runs any more
    try:
        # The injector is told the run's deadline rounded up to the second (its `--deadline-at`).
        deadline = math.ceil(guestpods.instant(fault["deadline"]))
        stream = guestpods.ping_stream(guest_cluster.kubectl_argv(), namespace, target, pair.server_ip, interval=0.2)
        try:
            threshold = before[target] + DELAY_TOLERANCE_MS
            restored = stream.first_reply_below(threshold, after=0, timeout=deadline - time.time() + 60)
        finally:
            stream.stop()
        arrived, _seq, rtt_ms = restored
        back_at = arrived - rtt_ms / 1000
        slow = [r for r in stream.replies if r[2] >= threshold]
        removed = guestpods.log_line_at(kubectl, namespace, target, fault["container"], "chaosguard-netem: removed:")
        print(
            f"deadline at 0; the injector's `removed:` line at {removed - deadline:+.2f} s (the node's clock); "
            f"RTT back at baseline at {back_at - deadline:+.2f} s; {len(slow)} slow replies before"
        )
        assert slow, "the delay was gone before the ping stream started"
        # Never before the deadline (0.5 s: the two machines' clocks); after it, the injector sleeps
        # whole seconds (up to 1 s late by design) and runs tc under TCG (README, "The guest node").
        assert -0.5 <= back_at - deadline <= TCG_DEADLINE_BOUND_S, (deadline, back_at)
        assert "netem" not in guestpods.qdiscs_in_pod(kubectl, namespace, target)
    finally:
        operator.start()
    status = guestpods.ended(kubectl, namespace, name, timeout=120)
    assert status["phase"] == "Completed", yaml.safe_dump(status)[:3000]
    (record,) = status["lastRun"]["faults"]
    assert record["state"] == "Removed" and "deadline" in record["removedBy"], record
    guestpods.settled(kubectl, namespace, target)


@pytest.mark.usefixtures("operator", "network_actions_allowed")
def test_the_loss_example_drops_30_percent_of_the_packets_to_its_cidr(kubectl: Kubectl, pair: Pair) -> None:
    namespace = pair.namespace
    name = "checkout-payments-loss"
    shipped = yaml.safe_load((guestpods.EXAMPLES / "network-loss.yaml").read_text())["spec"]["network"]
    assert shipped["loss"] == LOSS_PERCENT
    # As shipped, without lossCorrelation: the kernel's correlated loss (netem's get_crandom, an AR(1)
    # blend of uniform draws) narrows the draws around their mean, so `loss 30% 25%` drops far fewer
    # than 30 % of the packets: 17.0 % of 600 here (README, "The guest node").
    assert "lossCorrelation" not in shipped
    aimed = guestpods.example(
        "network-loss.yaml", target=CLIENT, network={**shipped, "destinationCIDRs": [f"{pair.server_ip}/32"]}
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=aimed)
    target = guestpods.active_fault(kubectl, namespace, name)["name"]
    wait_for(
        lambda: "netem" in guestpods.qdiscs_in_pod(kubectl, namespace, target),
        timeout=120,
        interval=0.5,
        what="the loss qdisc in the pod",
    )
    pings = guestpods.ping(kubectl, namespace, target, pair.server_ip, count=600, interval=0.02)
    bystander = guestpods.ping(kubectl, namespace, target, pair.bystander_ip, count=50, interval=0.02)
    # Still in place after the pings (nothing took it out while they ran).
    assert "netem" in guestpods.qdiscs_in_pod(kubectl, namespace, target)
    guestpods.delete_experiment(kubectl, namespace, name)
    print(f"loss to the server: {pings.loss_percent:.1f} % of {pings.sent}; to a bystander {bystander.loss_percent} %")
    assert pings.loss_percent == pytest.approx(LOSS_PERCENT, abs=LOSS_TOLERANCE_POINTS), pings.sent
    assert bystander.loss_percent == 0, bystander


@pytest.mark.usefixtures("operator", "network_actions_allowed")
def test_the_partition_example_cuts_exactly_its_cidr_and_port(kubectl: Kubectl, pair: Pair) -> None:
    namespace = pair.namespace
    name = "checkout-db-partition"
    client = pair.clients[0]
    paths = {
        "server:8080": (pair.server_ip, guestpods.SERVER_PORT),
        "server:8081": (pair.server_ip, guestpods.OTHER_PORT),
        "bystander:8080": (pair.bystander_ip, guestpods.SERVER_PORT),
    }

    def answers() -> dict[str, bool]:
        return {k: guestpods.http_answers(kubectl, namespace, client, ip, port) for k, (ip, port) in paths.items()}

    wait_for(lambda: all(answers().values()), timeout=60, interval=0.5, what="every path to answer")
    shipped = yaml.safe_load((guestpods.EXAMPLES / "partition.yaml").read_text())["spec"]["partition"]
    partition = {**shipped, "destinationCIDRs": [f"{pair.server_ip}/32"], "ports": [guestpods.SERVER_PORT]}
    # The client whose paths are checked is the one the selector picks.
    kubectl("label", "pod", "-n", namespace, client, "partitioned=yes", "--overwrite")
    target = {"selector": {"matchLabels": {"app": "client", "partitioned": "yes"}}, "mode": "one"}
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=guestpods.example("partition.yaml", target=target, partition=partition),
    )
    assert guestpods.active_fault(kubectl, namespace, name)["name"] == client
    during = wait_for(
        lambda: (seen := answers())["server:8080"] is False and seen,
        timeout=120,
        interval=0.5,
        what="server:8080 to be cut off",
    )
    assert during == {"server:8080": False, "server:8081": True, "bystander:8080": True}, during
    guestpods.delete_experiment(kubectl, namespace, name)
    wait_for(lambda: all(answers().values()), timeout=60, interval=0.5, what="every path to answer again")
