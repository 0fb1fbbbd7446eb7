"""Abort latency while the leading replica dies: `make bench ONLY=failover_breach_to_aborted_p95`.

Two `chaosguard run --leader-elect` processes (the Helm chart's Lease timings: 15 s lease, 10 s renew
deadline, 5 s renew period, 2 s retry) on the local control plane, with a real Prometheus scraping a
metrics target every second. Per run: a pod-kill experiment guarded at a 1 s interval (one kill every
2 s) reaches Running; the leader is SIGKILLed (no graceful stop, no Lease release: a node failure)
and the run's error ratio flips to breaching at the same moment; a 20 ms poll of Prometheus's query
API stamps when the breaching value is first answered (the breach), and a 20 ms poll of the
experiment stamps when its status says Aborted. The killed replica is started again as a standby
before the next run, so every run has a leader to lose. Also printed: the pods killed after the
breach (goal 0), and how many runs were aborted while the Lease still named the dead leader.
"""

from __future__ import annotations

import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.abort_latency import EXPERIMENT, stamp_when
from bench.apply_to_kill import percentile
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    OperatorProcess,
    _free_port,
    create_deployment,
    install_crds,
    label_namespace,
    status_of,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals, instant_query
from localcluster.wait import wait_for

RUNS = 20
NAMESPACE = "bench"
LEASE = "chaosguard-leader"
ELECTION = ["--leader-elect", "--log-format=json"]  # the default timings: the chart's


def holder(api: client.ApiClient) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, "chaosguard-system")
    except client.exceptions.ApiException:
        return ""
    return str((lease.spec.holder_identity if lease.spec else "") or "")


def start_replica(plane: ControlPlane, workdir: Path, name: str, generation: int) -> OperatorProcess:
    # A restarted container is a new candidate (a new identity), as in a Deployment.
    identity = f"{name}-{generation}"
    port = _free_port()
    args = [*ELECTION, f"--leader-election-identity={identity}", f"--readiness=http://127.0.0.1:{port}/readyz"]
    env = {"CHAOSGUARD_NAMESPACE": "chaosguard-system"}
    return OperatorProcess(plane.kubeconfig, workdir / f"{identity}.log", env, args=args).start()


def kills_after(status: dict[str, Any], moment: datetime) -> int:
    run = status.get("lastRun") or {}
    return sum(1 for k in run.get("kills", []) if k["result"] == "Killed" and datetime.fromisoformat(k["at"]) >= moment)


def run() -> dict[str, tuple[float, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-failover-"))
    latencies: list[float] = []
    killed_after_breach = 0
    before_takeover = 0
    with (
        MetricsTarget() as target,
        PrometheusServer(workdir / "prometheus", [target]) as prometheus,
        ControlPlane(workdir / "cp", default_bin_dir()) as plane,
    ):
        install_crds(plane)
        api = plane.api_client()
        core = client.CoreV1Api(api)
        for name in ("chaosguard-system", NAMESPACE):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        label_namespace(api, NAMESPACE, {"chaosguard.dev/chaos": "allowed"})
        create_deployment(api, NAMESPACE, "checkout", 5)
        replicas = {f"{name}-0": start_replica(plane, workdir, name, 0) for name in ("replica-a", "replica-b")}
        try:
            for index in range(RUNS):
                leader = wait_for(lambda: holder(api) in replicas and holder(api), timeout=60, what="a leader")
                app, name = f"failover-{index}", f"failover-{index}"
                query = f'demo_error_ratio{{app="{app}"}}'
                target.set_error_ratio(0.001, app=app)
                prometheus.wait_for_value(query, equals(0.001))
                manifest = EXPERIMENT.format(name=name, url=prometheus.url, app=app).replace("30s", "2s")
                plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=manifest)
                wait_for_phase(api, NAMESPACE, name, "Running", timeout=60)
                breached_at = datetime.now(UTC)
                replicas[leader].kill()
                target.set_error_ratio(0.5, app=app)
                queryable = stamp_when(
                    lambda q=query: any(value == 0.5 for _, value in instant_query(prometheus.url, q)), 30
                )
                aborted = stamp_when(lambda n=name: status_of(api, NAMESPACE, n).get("phase") == "Aborted", 60)
                latencies.append(aborted - queryable)
                before_takeover += holder(api) == leader
                killed_after_breach += kills_after(status_of(api, NAMESPACE, name), breached_at)
                plane.kubectl("delete", "chaosexperiment", name, "-n", NAMESPACE)
                del replicas[leader]
                base = leader.rsplit("-", 1)[0]
                replicas[f"{base}-{index + 1}"] = start_replica(plane, workdir, base, index + 1)
        finally:
            for replica in replicas.values():
                replica.stop()
    print(
        f"# failover: {RUNS} runs, 2 replicas (lease 15 s), guard interval 1 s, leader SIGKILLed at the breach; "
        f"breach -> Aborted median {statistics.median(latencies):.3f}s, min {min(latencies):.3f}s, "
        f"max {max(latencies):.3f}s; aborted while the Lease still named the dead leader: {before_takeover}/{RUNS}; "
        f"pods killed after the breach: {killed_after_breach}"
    )
    return {
        "failover_breach_to_aborted_p50": (statistics.median(latencies), "s"),
        "failover_breach_to_aborted_p95": (percentile(latencies, 0.95), "s"),
        "failover_pods_killed_after_breach": (float(killed_after_breach), "pods"),
    }
