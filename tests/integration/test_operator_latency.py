"""The latency fault on the local control plane: `kubectl apply` of the example puts an ephemeral
injector with exactly the intended spec into exactly the selected pods, and every early end
(abort, deletion while the operator was down) takes it out. kwok pods have no kubelet, so the
`exec clear` path fails here and the fallback clean-up container is what the tests see; the
injector itself is tested with real tc netem in tests/netns/."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    experiment,
    scoped_policy,
    status_of,
    wait_for_phase,
)
from localcluster.realnode import injector_image
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPT = "/usr/local/bin/chaosguard-netem"


def latency_yaml(name: str, duration: str = "2m", mode: str = "fixed", value: int = 2) -> str:
    return (
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosExperiment\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  action: latency\n"
        "  latency: {delay: 150ms, jitter: 10ms, correlation: 25, ports: [5432], destinationCIDRs: [10.1.0.0/16]}\n"
        "  target: {selector: {matchLabels: {app: checkout}}, mode: " + mode + f", value: {value}}}\n"
        f"  duration: {duration}\n"
    )


def ephemeral(api: client.ApiClient, namespace: str) -> dict[str, list[dict[str, Any]]]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=checkout").items
    return {
        pod.metadata.uid: api.sanitize_for_serialization(pod.spec.ephemeral_containers or [])
        for pod in pods
        if pod.metadata.deletion_timestamp is None
    }


def faults_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    run = status.get("currentRun") or status.get("lastRun") or {}
    return list(run.get("faults", []))


def active_faults(api: client.ApiClient, namespace: str, name: str, count: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (
            (f := [x for x in faults_of(status_of(api, namespace, name)) if x["state"] == "Active"])
            and len(f) == count
            and f
        ),
        timeout=30,
        what=f"{count} active latency faults",
        describe=lambda: str(faults_of(status_of(api, namespace, name))),
    )


def test_the_example_injects_exactly_the_intended_container_into_exactly_the_chosen_pods(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, (EXAMPLES / "latency-port.yaml").read_text(), shop)
    faults = active_faults(k8s, shop, "checkout-db-latency", 2)  # 40 % of 5
    run_id = status_of(k8s, shop, "checkout-db-latency")["currentRun"]["id"]
    by_pod = ephemeral(k8s, shop)
    chosen = {f["uid"] for f in faults}
    assert {uid for uid, containers in by_pod.items() if containers} == chosen
    for uid in chosen:
        (container,) = by_pod[uid]
        command = container["command"]
        assert container["name"] == f"chaosguard-latency-{run_id.lower()}"
        assert command[:2] == [SCRIPT, "inject"]
        args = dict(zip(command[2::2], command[3::2], strict=False))
        assert args["--fault"] == "root qdisc ca05: prio with netem delay 200ms 20ms 25% on band ca05:4"
        assert [command[i + 1] for i, word in enumerate(command) if word == "--tc"][:2] == [
            "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
            "qdisc add parent ca05:4 handle ca06: netem delay 200ms 20ms 25%",
        ]
        # An absolute deadline (the run's end, unix seconds): an injector started late holds only until then.
        deadline = status_of(k8s, shop, "checkout-db-latency")["currentRun"]["deadline"]
        assert "--deadline-seconds" not in args
        assert (
            args["--effect"] == "delaying only egress to any destination, TCP/UDP ports 5432; other traffic unaffected"
        )
        assert 0 <= int(args["--deadline-at"]) - _unix(deadline) < 1
        assert 110 <= int(args["--deadline-at"]) - time.time() <= 121
        assert container["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
        assert container["securityContext"]["privileged"] is False
        # The injector image the operator was told (--injector-image), never the operator's own.
        assert (container["image"], container["imagePullPolicy"]) == (injector_image(), "IfNotPresent")
        assert {"name": "CHAOSGUARD_EXPERIMENT", "value": f"{shop}/checkout-db-latency"} in container["env"]
    control_plane.kubectl("delete", "chaosexperiment", "checkout-db-latency", "-n", shop)


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_the_run_end_clears_an_injector_that_never_reported_removing_its_fault(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    # kwok pods never run the injector: its state stays waiting, as on a node stuck pulling the image.
    # At the run's end nothing says the fault is out, so the operator must add the clear container
    # (as an abort does) and must not claim that the injector's own timer removed it.
    apply_yaml(control_plane, latency_yaml("ends", duration="6s", value=1), shop)
    (fault,) = active_faults(k8s, shop, "ends", 1)
    status = wait_for_phase(k8s, shop, "ends", "Completed", timeout=60)
    (removed,) = faults_of(status)
    assert removed["state"] == "Removed", removed
    assert "own timer" not in removed["removedBy"], removed
    assert removed["removedBy"].startswith("deadline (clear container chaosguard-clear"), removed
    containers = ephemeral(k8s, shop)[fault["uid"]]
    cleaners = [c for c in containers if c["name"].startswith("chaosguard-clear")]
    assert [c["command"] for c in cleaners] == [[SCRIPT, "clear"]], containers
    assert {c["image"] for c in containers} == {injector_image()}, containers


def report_injector(api: client.ApiClient, namespace: str, fault: dict[str, Any], state: dict[str, Any]) -> None:
    """Writes the kubelet's report of the fault's injector into the pod's status, as a kubelet would
    (kwok has none for ephemeral containers)."""
    status = {"name": fault["container"], "image": injector_image(), "imageID": "", "ready": False,
              "restartCount": 0, "state": state}  # fmt: skip
    client.CoreV1Api(api).patch_namespaced_pod_status(
        fault["name"], namespace, {"status": {"ephemeralContainerStatuses": [status]}}
    )


def test_the_run_end_trusts_the_injectors_own_timer_only_on_its_own_report_of_removal(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, latency_yaml("reported", duration="8s", value=2), shop)
    done, running = active_faults(k8s, shop, "reported", 2)
    removed_line = "removed: qdisc ca05: from eth0 (reason: deadline)"
    report_injector(k8s, shop, done, {"terminated": {"exitCode": 0, "reason": "Completed", "message": removed_line}})
    # Seen running, then killed mid-hold (OOM, SIGKILL) by the end: the qdisc may still be there.
    report_injector(k8s, shop, running, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    status = wait_for_phase(k8s, shop, "reported", "Completed", timeout=60)
    by_uid = {f["uid"]: f for f in faults_of(status)}
    confirmed, cleared = by_uid[done["uid"]], by_uid[running["uid"]]
    assert confirmed["state"] == "Removed" and confirmed["removedBy"] == "deadline (the injector's own timer)"
    assert removed_line in confirmed["message"], confirmed
    assert cleared["state"] == "Removed" and cleared["removedBy"].startswith("deadline (clear container"), cleared
    pods = ephemeral(k8s, shop)
    assert [c["name"] for c in pods[done["uid"]]] == [done["container"]]
    assert any(c["name"].startswith("chaosguard-clear") for c in pods[running["uid"]]), pods[running["uid"]]


def test_an_abort_takes_the_latency_out_at_once_with_the_fallback_clear(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, latency_yaml("abort-me"), shop)
    faults = active_faults(k8s, shop, "abort-me", 2)
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "abort-me",
        {"metadata": {"annotations": {"chaosguard.dev/abort": "checkout is paging"}}},
    )  # fmt: skip
    status = wait_for_phase(k8s, shop, "abort-me", "Aborted", timeout=30)
    assert status["lastRun"]["reason"] == "AbortRequested"
    removed = faults_of(status)
    assert [f["state"] for f in removed] == ["Removed", "Removed"], removed
    assert all("clear container" in f["removedBy"] and "abort on request" in f["removedBy"] for f in removed), removed
    by_pod = ephemeral(k8s, shop)
    for fault in faults:
        names = [c["name"] for c in by_pod[fault["uid"]]]
        cleaner = next(c for c in by_pod[fault["uid"]] if c["name"].startswith("chaosguard-clear"))
        assert len(names) == 2 and cleaner["command"] == [SCRIPT, "clear"]
        assert cleaner["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    wait_for(
        lambda: "chaosguard.dev/abort" not in (experiment(k8s, shop, "abort-me")["metadata"].get("annotations") or {}),
        timeout=15,
        what="the operator to clear the abort request",
    )


def test_deleting_an_experiment_while_the_operator_is_down_still_clears_its_faults(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, latency_yaml("orphan", mode="fixed", value=1), shop)
    (fault,) = active_faults(k8s, shop, "orphan", 1)
    chaos_operator.kill()
    control_plane.kubectl("delete", "chaosexperiment", "orphan", "-n", shop, "--wait=false")
    chaos_operator.start()
    wait_for(
        lambda: (
            not client.CustomObjectsApi(k8s).list_namespaced_custom_object(
                "chaosguard.dev", "v1alpha1", shop, "chaosexperiments"
            )["items"]
        ),
        timeout=30,
        what="the experiment to be gone once its faults are cleared",
    )
    names = [c["name"] for c in ephemeral(k8s, shop)[fault["uid"]]]
    assert any(name.startswith("chaosguard-clear") for name in names), names


def test_pod_security_that_forbids_net_admin_is_refused_before_anything_is_tried(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    client.CoreV1Api(k8s).patch_namespace(
        shop, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
    )
    apply_yaml(control_plane, latency_yaml("psa"), shop)
    status = wait_for_phase(k8s, shop, "psa", "Rejected", timeout=30)
    assert "REFUSED pod-security" in status["message"] and "NET_ADMIN" in status["message"]
    assert not any(ephemeral(k8s, shop).values())


def test_policy_caps_the_delay(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"slow-{shop}", scoped_policy(shop, maxLatency="100ms"))
    isolated_policies.append(f"slow-{shop}")
    apply_yaml(control_plane, latency_yaml("too-slow"), shop)
    status = wait_for_phase(k8s, shop, "too-slow", "Rejected", timeout=30)
    assert "REFUSED max-latency" in status["message"] and "100ms" in status["message"]


def test_a_restarted_operator_clears_faults_whose_experiment_vanished(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, latency_yaml("vanished", mode="fixed", value=1), shop)
    (fault,) = active_faults(k8s, shop, "vanished", 1)
    chaos_operator.kill()
    # Someone force-deletes the experiment while no operator runs: the finalizer is removed by hand.
    custom = client.CustomObjectsApi(k8s)
    custom.patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "vanished", {"metadata": {"finalizers": None}}
    )
    control_plane.kubectl("delete", "chaosexperiment", "vanished", "-n", shop, "--ignore-not-found")
    assert not ephemeral_clear_containers(k8s, shop, fault["uid"])
    chaos_operator.start()
    cleaners = wait_for(
        lambda: ephemeral_clear_containers(k8s, shop, fault["uid"]),
        timeout=30,
        what="the start-up sweep to clear the orphaned fault",
    )
    assert cleaners[0]["command"] == [SCRIPT, "clear"]
    assert {"name": "CHAOSGUARD_EXPERIMENT", "value": f"{shop}/vanished"} in cleaners[0]["env"]


def ephemeral_clear_containers(api: client.ApiClient, namespace: str, uid: str) -> list[dict[str, Any]]:
    return [c for c in ephemeral(api, namespace)[uid] if c["name"].startswith("chaosguard-clear")]
