"""The stress fault on the local control plane (simulated nodes, so no stressor ever runs here; it runs
for real in tests/e2e/test_stress.py): `kubectl apply` of the example puts exactly the intended
stressor into exactly the chosen pods of a namespace that enforces Pod Security restricted; the
policy caps refuse; a percentage is sized against each pod's memory limit and refused without one;
an abort adds the clean-up container that creates the stop file; the target's OOM kill is reported
as such; the kubelet's report that the stressor ended is trusted at the run's end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from chaosguard.decisions import stress
from chaosguard.runtime.faults.stress import holder_script
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    events_for,
    label_namespace,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
    wait_for_ready_pods,
)
from localcluster.wait import wait_for
from tests.integration.test_operator_latency import ephemeral, faults_of

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MI = 2**20
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_checkout(api: client.ApiClient, namespace: str, memory_limits: tuple[str | None, ...]) -> None:
    """5 checkout pods that Pod Security restricted admits, one container per memory limit (None: no limit),
    in a namespace that enforces restricted and allows stress."""
    label_namespace(
        api,
        namespace,
        {
            "chaosguard.dev/chaos": "allowed",
            "chaosguard.dev/test": namespace,
            "pod-security.kubernetes.io/enforce": "restricted",
        },
    )
    containers = [
        {
            "name": f"app{index}",
            "image": "registry.k8s.io/pause:3.10",
            "securityContext": RESTRICTED,
            "resources": {"limits": {"memory": limit}} if limit else {},
        }
        for index, limit in enumerate(memory_limits)
    ]
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": containers},
            },
        },
    }
    client.AppsV1Api(api).create_namespaced_deployment(namespace, cast(client.V1Deployment, body))
    wait_for_ready_pods(api, namespace, "checkout", 5)


@pytest.fixture
def stress_shop(k8s: client.ApiClient, namespace: str, isolated_policies: list[str]) -> str:
    restricted_checkout(k8s, namespace, ("128Mi", "64Mi"))
    create_policy(k8s, f"stress-{namespace}", scoped_policy(namespace, allowedActions=["stress"]))
    isolated_policies.append(f"stress-{namespace}")
    return namespace


def stress_yaml(name: str, block: str, duration: str = "2m", value: int = 1) -> str:
    return (
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosExperiment\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  action: stress\n  stress: {block}\n"
        f"  target: {{selector: {{matchLabels: {{app: checkout}}}}, mode: fixed, value: {value}}}\n"
        f"  duration: {duration}\n"
    )


def faults_in(api: client.ApiClient, namespace: str, name: str, count: int, state: str = "Active") -> list[Any]:
    return wait_for(
        lambda: (
            (f := [x for x in faults_of(status_of(api, namespace, name)) if x["state"] == state])
            and len(f) == count
            and f
        ),
        timeout=30,
        what=f"{count} {state} stress faults",
        describe=lambda: str(status_of(api, namespace, name)),
    )


def report(api: client.ApiClient, namespace: str, pod: str, **statuses: list[dict[str, Any]]) -> None:
    """Writes container reports into the pod's status, as a kubelet would (kwok has none of these)."""
    client.CoreV1Api(api).patch_namespaced_pod_status(pod, namespace, {"status": statuses})


