"""Issue 20's status attacks on the real node, through kubectl as the attacking user, with the operator
installed from its image by Helm (webhooks on).

mallory may get and patch `chaosexperiments/status` in the shop's namespace (what `chaosexperiments/*`
in a namespace-admin role grants) and nothing on pods. The installs' ValidatingAdmissionPolicy refuses
her status write and says why; with that policy lifted (a cluster older than 1.30, or the policy
deleted) she forges a Completed experiment's status,
and the operator restarts (`kubectl rollout restart`, as every rollout or hand-over does). The run
record is not the operator's, so nothing is killed, no clean-up container goes into a pod the
record names, the run is ended, and the Event says why.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localcluster.wait import wait_for
from tests.e2e.conftest import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, E2ECluster
from tests.e2e.test_webhooks import webhooks_enabled  # noqa: F401  (the fixture)
from tests.support.example_flow import EXAMPLES, Kubectl, event_reasons, full_strength, ready_pod_uids

EXPERIMENT = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: game-day}
spec:
  action: pod-kill
  podKill: {gracePeriodSeconds: 1}
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: 5s
"""


def status_writer(namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "mallory-status", "namespace": namespace},
                    "rules": [
                        {"apiGroups": ["chaosguard.dev"], "resources": ["chaosexperiments"], "verbs": ["get"]},
                        {
                            "apiGroups": ["chaosguard.dev"],
                            "resources": ["chaosexperiments/status"],
                            "verbs": ["get", "patch"],
                        },
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "mallory-status", "namespace": namespace},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mallory-status"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
                },
            ],
        }
    )


