"""container-restart on the local control plane: `kubectl apply` of the example adds exactly one signaller,
aimed at the named container, to exactly the chosen pods, under the policy's cap; the kubelet's reports
(written here into the kwok pods' status, as a kubelet would: kwok runs no container) settle each restart
as done or failed with its reason; pods that would not bring the container back are refused; an abort
leaves nothing behind. The signaller itself runs on the real node: tests/e2e/test_container_restart.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaosguard.decisions.container_restart import ACT_WITHIN_SECONDS, SCRIPT, SignallerExit
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    delete_policy,
    scoped_policy,
    status_of,
    wait_for_phase,
)
from localcluster.wait import wait_for
from tests.integration.test_operator_latency import faults_of

pytestmark = pytest.mark.controlplane
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "container-restart.yaml"
NAME = "checkout-container-restart"


def restart_yaml(name: str, *, mode: str = "one", value: int | None = None, container: str = "app") -> str:
    how = f"mode: {mode}" + (f", value: {value}" if value is not None else "")
    return (
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosExperiment\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  action: container-restart\n"
        f"  containerRestart: {{container: {container}}}\n"
        f"  target: {{selector: {{matchLabels: {{app: checkout}}}}, {how}}}\n"
        "  duration: 2m\n"
    )


def faults_in(api: client.ApiClient, namespace: str, name: str, state: str, count: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (
            (f := [x for x in faults_of(status_of(api, namespace, name)) if x["state"] == state])
            and len(f) == count
            and f
        ),
        timeout=30,
        what=f"{count} {state} container-restart records",
        describe=lambda: str(faults_of(status_of(api, namespace, name))),
    )


def pod_by_uid(api: client.ApiClient, namespace: str, uid: str) -> dict[str, Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    pod = next(p for p in pods if p.metadata.uid == uid)
    return dict(api.sanitize_for_serialization(pod))


def reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [e.reason for e in events if e.involved_object.name == name and e.involved_object.kind == "ChaosExperiment"]


def report_as_kubelet(
    api: client.ApiClient, pod: dict[str, Any], *, restarted: bool, signaller: dict[str, Any]
) -> None:
    """Writes what a kubelet would report after the signal: the container restarted (or not), and the
    signaller's own end."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    statuses = pod["status"]["containerStatuses"]
    if restarted:
        (app,) = statuses
        app["restartCount"] = app.get("restartCount", 0) + 1
        app["lastState"] = {"terminated": {"exitCode": 143, "reason": "Error", "startedAt": now, "finishedAt": now}}
        app["state"] = {"running": {"startedAt": now}}
    (name,) = [c["name"] for c in pod["spec"]["ephemeralContainers"]]
    ephemeral = [{"name": name, "image": "x", "imageID": "", "ready": False, "restartCount": 0, "state": signaller}]
    body = {"status": {"containerStatuses": statuses, "ephemeralContainerStatuses": ephemeral}}
    client.CoreV1Api(api).patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], body)


def test_the_example_adds_one_signaller_aimed_at_the_container_and_settles_the_restart_from_the_kubelet(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, EXAMPLE.read_text(), shop)
    (fault,) = faults_in(k8s, shop, NAME, "Active", 1)
    run_id = status_of(k8s, shop, NAME)["currentRun"]["id"]
    assert fault["targetContainer"] == "app" and fault["restartsBefore"] == 0, fault
    assert fault["container"] == f"chaosguard-container-restart-{run_id.lower()}"[:63], fault
    pods = client.CoreV1Api(k8s).list_namespaced_pod(shop, label_selector="app=checkout").items
    with_signaller = [p for p in pods if p.spec.ephemeral_containers]
    assert [p.metadata.uid for p in with_signaller] == [fault["uid"]]
    pod = pod_by_uid(k8s, shop, fault["uid"])
    (signaller,) = pod["spec"]["ephemeralContainers"]
    assert signaller["targetContainerName"] == "app"
    command = signaller["command"]
    assert command[:3] == ["sh", "-c", SCRIPT], command
    act_by, grace = int(command[4]), int(command[5])
    assert 0 <= act_by - time.time() <= ACT_WITHIN_SECONDS + 1, command
    assert grace == 1  # the pod's terminationGracePeriodSeconds (the kubelet's own wait before SIGKILL)
    # The pause pods name no uid: root with CAP_KILL alone (Pod Security baseline allows it, restricted refuses).
    context = signaller["securityContext"]
    assert context["capabilities"] == {"add": ["KILL"], "drop": ["ALL"]}, context
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False, context

    report_as_kubelet(k8s, pod, restarted=True, signaller={"terminated": {"exitCode": 137, "reason": "Error"}})
    (done,) = faults_in(k8s, shop, NAME, "Removed", 1)
    assert "restartCount 0 → 1" in done["message"] and "exit code 143" in done["message"], done
    assert done["removedBy"] == "the kubelet (container running again)", done
    assert pod_by_uid(k8s, shop, fault["uid"])["metadata"]["uid"] == fault["uid"]
    wait_for(lambda: "ContainerRestarted" in reasons(k8s, shop, NAME), timeout=15, what="a ContainerRestarted Event")
    assert {"ContainerRestartSignalled", "ContainerRestarted"} <= set(reasons(k8s, shop, NAME))
    assert status_of(k8s, shop, NAME)["phase"] == "Running"  # the run lasts its duration, guarded
    control_plane.kubectl("delete", "chaosexperiment", NAME, "-n", shop)