def test_the_example_puts_an_unprivileged_stressor_into_the_chosen_pods_under_restricted(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, (EXAMPLES / "stress-cpu.yaml").read_text(), stress_shop)
    faults = faults_in(k8s, stress_shop, "checkout-cpu-stress", 2)  # 40 % of 5
    run = status_of(k8s, stress_shop, "checkout-cpu-stress")["currentRun"]
    by_pod = ephemeral(k8s, stress_shop)
    assert {uid for uid, containers in by_pod.items() if containers} == {f["uid"] for f in faults}
    for fault in faults:
        (container,) = by_pod[fault["uid"]]
        assert container["name"] == fault["container"] == f"chaosguard-stress-{run['id'].lower()}"
        assert fault["impairment"] == "stress cpu 2 x 80%"
        command = container["command"]
        assert command[:3] == ["sh", "-c", holder_script()]
        assert command[3:6] == [stress.PROG, command[4], stress.stop_file(fault["container"])]
        assert command[6:] == ["--", "--cpu", "2", "--cpu-load", "80"]
        assert 110 <= int(command[4]) - time.time() <= 121  # the run's absolute end
        security = container["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
        assert security["runAsUser"] == 65534 and security["allowPrivilegeEscalation"] is False
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    reasons = [e.reason for e in events_for(k8s, stress_shop, "checkout-cpu-stress")]
    assert reasons.count("StressInjected") == 2, reasons
    # The API server does enforce restricted here: the network injector's container is refused.
    root = {"name": "probe", "image": "x", "securityContext": {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}}
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(k8s).patch_namespaced_pod_ephemeralcontainers(
            faults[0]["name"], stress_shop, {"spec": {"ephemeralContainers": [root]}}
        )
    assert refused.value.status == 403 and "violates PodSecurity" in str(refused.value.body), refused.value
    control_plane.kubectl("delete", "chaosexperiment", "checkout-cpu-stress", "-n", stress_shop)


def test_an_abort_adds_the_clean_up_container_that_creates_the_stop_file(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, stress_yaml("abort-me", "{cpu: {workers: 1}}", value=2), stress_shop)
    faults = faults_in(k8s, stress_shop, "abort-me", 2)
    run_id = status_of(k8s, stress_shop, "abort-me")["currentRun"]["id"]
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", stress_shop, "chaosexperiments", "abort-me",
        {"metadata": {"annotations": {"chaosguard.dev/abort": "checkout is paging"}}},
    )  # fmt: skip
    status = wait_for_phase(k8s, stress_shop, "abort-me", "Aborted", timeout=30)
    removed = faults_of(status)
    assert [f["state"] for f in removed] == ["Removed", "Removed"], removed
    assert all("clear container" in f["removedBy"] and "stop file" in f["message"] for f in removed), removed
    by_pod = ephemeral(k8s, stress_shop)
    for fault in faults:
        assert len(by_pod[fault["uid"]]) == 2
        cleaner = next(c for c in by_pod[fault["uid"]] if c["name"] == f"chaosguard-clear1-{run_id.lower()}")
        assert cleaner["command"] == stress.clear_command(stress.stop_file(fault["container"]))
        assert cleaner["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    reasons = [e.reason for e in events_for(k8s, stress_shop, "abort-me")]
    assert reasons.count("StressRemoved") == 2, reasons


def test_policy_caps_the_load_and_the_memory(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    stress_shop: str,
    isolated_policies: list[str],
) -> None:
    create_policy(k8s, f"caps-{stress_shop}", scoped_policy(stress_shop, maxStressLoad=100, maxStressMemory="25%"))
    isolated_policies.append(f"caps-{stress_shop}")
    apply_yaml(control_plane, stress_yaml("too-hot", "{cpu: {workers: 2, load: 60}}"), stress_shop)
    status = wait_for_phase(k8s, stress_shop, "too-hot", "Rejected", timeout=30)
    assert "REFUSED max-stress-load" in status["message"] and "120% of one CPU" in status["message"], status
    apply_yaml(control_plane, stress_yaml("too-big", "{memory: {size: 50%}}"), stress_shop)
    status = wait_for_phase(k8s, stress_shop, "too-big", "Rejected", timeout=30)
    assert "REFUSED max-stress-memory" in status["message"], status
    # 100Mi against 25 % of the pod's 192Mi (48Mi) is judged per pod, right before the stressor goes in.
    apply_yaml(control_plane, stress_yaml("too-big-here", "{memory: {size: 100Mi}}"), stress_shop)
    status = wait_for_phase(k8s, stress_shop, "too-big-here", "Failed", timeout=30)
    (fault,) = faults_of(status)
    assert fault["state"] == "Failed" and "REFUSED max-stress-memory" in fault["message"], fault
    assert f"memory limit is {192 * MI} bytes" in fault["message"], fault
    assert not any(ephemeral(k8s, stress_shop).values())


def test_a_percentage_is_of_the_pods_memory_limit(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, stress_yaml("half", "{memory: {size: 50%}}"), stress_shop)
    (fault,) = faults_in(k8s, stress_shop, "half", 1)
    (container,) = ephemeral(k8s, stress_shop)[fault["uid"]]
    assert container["command"][-7:] == ["--vm", "1", "--vm-bytes", str(96 * MI), "--vm-keep", "--vm-hang", "0"]
    assert f"({96 * MI} bytes)" in fault["message"], fault
    control_plane.kubectl("delete", "chaosexperiment", "half", "-n", stress_shop)


def test_a_percentage_in_a_pod_without_a_limit_is_refused_with_the_field_and_the_fix(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    namespace: str,
    isolated_policies: list[str],
) -> None:
    restricted_checkout(k8s, namespace, ("128Mi", None))
    create_policy(k8s, f"stress-{namespace}", scoped_policy(namespace, allowedActions=["stress"]))
    isolated_policies.append(f"stress-{namespace}")
    apply_yaml(control_plane, stress_yaml("no-limit", "{memory: {size: 50%}}"), namespace)
    status = wait_for_phase(k8s, namespace, "no-limit", "Failed", timeout=30)
    (fault,) = faults_of(status)
    assert fault["state"] == "Failed", fault
    assert "REFUSED memory-limit-unknown" in fault["message"] and "spec.stress.memory.size 50%" in fault["message"]
    assert "give every container of the target pods a memory limit" in fault["message"], fault
    assert status["lastRun"]["reason"] == "InjectionFailed", status
    assert not any(ephemeral(k8s, namespace).values())


def test_the_targets_oom_kill_is_reported_as_such_and_the_stress_stays(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, stress_yaml("oom", "{memory: {size: 90%}}", duration="1m"), stress_shop)
    (fault,) = faults_in(k8s, stress_shop, "oom", 1)
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": _now(), "startedAt": _now()}}
    app = {"name": "app0", "image": "registry.k8s.io/pause:3.10", "imageID": "", "ready": True, "restartCount": 1,
           "state": {"running": {"startedAt": _now()}}, "lastState": oom}  # fmt: skip
    stressor = {"name": fault["container"], "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"running": {"startedAt": _now()}}}  # fmt: skip
    report(k8s, stress_shop, fault["name"], containerStatuses=[app], ephemeralContainerStatuses=[stressor])
    event = wait_for_event(k8s, stress_shop, "oom", "StressTargetOOMKilled")
    assert "app0 (OOMKilled at" in event.message and "restarts 1" in event.message, event.message
    (still,) = faults_of(status_of(k8s, stress_shop, "oom"))
    assert still["state"] == "Active" and "OOMKilled under the stress: app0" in still["message"], still
    assert "StressFailed" not in [e.reason for e in events_for(k8s, stress_shop, "oom")]
    control_plane.kubectl("delete", "chaosexperiment", "oom", "-n", stress_shop)


def test_the_run_end_trusts_the_stressors_own_report_that_it_ended(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, stress_yaml("ends", "{cpu: {workers: 1}}", duration="8s", value=2), stress_shop)
    done, silent = faults_in(k8s, stress_shop, "ends", 2)
    ended = "ended: the deadline passed (stress-ng exit 0)"
    stressor = {"name": done["container"], "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": ended}}}  # fmt: skip
    report(k8s, stress_shop, done["name"], ephemeralContainerStatuses=[stressor])
    status = wait_for_phase(k8s, stress_shop, "ends", "Completed", timeout=60)
    by_uid = {f["uid"]: f for f in faults_of(status)}
    assert by_uid[done["uid"]]["removedBy"] == "deadline (the stressor's own timer)", by_uid
    assert ended in by_uid[done["uid"]]["message"]
    assert by_uid[silent["uid"]]["removedBy"].startswith("deadline (clear container"), by_uid
    pods = ephemeral(k8s, stress_shop)
    assert [c["name"] for c in pods[done["uid"]]] == [done["container"]]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))


