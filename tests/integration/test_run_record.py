"""Status is a record, never an authority (issue 20, item 1), on the real API server with the operator
as a process.

mallory may get and patch `chaosexperiments/status` in the experiment's namespace (namespace-admin
roles with `chaosexperiments/*` grant it) but may not touch pods anywhere. She forges the status of
a Completed experiment, and the operator then restarts, as it does on every rollout or hand-over.
The run record it finds was not sealed by it, so it acts on nothing in it: no pod is killed, no
clean-up container goes into a pod the record names, and the run is ended with an Event saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_deployment,
    custom,
    events_for,
    experiment_yaml,
    status_of,
    wait_for_event,
    wait_for_phase,
    wait_for_ready_pods,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace
from tests.integration.test_operator_podkill import uids

pytestmark = pytest.mark.controlplane
GROUP, VERSION = "chaosguard.dev", "v1alpha1"


def grant_status_writer(k8s: client.ApiClient, namespace: str, user: str) -> None:
    """What `chaosexperiments/*` in a namespace-admin role gives: the status subresource, and no pods."""
    rbac = client.RbacAuthorizationV1Api(k8s)
    name = f"{user}-status-writer"
    rules = [
        {"apiGroups": [GROUP], "resources": ["chaosexperiments"], "verbs": ["get", "list"]},
        {"apiGroups": [GROUP], "resources": ["chaosexperiments/status"], "verbs": ["get", "patch", "update"]},
    ]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def forge_status(control_plane: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    """A merge patch of the status subresource, through kubectl, as mallory."""
    for verb in ("delete", "patch"):
        refused = control_plane.kubectl(
            "auth", "can-i", verb, "pods", "-n", namespace, user="mallory", check=False
        ).stdout.strip()
        assert refused == "no", f"mallory may {verb} pods in {namespace}: the test would prove nothing"
    control_plane.kubectl(
        "patch",
        "chaosexperiment",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        user="mallory",
    )


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def restart(operator: OperatorProcess) -> None:
    operator.stop()
    operator.start()


@pytest.fixture
def completed(k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str) -> str:
    """A pod-kill experiment that ran once (one kill) and Completed, its pods back at full strength."""
    apply_yaml(control_plane, experiment_yaml("game-day"), shop)
    status = wait_for_phase(k8s, shop, "game-day", "Completed", timeout=90)
    assert status["lastRun"]["killsTotal"] == 1
    wait_for_ready_pods(k8s, shop, "checkout", 5)
    grant_status_writer(k8s, shop, "mallory")
    return shop


def test_a_forged_running_status_kills_nothing_after_a_restart_and_the_run_is_ended(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, completed: str
) -> None:
    shop = completed
    before = uids(k8s, shop)
    runs_before = status_of(k8s, shop, "game-day")["runsTotal"]
    now = datetime.now(UTC)
    forged_run = {
        "id": "r9-forged",
        "phase": "Running",
        "trigger": "apply",
        "startedAt": stamp(now),
        "deadline": stamp(now + timedelta(minutes=5)),
        "nextRoundAt": stamp(now),
        "roundsDone": 0,
    }
    forge_status(control_plane, shop, "game-day", {"phase": "Running", "currentRun": forged_run})
    restart(chaos_operator)

    event = wait_for_event(k8s, shop, "game-day", "RunRecordUnverified", timeout=60)
    assert "run r9-forged was not resumed" in event.message
    assert "carries no seal: the operator did not write it" in event.message
    assert "Nothing was killed or injected for it" in event.message
    status = wait_for_phase(k8s, shop, "game-day", "Aborted")
    assert status.get("currentRun") is None
    assert status["lastRun"]["id"] == "r9-forged" and status["lastRun"]["reason"] == "RunRecordUnverified"
    assert status["runsTotal"] == runs_before
    assert uids(k8s, shop) == before, "a pod was killed for a run the operator never started"
    assert status["lastRun"].get("kills", []) == []
    assert not [e for e in events_for(k8s, shop, "game-day") if e.reason == "RunStarted" and "r9" in e.message]


@pytest.fixture
def bystander(k8s: client.ApiClient) -> Iterator[str]:
    """A namespace the experiment never targets (kube-system stands for it), with one pod in it."""
    name = create_namespace(k8s, "bystander")
    create_deployment(k8s, name, "db", 1)
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


def ephemeral_containers(k8s: client.ApiClient, namespace: str, name: str) -> list[str]:
    pod = client.CoreV1Api(k8s).read_namespaced_pod(name, namespace)
    return [c.name for c in pod.spec.ephemeral_containers or []]


def test_a_forged_fault_entry_never_sends_a_clean_up_container_into_another_namespace(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    completed: str,
    bystander: str,
) -> None:
    shop = completed
    victim = client.CoreV1Api(k8s).list_namespaced_pod(bystander).items[0]
    assert not ephemeral_containers(k8s, bystander, victim.metadata.name)
    last_run = dict(status_of(k8s, shop, "game-day")["lastRun"])
    last_run["faults"] = [
        {
            "namespace": bystander,
            "name": victim.metadata.name,
            "uid": victim.metadata.uid,
            "container": "chaosguard-latency-r1-forged",
            "state": "Active",
            "deadline": stamp(datetime.now(UTC) + timedelta(minutes=10)),
        }
    ]
    forge_status(control_plane, shop, "game-day", {"lastRun": last_run})  # the genuine seal, kept
    log_before = chaos_operator.log_path.read_text(errors="replace")
    restart(chaos_operator)

    # The restart's clean-up pass either adds a container to the victim (the attack) or declines.
    declined = f"not touching the fault recorded in pod {bystander}/{victim.metadata.name}"
    wait_for(
        lambda: (
            ephemeral_containers(k8s, bystander, victim.metadata.name)
            or declined in chaos_operator.log_path.read_text(errors="replace")[len(log_before) :]
        ),
        timeout=60,
        what="the restarted operator to judge the forged fault entry",
        describe=chaos_operator.log_tail,
    )
    assert not ephemeral_containers(k8s, bystander, victim.metadata.name)
    assert "does not verify" in chaos_operator.log_path.read_text(errors="replace")[len(log_before) :]

    # Deleting the experiment rolls back its faults: still none of the forged one.
    custom(k8s).delete_namespaced_custom_object(GROUP, VERSION, shop, "chaosexperiments", "game-day")
    wait_for(
        lambda: "game-day" not in {e["metadata"]["name"] for e in _experiments(k8s, shop)},
        timeout=60,
        what="the experiment to be deleted (its finalizer ran the roll-back)",
        describe=chaos_operator.log_tail,
    )
    assert not ephemeral_containers(k8s, bystander, victim.metadata.name)
    assert status_of_pod_uid(k8s, bystander, victim.metadata.name) == victim.metadata.uid


def _experiments(k8s: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = custom(k8s).list_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments")
    items: list[dict[str, Any]] = listed["items"]
    return items


def status_of_pod_uid(k8s: client.ApiClient, namespace: str, name: str) -> str:
    return str(client.CoreV1Api(k8s).read_namespaced_pod(name, namespace).metadata.uid)