def test_the_cap_counts_a_pod_whose_container_is_restarting_as_down(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    # kwok runs no signaller, so every target stays Ready in the API: only the run's own restarts in flight
    # count against the cap of 40 % of 5 pods.
    create_policy(k8s, f"cap-{shop}", scoped_policy(shop, maxPercentage=40))
    try:
        apply_yaml(control_plane, restart_yaml("restart-all", mode="fixed", value=4), shop)
        wait_for(
            lambda: len(faults_of(status_of(k8s, shop, "restart-all"))) == 4,
            timeout=30,
            what="the four chosen pods tried",
            describe=lambda: str(faults_of(status_of(k8s, shop, "restart-all"))),
        )
        faults = faults_of(status_of(k8s, shop, "restart-all"))
        assert sorted(f["state"] for f in faults) == ["Active", "Active", "Failed", "Failed"], faults
        refused = [f["message"] for f in faults if f["state"] == "Failed"]
        assert all("REFUSED max-percentage" in m for m in refused), refused
        pods = client.CoreV1Api(k8s).list_namespaced_pod(shop, label_selector="app=checkout").items
        assert sum(1 for p in pods if p.spec.ephemeral_containers) == 2
    finally:
        delete_policy(k8s, f"cap-{shop}")
        control_plane.kubectl("delete", "chaosexperiment", "restart-all", "-n", shop)


def test_an_app_that_ignores_sigterm_fails_the_run_with_the_reason(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, restart_yaml("ignores"), shop)
    (fault,) = faults_in(k8s, shop, "ignores", "Active", 1)
    said = "not signalled: PID 1 (pause, uid 65535) has no SIGTERM handler, and the kernel delivers ..."
    ended = {"terminated": {"exitCode": int(SignallerExit.NO_HANDLER), "reason": "Error", "message": said}}
    report_as_kubelet(k8s, pod_by_uid(k8s, shop, fault["uid"]), restarted=False, signaller=ended)
    status = wait_for_phase(k8s, shop, "ignores", "Failed", timeout=30)
    assert status["lastRun"]["reason"] == "RestartFailed", status
    (failed,) = faults_of(status)
    assert failed["state"] == "Failed", failed
    assert failed["message"].startswith("not restarted: the app ignores SIGTERM (PID 1 has no handler for it)"), failed
    assert "(signaller exit 11)" in failed["message"] and "no SIGTERM handler" in status["message"], status
    assert "ContainerRestartFailed" in reasons(k8s, shop, "ignores")


def test_a_container_the_pod_lacks_is_refused_before_anything_is_added(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, restart_yaml("no-such", container="sidecar"), shop)
    status = wait_for_phase(k8s, shop, "no-such", "Failed", timeout=30)
    (failed,) = faults_of(status)
    assert "the pod has no container 'sidecar' (its containers: app)" in failed["message"], failed

    pods = client.CoreV1Api(k8s).list_namespaced_pod(shop).items
    assert not any(p.spec.ephemeral_containers for p in pods), "nothing was added to any pod"
    assert "ContainerRestartFailed" in reasons(k8s, shop, "no-such")
    # A pod whose restartPolicy is not Always is refused the same way, read from the pod right before acting
    # (tests/unit/test_container_restart.py): kwok completes a Job's pods, so none is Running here to target.


def test_an_abort_ends_the_run_and_leaves_nothing_to_take_out(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, restart_yaml("abort-me"), shop)
    (fault,) = faults_in(k8s, shop, "abort-me", "Active", 1)
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "abort-me",
        {"metadata": {"annotations": {"chaosguard.dev/abort": "checkout is paging"}}},
    )  # fmt: skip
    status = wait_for_phase(k8s, shop, "abort-me", "Aborted", timeout=30)
    (removed,) = faults_of(status)
    assert removed["state"] == "Removed" and "abort" in removed["removedBy"], removed
    assert "nothing to take out" in removed["message"], removed
    # No clean-up container: the signaller alone is in the pod, and nothing else is ever added.
    names = [c["name"] for c in pod_by_uid(k8s, shop, fault["uid"])["spec"]["ephemeralContainers"]]
    assert names == [fault["container"]], names