def as_mallory(e2e_cluster: E2ECluster, *args: str) -> str:
    assert e2e_cluster.plane is not None
    result = e2e_cluster.plane.kubectl(*args, user="mallory", check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "chaosexperiment", "game-day", "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def wait_for_webhooks(kubectl: Kubectl) -> None:
    """kopf registers the webhooks a moment after the operator starts: nothing is admitted unchecked before."""

    def registered() -> bool:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            items = json.loads(kubectl("get", kind, "-o", "json"))["items"]
            hooks = [
                hook
                for item in items
                if item["metadata"]["name"] == "chaosguard.dev"
                for hook in item["webhooks"] or []
            ]
            if not any("chaosapprovals" in str(hook.get("rules")) for hook in hooks):
                return False
        return True

    wait_for(registered, timeout=120, what="the operator to register its webhooks")


def restart_operator(kubectl: Kubectl) -> None:
    kubectl("rollout", "restart", "-n", OPERATOR_NAMESPACE, f"deployment/{OPERATOR_DEPLOYMENT}")
    kubectl("rollout", "status", "-n", OPERATOR_NAMESPACE, f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=300s")


@pytest.fixture
def completed(
    e2e_cluster: E2ECluster,
    kubectl: Kubectl,
    e2e_namespace: str,
    webhooks_enabled: None,  # noqa: F811
) -> Iterator[str]:
    """The shop (5 checkout pods) with a pod-kill experiment that ran once and Completed."""
    if not e2e_cluster.real_node:
        pytest.skip("mallory is a static-token user of the real node's control plane")
    wait_for_webhooks(kubectl)
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", str(EXAMPLES / "shop-workload.yaml"))
    full_strength(kubectl, e2e_namespace, 180)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=EXPERIMENT)
    wait_for(
        lambda: status(kubectl, e2e_namespace).get("phase") == "Completed",
        timeout=180,
        what="the experiment to complete",
        describe=lambda: str(status(kubectl, e2e_namespace)),
    )
    full_strength(kubectl, e2e_namespace, 180)
    kubectl("apply", "-f", "-", input=status_writer(e2e_namespace))
    assert e2e_cluster.plane is not None
    for verb in ("delete", "patch"):
        can = e2e_cluster.plane.kubectl("auth", "can-i", verb, "pods", "-n", e2e_namespace, user="mallory", check=False)
        assert can.stdout.strip() == "no", f"mallory may {verb} pods: the test would prove nothing"
    yield e2e_namespace


STATUS_POLICY = "chaosguard-status-writers"  # deploy/base/status-policy.yaml, the chart's copy


@contextlib.contextmanager
def status_policy_lifted(kubectl: Kubectl) -> Iterator[None]:
    """A cluster without the installs' ValidatingAdmissionPolicy (older than 1.30, or the policy deleted):
    its binding goes for the duration, and comes back as it was."""
    saved = json.loads(kubectl("get", "validatingadmissionpolicybinding", STATUS_POLICY, "-o", "json"))
    kubectl("delete", "validatingadmissionpolicybinding", STATUS_POLICY)
    try:
        yield
    finally:
        for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            saved["metadata"].pop(field, None)
        saved.pop("status", None)
        kubectl("create", "-f", "-", input=json.dumps(saved))


def forge(e2e_cluster: E2ECluster, kubectl: Kubectl, namespace: str, forged: dict[str, Any]) -> None:
    assert e2e_cluster.plane is not None
    plane = e2e_cluster.plane
    patch = ["patch", "chaosexperiment", "game-day", "-n", namespace, "--subresource=status", "--type=merge"]
    patch += ["-p", json.dumps({"status": forged})]
    # The first defence: the installs' ValidatingAdmissionPolicy refuses mallory's write, saying why.
    refused = plane.kubectl(*patch, user="mallory", check=False, timeout=120)
    assert refused.returncode != 0, f"mallory wrote the status: {refused.stdout}"
    assert f"ValidatingAdmissionPolicy '{STATUS_POLICY}'" in refused.stderr, refused.stderr
    assert "only the chaosguard operator" in refused.stderr and "not mallory" in refused.stderr, refused.stderr
    # The second: without the policy the write lands, and the operator must not act on it (the tests below).
    with status_policy_lifted(kubectl):
        # The API server drops the policy once its informer sees the binding gone (within a second or so).
        wait_for(
            lambda: plane.kubectl(*patch, user="mallory", check=False, timeout=120).returncode == 0,
            timeout=60,
            what="mallory's status write to land once the status policy is lifted",
        )


def test_a_forged_running_status_followed_by_a_restart_kills_nothing(
    e2e_cluster: E2ECluster, kubectl: Kubectl, completed: str
) -> None:
    namespace = completed
    before = ready_pod_uids(kubectl, namespace)
    now = datetime.now(UTC)
    run = {
        "id": "r9-forged",
        "phase": "Running",
        "startedAt": stamp(now),
        "deadline": stamp(now + timedelta(minutes=5)),
        "nextRoundAt": stamp(now),
    }
    forge(e2e_cluster, kubectl, namespace, {"phase": "Running", "currentRun": run})
    restart_operator(kubectl)

    def aborted() -> dict[str, Any]:
        now_status = status(kubectl, namespace)
        return now_status if now_status.get("phase") == "Aborted" else {}

    ended = wait_for(
        aborted,
        timeout=120,
        what="the operator to end the forged run",
        describe=lambda: str(event_reasons(kubectl, namespace, "ChaosExperiment", "game-day")),
    )
    assert ended["lastRun"]["reason"] == "RunRecordUnverified" and "carries no seal" in ended["lastRun"]["message"]
    assert "RunRecordUnverified" in event_reasons(kubectl, namespace, "ChaosExperiment", "game-day")
    assert ready_pod_uids(kubectl, namespace) == before, "a pod was killed for a run the operator never started"
    assert event_reasons(kubectl, namespace, "Deployment", "checkout").count("ChaosPodKilled") == 1  # the genuine one


@pytest.fixture
def bystander(kubectl: Kubectl, e2e_namespace: str) -> Iterator[str]:
    """Another namespace (kube-system stands for it) with the same workload, never this experiment's target."""
    name = f"{e2e_namespace}-bystander"
    kubectl("create", "namespace", name)
    kubectl("apply", "-n", name, "-f", str(EXAMPLES / "shop-workload.yaml"))
    full_strength(kubectl, name, 180)
    yield name
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def test_a_forged_fault_entry_sends_nothing_into_another_namespaces_pod(
    e2e_cluster: E2ECluster, kubectl: Kubectl, completed: str, bystander: str
) -> None:
    namespace = completed
    victim = json.loads(kubectl("get", "pods", "-n", bystander, "-o", "json"))["items"][0]
    last_run = dict(status(kubectl, namespace)["lastRun"])
    last_run["faults"] = [
        {
            "namespace": bystander,
            "name": victim["metadata"]["name"],
            "uid": victim["metadata"]["uid"],
            "container": "chaosguard-latency-r1-forged",
            "state": "Active",
            "deadline": stamp(datetime.now(UTC) + timedelta(minutes=10)),
        }
    ]
    forge(e2e_cluster, kubectl, namespace, {"lastRun": last_run})
    restart_operator(kubectl)

    # The restarted leader's clean-up pass has run once the experiment's daemon is up: it says so (in the
    # leader's log: read every replica's).
    def declined() -> bool:
        logs = kubectl("logs", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=chaosguard", "--tail=-1")
        return f"not touching the fault recorded in pod {bystander}/{victim['metadata']['name']}" in logs

    def containers() -> list[str]:
        pod = json.loads(kubectl("get", "pod", victim["metadata"]["name"], "-n", bystander, "-o", "json"))
        return [c["name"] for c in pod["spec"].get("ephemeralContainers", [])]

    wait_for(
        lambda: containers() or declined(), timeout=120, what="the restarted operator to judge the forged fault entry"
    )
    assert containers() == []
    kubectl("delete", "chaosexperiment", "game-day", "-n", namespace, "--timeout=120s")  # its roll-back ran
    assert containers() == []


def test_an_approval_made_before_its_experiment_is_refused_and_never_counts_for_it(
    e2e_cluster: E2ECluster,
    kubectl: Kubectl,
    e2e_namespace: str,
    webhooks_enabled: None,  # noqa: F811
) -> None:
    """The approval race: bob approves a name before its experiment exists; the webhook refuses it (it
    would be bound to no experiment), so the experiment created afterwards still awaits approval."""
    if not e2e_cluster.real_node:
        pytest.skip("bob is a static-token user of the real node's control plane")
    assert e2e_cluster.plane is not None
    wait_for_webhooks(kubectl)
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed", f"chaosguard.dev/e2e={e2e_namespace}")
    policy = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosPolicy",
        "metadata": {"name": e2e_namespace},
        "spec": {
            "namespaceSelector": {"matchLabels": {"chaosguard.dev/e2e": e2e_namespace}},
            "approval": {"required": True, "approvers": {"groups": ["sre-leads"]}, "minApprovals": 1},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        kubectl(
            "create",
            "role",
            "bob-approvals",
            "-n",
            e2e_namespace,
            "--verb=get,list,create",
            "--resource=chaosapprovals.chaosguard.dev,chaosexperiments.chaosguard.dev",
        )
        kubectl("create", "rolebinding", "bob-approvals", "-n", e2e_namespace, "--role=bob-approvals", "--user=bob")
        approval = {
            "apiVersion": "chaosguard.dev/v1alpha1",
            "kind": "ChaosApproval",
            "metadata": {"name": "early", "namespace": e2e_namespace},
            "spec": {"experiment": "game-day", "specHash": "sha256:" + "0" * 64},
        }
        early = e2e_cluster.plane.kubectl(
            "create", "-f", "-", input=json.dumps(approval), user="bob", check=False, timeout=120
        )
        assert early.returncode != 0
        assert (
            "there is no ChaosExperiment 'game-day'" in early.stderr and "create the experiment first" in early.stderr
        )

        kubectl(
            "apply",
            "-n",
            e2e_namespace,
            "-f",
            "-",
            input=EXPERIMENT.replace("duration: 5s", "duration: 5s\n  dryRun: true"),
        )
        awaiting = wait_for(
            lambda: status(kubectl, e2e_namespace).get("phase") == "AwaitingApproval",
            timeout=120,
            what="the experiment to await approval",
            describe=lambda: str(status(kubectl, e2e_namespace)),
        )
        assert awaiting
        listed = json.loads(kubectl("get", "chaosapprovals", "-n", e2e_namespace, "-o", "json"))["items"]
        assert listed == [] and status(kubectl, e2e_namespace)["runsTotal"] == 0
    finally:
        kubectl("delete", "chaospolicy", e2e_namespace, "--ignore-not-found")