def test_why_a_stop_file_no_container_may_join_the_stressors_process_namespace(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    """A clean-up container cannot signal the stressor: the API server refuses an ephemeral container
    whose targetContainerName is another ephemeral container (only regular containers may be named)."""
    apply_yaml(control_plane, stress_yaml("pid", "{cpu: {workers: 1}}"), stress_shop)
    (fault,) = faults_in(k8s, stress_shop, "pid", 1)
    joiner = {
        "name": "joiner",
        "image": "x",
        "targetContainerName": fault["container"],
        "securityContext": RESTRICTED,
    }
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(k8s).patch_namespaced_pod_ephemeralcontainers(
            fault["name"], stress_shop, {"spec": {"ephemeralContainers": [joiner]}}
        )
    assert refused.value.status == 422 and "targetContainerName" in str(refused.value.body), refused.value.body
    control_plane.kubectl("delete", "chaosexperiment", "pid", "-n", stress_shop)


def test_a_restarted_operator_stops_a_stress_whose_experiment_vanished(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, stress_shop: str
) -> None:
    apply_yaml(control_plane, stress_yaml("vanished", "{cpu: {workers: 1}}"), stress_shop)
    (fault,) = faults_in(k8s, stress_shop, "vanished", 1)
    run_id = status_of(k8s, stress_shop, "vanished")["currentRun"]["id"]
    chaos_operator.kill()
    # Someone force-deletes the experiment while no operator runs: the finalizer is removed by hand.
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", stress_shop, "chaosexperiments", "vanished", {"metadata": {"finalizers": None}}
    )
    control_plane.kubectl("delete", "chaosexperiment", "vanished", "-n", stress_shop, "--ignore-not-found")
    chaos_operator.start()
    (cleaner,) = wait_for(
        lambda: [c for c in ephemeral(k8s, stress_shop)[fault["uid"]] if c["name"].startswith("chaosguard-clear")],
        timeout=30,
        what="the start-up sweep to stop the orphaned stress",
    )
    assert cleaner["command"] == stress.clear_command(stress.stop_file(fault["container"]))
    assert cleaner["name"] == f"chaosguard-clear1-{run_id.lower()}"
    assert cleaner["securityContext"]["capabilities"] == {"drop": ["ALL"]}
