"""The README's "first experiment", step by step with kubectl, exactly as a user types it.

One flow, two places: tests/e2e runs it against a kind cluster where the operator's image was
installed with deploy/overlays/kind (`make e2e-kind`, users' CI); tests/integration/
test_deploy_manifests.py runs it against the local control plane, with the operator running under
the ServiceAccount and ClusterRole of deploy/base. Only kubectl and the files in examples/ are used.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from localcluster.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EXPERIMENT = "checkout-pod-kill"  # examples/pod-kill-percent.yaml
WORKLOAD = "checkout"  # examples/shop-workload.yaml, 5 replicas
REPLICAS = 5
TERMINAL_PHASES = frozenset({"Completed", "Aborted", "Failed", "Rejected"})


class Kubectl(Protocol):
    """Runs kubectl with these arguments against one cluster; returns stdout, raises on failure."""

    def __call__(self, *args: str, input: str | None = None) -> str: ...


@dataclass(frozen=True)
class PodKillRun:
    namespace: str
    status: dict[str, Any]
    uids_before: frozenset[str]
    uids_after: frozenset[str]
    experiment_events: list[str]  # reasons of the Events on the ChaosExperiment
    workload_events: list[str]  # reasons of the Events on Deployment/checkout


def ready_pod_uids(kubectl: Kubectl, namespace: str) -> frozenset[str]:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"app={WORKLOAD}", "-o", "json"))["items"]
    return frozenset(
        pod["metadata"]["uid"]
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase") == "Running"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    )


def experiment_status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "chaosexperiment", EXPERIMENT, "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def event_reasons(kubectl: Kubectl, namespace: str, kind: str, name: str) -> list[str]:
    items = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    involved = [e for e in items if e["involvedObject"].get("kind") == kind and e["involvedObject"]["name"] == name]
    return [e["reason"] for e in sorted(involved, key=lambda e: e["metadata"]["creationTimestamp"])]


def full_strength(kubectl: Kubectl, namespace: str, timeout: float) -> frozenset[str]:
    kubectl("rollout", "status", "-n", namespace, f"deployment/{WORKLOAD}", f"--timeout={int(timeout)}s")

    def all_ready() -> frozenset[str]:
        uids = ready_pod_uids(kubectl, namespace)
        return uids if len(uids) == REPLICAS else frozenset()

    return wait_for(
        all_ready,
        timeout=timeout,
        what=f"{REPLICAS} Ready {WORKLOAD} pods in {namespace}",
        describe=lambda: f"{len(ready_pod_uids(kubectl, namespace))} Ready",
    )


def run_pod_kill_percent(kubectl: Kubectl, namespace: str, *, timeout: float = 180.0) -> PodKillRun:
    """Policy, opted-in namespace, workload, experiment; waits for the experiment to end."""
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "shop-workload.yaml"))
    before = full_strength(kubectl, namespace, timeout)

    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "pod-kill-percent.yaml"))

    def describe() -> str:
        reasons = event_reasons(kubectl, namespace, "ChaosExperiment", EXPERIMENT)
        return f"events {reasons}; status:\n{yaml.safe_dump(experiment_status(kubectl, namespace))[:4000]}"

    status = wait_for(
        lambda: (s := experiment_status(kubectl, namespace)).get("phase") in TERMINAL_PHASES and s,
        timeout=timeout,
        interval=1.0,
        what=f"ChaosExperiment {namespace}/{EXPERIMENT} to finish",
        describe=describe,
    )
    after = full_strength(kubectl, namespace, timeout) if status.get("phase") == "Completed" else frozenset()

    # kopf posts Events from a queue: give the last ones a moment to arrive, then take what is there.
    deadline = time.monotonic() + 30
    while True:
        experiment_events = event_reasons(kubectl, namespace, "ChaosExperiment", EXPERIMENT)
        workload_events = event_reasons(kubectl, namespace, "Deployment", WORKLOAD)
        settled = "RunCompleted" in experiment_events and workload_events.count("ChaosPodKilled") >= 2
        if settled or status.get("phase") != "Completed" or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return PodKillRun(namespace, status, before, after, experiment_events, workload_events)


def check_pod_kill_percent(run: PodKillRun) -> None:
    """What examples/pod-kill-percent.yaml promises under examples/policy-default.yaml."""
    status = run.status
    dump = yaml.safe_dump(status)[:4000]
    assert status.get("phase") == "Completed", f"the experiment ended {status.get('phase')}:\n{dump}"
    last_run = status["lastRun"]
    killed = [k for k in last_run.get("kills", []) if k["result"] == "Killed"]
    assert len(killed) == 2, f"40% of {REPLICAS} pods is 2 Killed:\n{dump}"
    assert last_run["killsTotal"] == 2, dump
    assert all(k["method"] == "eviction" for k in killed), dump
    assert {k["uid"] for k in killed} <= run.uids_before, "a killed pod was not one of the workload's"
    assert not {k["uid"] for k in killed} & run.uids_after, "a killed pod is still there"
    # Recorded for every kill. It is the kubelet's Ready time of the replacement (whole seconds), so on
    # kwok, whose replacements are Ready within the second of the kill, it may be 0; the real node's
    # e2e test checks it against the kubelet's own times.
    assert all(k.get("recoveredAfterSeconds") is not None for k in killed), f"recovery not recorded:\n{dump}"
    events = f"Events on the experiment: {run.experiment_events}; on the workload: {run.workload_events}"
    assert run.experiment_events.count("PodKilled") == 2, events
    assert "RunCompleted" in run.experiment_events, events
    assert run.workload_events.count("ChaosPodKilled") == 2, events
