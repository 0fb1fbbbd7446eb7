"""Safety promise 5 on the real API server: the operator's admission webhooks, identity-bound approvals,
and no confused deputy.

The operator runs as a process with `--webhook-port`; the test installs the webhook configurations
`chaosguard.dev` as the installs ship them (the operator never creates them), reached on 127.0.0.1 over
TLS with a CA made for the test. Only one operator may drive experiments, so the session's operator is stopped for this
module and started again at its end. Users are the control plane's static-token users:

- alice may create experiments and delete pods in her namespace (shop), nothing in payments;
- bob and carol are in the group sre-leads, the approvers of the approval policies here;
- mallory may create and edit experiments in shop, and delete pods there, but nothing in payments.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from chaosguard.admission.webhook_tls import ensure_tls
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    REPO,
    OperatorProcess,
    create_deployment,
    create_policy,
    events_for,
    experiment,
    install_webhook_configurations,
    label_namespace,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.wait import wait_for
from tests.integration.conftest import create_namespace

pytestmark = pytest.mark.controlplane

AUTHOR = "chaosguard.dev/author"
SIGNATURE = "chaosguard.dev/signature"
STAMP = (AUTHOR, "chaosguard.dev/author-groups", "chaosguard.dev/editors", "chaosguard.dev/stamped-at", SIGNATURE)
WEBHOOK_CONFIGURATIONS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")

EXPERIMENTS = {"apiGroups": ["chaosguard.dev"], "resources": ["chaosexperiments"]}
APPROVALS = {"apiGroups": ["chaosguard.dev"], "resources": ["chaosapprovals"]}
PODS = {"apiGroups": [""], "resources": ["pods"]}
EDIT = ["get", "list", "watch", "create", "update", "patch", "delete"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operators:
    """One operator at a time: with webhooks (the module's default) or without (the last test)."""

    def __init__(self, control_plane: ControlPlane, workdir: Path, namespace: str) -> None:
        self.control_plane = control_plane
        self.workdir = workdir
        self.namespace = namespace  # the operator's own: its signing key lives there
        self.current: OperatorProcess | None = None
        self.with_webhooks = False
        self.starts = 0

    def _start(self, args: list[str], env: dict[str, str] | None = None) -> OperatorProcess:
        # Not self.stop(): that removes the webhook configurations, which webhooks() installs first.
        if self.current is not None:
            self.current.stop()
            self.current = None
        self.starts += 1
        log = self.workdir / f"operator-{self.starts}.log"
        operator = OperatorProcess(
            self.control_plane.kubeconfig,
            log,
            {"CHAOSGUARD_NAMESPACE": self.namespace, **(env or {})},
            args=args,
            allow_unverified_authors=False,  # the secure default, with or without the webhooks
        )
        self.current = operator.start()
        return operator

    def webhooks(self) -> OperatorProcess:
        running = self.current is not None and self.current.process is not None and self.current.process.poll() is None
        if running and self.with_webhooks and self.current is not None:
            return self.current
        tls, port = self.workdir / f"tls-{self.starts + 1}", free_port()
        files = ensure_tls(tls, ["127.0.0.1"])
        install_webhook_configurations(self.control_plane, f"https://127.0.0.1:{port}", files.cafile.read_bytes())
        operator = self._start(["--webhook-port", str(port), "--webhook-tls-dir", str(tls)])
        self.with_webhooks = True
        wait_for(self._webhooks_answer, timeout=60, what="the admission webhooks to answer", describe=operator.log_tail)
        return operator

    def plain(self, clock_offset_seconds: float | None = None) -> OperatorProcess:
        """The operator without webhooks, and no webhook configuration left behind (its clock moved
        by `clock_offset_seconds`, if given)."""
        self.stop()
        self.with_webhooks = False
        env = {"CHAOSGUARD_CLOCK_OFFSET_SECONDS": f"{clock_offset_seconds:.3f}"} if clock_offset_seconds else None
        return self._start([], env)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None
        for kind in WEBHOOK_CONFIGURATIONS:
            self.control_plane.kubectl("delete", kind, "chaosguard.dev", "--ignore-not-found")

    def _webhooks_answer(self) -> bool:
        # Mutating: a dry-run create comes back stamped. Validating: kube-system is refused.
        probe = experiment_yaml(f"probe-{uuid.uuid4().hex[:6]}", "default", dry_run=True)
        result = self.control_plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=probe, check=False
        )
        if (
            result.returncode != 0
            or json.loads(result.stdout)["metadata"].get("annotations", {}).get(AUTHOR) != "admin"
        ):
            return False
        refused = self.control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=experiment_yaml("probe", "kube-system"), check=False
        )
        return refused.returncode != 0 and "builtin-excluded-namespace" in refused.stderr


@pytest.fixture(scope="module")
def operators(
    chaos_operator: OperatorProcess,
    chaosguard_crds: ControlPlane,
    k8s: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operators]:
    chaos_operator.stop()
    namespace = create_namespace(k8s, "chaosguard-admission")
    managed = Operators(chaosguard_crds, tmp_path_factory.mktemp("admission"), namespace)
    try:
        yield managed
    finally:
        managed.stop()
        client.CoreV1Api(k8s).delete_namespace(namespace)
        chaos_operator.start()


@pytest.fixture
def webhooks(operators: Operators) -> OperatorProcess:
    return operators.webhooks()


# --------------------------------------------------------------------------- helpers


def experiment_yaml(
    name: str,
    namespace: str,
    *,
    mode: str = "one",
    value: int | None = None,
    targets: list[str] | None = None,
    duration: str = "3s",
    dry_run: bool = False,
    annotations: dict[str, str] | None = None,
) -> str:
    target: dict[str, Any] = {"selector": {"matchLabels": {"app": "checkout"}}, "mode": mode}
    if value is not None:
        target["value"] = value
    if targets is not None:
        target["namespaces"] = targets
    body = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"action": "pod-kill", "target": target, "duration": duration, "dryRun": dry_run},
    }
    return yaml.safe_dump(body)


def grant(k8s: client.ApiClient, namespace: str, user: str, *rules: dict[str, Any]) -> None:
    rbac = client.RbacAuthorizationV1Api(k8s)
    name = f"{user}-{uuid.uuid4().hex[:6]}"
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": list(rules)})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def rule(base: dict[str, Any], verbs: list[str]) -> dict[str, Any]:
    return {**base, "verbs": verbs}


def kubectl_apply(control_plane: ControlPlane, text: str, user: str) -> subprocess.CompletedProcess[str]:
    return control_plane.kubectl("apply", "-f", "-", input=text, user=user, check=False)


def cli(control_plane: ControlPlane, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = str(control_plane.kubeconfig_for(user))
    argv = [sys.executable, "-m", "chaosguard", *args, "--kubeconfig", kubeconfig]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)


def annotations_of(k8s: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return dict(experiment(k8s, namespace, name)["metadata"].get("annotations") or {})


def approval_records(k8s: client.ApiClient, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return {record["approver"]: record for record in status_of(k8s, namespace, name).get("approvals") or []}


@pytest.fixture
def payments(k8s: client.ApiClient, shop: str) -> Iterator[str]:
    """A second opted-in namespace under the same test-scoped policies as `shop`."""
    name = create_namespace(k8s, "payments")
    label_namespace(k8s, name, {"chaosguard.dev/chaos": "allowed", "chaosguard.dev/test": shop})
    create_deployment(k8s, name, "checkout", 2)
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


@pytest.fixture
def team(k8s: client.ApiClient, shop: str) -> str:
    """alice: experiments and pods in shop; mallory: the same; bob and carol: may approve in shop."""
    for user in ("alice", "mallory"):
        grant(k8s, shop, user, rule(EXPERIMENTS, EDIT), rule(PODS, ["get", "list", "delete"]), rule(APPROVALS, EDIT))
    for user in ("bob", "carol"):
        grant(k8s, shop, user, rule(EXPERIMENTS, ["get", "list"]), rule(APPROVALS, ["get", "list", "create"]))
    return shop


@pytest.fixture
def policy(k8s: client.ApiClient, isolated_policies: list[str], shop: str) -> Any:
    def make(**spec: Any) -> str:
        name = f"admission-{uuid.uuid4().hex[:6]}"
        create_policy(k8s, name, scoped_policy(shop, **spec))
        isolated_policies.append(name)
        return name

    return make


APPROVAL = {"required": True, "approvers": {"groups": ["sre-leads"]}, "minApprovals": 1, "expiresAfter": "1h"}


# --------------------------------------------------------------------------- policy and permissions at apply time


def test_apply_refuses_what_policy_forbids_naming_the_rule_as_validate_does(
    webhooks: OperatorProcess,
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,
    policy: Any,
    tmp_path: Path,
) -> None:
    name = policy(maxPercentage=30)
    text = experiment_yaml("take-all", team, mode="all")
    result = kubectl_apply(control_plane, text, "alice")
    assert result.returncode != 0
    assert 'admission webhook "experiment-policy.chaosguard.dev" denied the request' in result.stderr
    assert f"REFUSED max-percentage: mode 'all' would take down every pod, but ChaosPolicy/{name}" in result.stderr
    assert (
        client.CustomObjectsApi(k8s).list_namespaced_custom_object(
            "chaosguard.dev", "v1alpha1", team, "chaosexperiments"
        )["items"]
        == []
    )

    # One code path: `chaosguard validate` gives the same refusal offline.
    (tmp_path / "experiment.yaml").write_text(text)
    policy_body = client.CustomObjectsApi(k8s).get_cluster_custom_object(
        "chaosguard.dev", "v1alpha1", "chaospolicies", name
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy_body))
    offline = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosguard",
            "validate",
            "-f",
            str(tmp_path / "experiment.yaml"),
            "--policy",
            str(tmp_path / "policy.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    refusal = next(line.strip() for line in offline.stdout.splitlines() if "REFUSED max-percentage" in line)
    assert refusal in result.stderr

    # Within policy, the same user's experiment goes through, stamped with her identity.
    assert kubectl_apply(control_plane, experiment_yaml("take-one", team, dry_run=True), "alice").returncode == 0
    assert annotations_of(k8s, team, "take-one")[AUTHOR] == "alice"
    wait_for_phase(k8s, team, "take-one", "Completed")


def test_a_target_namespace_needs_the_authors_own_permission_there(
    webhooks: OperatorProcess,
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,
    payments: str,
    policy: Any,
) -> None:
    policy(allowCrossNamespace=True)
    text = experiment_yaml("reach", team, targets=[team, payments], dry_run=True)
    refused = kubectl_apply(control_plane, text, "alice")
    assert refused.returncode != 0
    assert f"REFUSED target-permission: alice may not delete pods in namespace '{payments}'" in refused.stderr
    assert f"namespace '{team}'" not in refused.stderr  # she may in her own

    # Granted the permission in payments, the same experiment is admitted: the refusal was about her rights.
    grant(k8s, payments, "alice", rule(PODS, ["delete"]))
    assert kubectl_apply(control_plane, text, "alice").returncode == 0
    wait_for_phase(k8s, team, "reach", "Completed")


def test_nobody_can_forge_or_change_the_author(
    webhooks: OperatorProcess,
    control_plane: ControlPlane,
    k8s: client.ApiClient,
    team: str,
    payments: str,
    policy: Any,
) -> None:
    policy(allowCrossNamespace=True)
    grant(k8s, payments, "alice", rule(PODS, ["delete"]))
    genuine = experiment_yaml("alice-reach", team, targets=[payments], dry_run=True, duration="1h")
    assert kubectl_apply(control_plane, genuine, "alice").returncode == 0
    wait_for_phase(k8s, team, "alice-reach", "Running")
    stamp = {k: v for k, v in annotations_of(k8s, team, "alice-reach").items() if k in STAMP}
    assert stamp[AUTHOR] == "alice" and SIGNATURE in stamp

    # mallory copies alice's whole stamp onto her own copy of the experiment: refused as mallory.
    forged = experiment_yaml("mallory-reach", team, targets=[payments], dry_run=True, annotations=stamp)
    refused = kubectl_apply(control_plane, forged, "mallory")
    assert refused.returncode != 0
    assert f"mallory may not delete pods in namespace '{payments}'" in refused.stderr

    # In shop, where she may, her experiment is admitted, but under her name whatever she wrote.
    claimed = {AUTHOR: "alice", "chaosguard.dev/author-groups": '["sre-leads"]', SIGNATURE: "v1:" + "0" * 64}
    own = experiment_yaml("mallory-own", team, dry_run=True, annotations=claimed)
    assert kubectl_apply(control_plane, own, "mallory").returncode == 0
    assert annotations_of(k8s, team, "mallory-own")[AUTHOR] == "mallory"
    assert annotations_of(k8s, team, "mallory-own")[SIGNATURE] != claimed[SIGNATURE]
    wait_for_phase(k8s, team, "mallory-own", "Completed")

    # She can neither rewrite nor remove alice's stamp...
    control_plane.kubectl(
        "annotate",
        "--overwrite",
        "chaosexperiment",
        "alice-reach",
        "-n",
        team,
        f"{AUTHOR}=mallory",
        f"{SIGNATURE}-",
        user="mallory",
    )
    after = annotations_of(k8s, team, "alice-reach")
    assert {k: after.get(k) for k in STAMP if k != SIGNATURE} == {k: stamp.get(k) for k in STAMP if k != SIGNATURE}
    assert after[SIGNATURE].startswith("v1:")
    assert status_of(k8s, team, "alice-reach")["phase"] == "Running"

    # ... nor point alice's experiment, still carrying alice's name, at something she may not touch herself.
    edit = json.dumps({"spec": {"dryRun": False}})
    patched = control_plane.kubectl(
        "patch", "chaosexperiment", "alice-reach", "-n", team, "--type=merge", "-p", edit, user="mallory", check=False
    )
    assert patched.returncode != 0
    assert f"mallory may not delete pods in namespace '{payments}'" in patched.stderr
    assert experiment(k8s, team, "alice-reach")["spec"]["dryRun"] is True


# --------------------------------------------------------------------------- approvals


def test_the_author_cannot_approve_her_own_experiment_nor_can_non_approvers(
    webhooks: OperatorProcess, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    name = policy(approval=APPROVAL)
    assert kubectl_apply(control_plane, experiment_yaml("needs-ok", team), "alice").returncode == 0
    wait_for_phase(k8s, team, "needs-ok", "AwaitingApproval")
    wanted = f"waiting for approval: ChaosPolicy/{name} requires 1 approval(s) from groups sre-leads"
    wait_for(
        lambda: wanted in status_of(k8s, team, "needs-ok")["message"],
        timeout=30,
        what="the operator to say which approval it waits for",
        describe=lambda: str(status_of(k8s, team, "needs-ok")),
    )

    own = cli(control_plane, "alice", "approve", "needs-ok", "-n", team)
    assert own.returncode == 1, own.stderr
    assert "alice wrote this experiment's spec and may not approve it" in own.stderr

    outsider = cli(control_plane, "mallory", "approve", "needs-ok", "-n", team)
    assert outsider.returncode == 1, outsider.stderr
    assert f"mallory is not an approver (ChaosPolicy/{name} allows groups sre-leads)" in outsider.stderr

    # Naming someone else as the approver in the object changes nothing: the webhook stamps the requester.
    approval = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosApproval",
        "metadata": {"generateName": "needs-ok-", "namespace": team, "annotations": {"chaosguard.dev/approver": "bob"}},
        "spec": {"experiment": "needs-ok", "specHash": "sha256:" + "0" * 64},
    }
    forged = control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(approval), user="alice", check=False)
    assert forged.returncode != 0
    assert "alice wrote this experiment's spec" in forged.stderr

    assert (
        client.CustomObjectsApi(k8s).list_namespaced_custom_object(
            "chaosguard.dev", "v1alpha1", team, "chaosapprovals"
        )["items"]
        == []
    )
    assert status_of(k8s, team, "needs-ok")["phase"] == "AwaitingApproval"


def test_an_approvers_approval_lets_it_run_and_an_edit_sends_it_back(
    webhooks: OperatorProcess, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    policy(approval=APPROVAL)
    assert kubectl_apply(control_plane, experiment_yaml("gated", team), "alice").returncode == 0
    wait_for_phase(k8s, team, "gated", "AwaitingApproval")

    approved = cli(control_plane, "bob", "approve", "gated", "-n", team, "--comment", "game day")
    assert approved.returncode == 0, approved.stderr
    assert f"approved {team}/gated" in approved.stdout and "as bob" in approved.stdout
    status = wait_for_phase(k8s, team, "gated", "Completed", timeout=90)
    assert status["lastRun"]["killsTotal"] == 1
    assert approval_records(k8s, team, "gated")["bob"]["counted"] is True
    counted = wait_for_event(k8s, team, "gated", "ApprovalCounted")
    assert "by bob counts until" in counted.message
    assert wait_for_event(k8s, team, "gated", "Approved").message.startswith("approved by bob")

    # alice edits the spec: bob approved the old one, so it waits again.
    edited = experiment_yaml("gated", team, duration="4s")
    assert kubectl_apply(control_plane, edited, "alice").returncode == 0
    status = wait_for_phase(k8s, team, "gated", "AwaitingApproval")
    assert status["observedGeneration"] == 2
    record = wait_for(
        lambda: (r := approval_records(k8s, team, "gated").get("bob")) and not r["counted"] and r,
        timeout=30,
        what="bob's approval to be judged against the edited spec",
        describe=lambda: str(status_of(k8s, team, "gated").get("approvals")),
    )
    assert "it approves an earlier version of the spec" in record["reason"]
    rejected = wait_for_event(k8s, team, "gated", "ApprovalRejected")
    assert "earlier version of the spec" in rejected.message
    listing = cli(control_plane, "alice", "approvals", "gated", "-n", team)
    assert listing.returncode == 0, listing.stderr
    assert "DOES NOT COUNT: it approves an earlier version of the spec" in listing.stdout
    assert status_of(k8s, team, "gated")["runsTotal"] == 1


def test_an_expired_approval_does_not_count(
    webhooks: OperatorProcess, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    policy(approval={**APPROVAL, "minApprovals": 2, "expiresAfter": "2s"})
    assert kubectl_apply(control_plane, experiment_yaml("quick", team), "alice").returncode == 0
    wait_for_phase(k8s, team, "quick", "AwaitingApproval")

    assert cli(control_plane, "bob", "approve", "quick", "-n", team).returncode == 0
    bob = wait_for(
        lambda: (r := approval_records(k8s, team, "quick").get("bob")) and r["reason"].startswith("expired") and r,
        timeout=30,
        what="the operator to judge bob's approval expired",
        describe=lambda: str(status_of(k8s, team, "quick").get("approvals")),
    )
    assert not bob["counted"] and "expiresAfter 2s" in bob["reason"]

    # carol approves too: with bob's expired, that is one valid approval of the two needed.
    assert cli(control_plane, "carol", "approve", "quick", "-n", team).returncode == 0
    wait_for(
        lambda: "carol" in approval_records(k8s, team, "quick"),
        timeout=30,
        what="the operator to judge carol's approval",
        describe=lambda: str(status_of(k8s, team, "quick").get("approvals")),
    )
    status = status_of(k8s, team, "quick")
    assert status["phase"] == "AwaitingApproval"
    assert status["runsTotal"] == 0
    assert not approval_records(k8s, team, "quick")["bob"]["counted"]
    assert not [e for e in events_for(k8s, team, "quick") if e.reason == "RunStarted"]


# --------------------------------------------------------------------------- without the webhook


def test_without_the_webhook_the_operator_still_refuses(
    operators: Operators, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    operators.webhooks()
    policy(maxPercentage=30, approval=APPROVAL)
    # Stamped while the webhook runs, waiting for an approval.
    assert kubectl_apply(control_plane, experiment_yaml("stamped", team, duration="1h"), "alice").returncode == 0
    wait_for_phase(k8s, team, "stamped", "AwaitingApproval")

    operators.plain()  # the webhook configurations are deleted; the same signing key
    for kind in WEBHOOK_CONFIGURATIONS:
        assert control_plane.kubectl("get", kind, "chaosguard.dev", check=False).returncode != 0

    # Policy: accepted by the API server now, rejected by the operator.
    assert kubectl_apply(control_plane, experiment_yaml("take-all", team, mode="all"), "alice").returncode == 0
    status = wait_for_phase(k8s, team, "take-all", "Rejected")
    assert "REFUSED max-percentage" in status["message"]

    # No stamp: the author cannot be known, so nothing that needs approval runs.
    assert kubectl_apply(control_plane, experiment_yaml("unstamped", team), "alice").returncode == 0
    status = wait_for_phase(k8s, team, "unstamped", "Rejected")
    assert "the author is unknown: the admission webhook must be running" in status["message"]
    assert wait_for_event(k8s, team, "unstamped", "AuthorUnknown")

    # An approval made without the webhook carries no stamp, whatever it claims, and does not count.
    approval = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosApproval",
        "metadata": {"name": "stamped-bob", "namespace": team, "annotations": {"chaosguard.dev/approver": "bob"}},
        "spec": {"experiment": "stamped", "specHash": "sha256:" + "0" * 64},
    }
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(approval), user="bob")
    record = wait_for(
        lambda: (status_of(k8s, team, "stamped").get("approvals") or [None])[0],
        timeout=30,
        what="the operator to judge the unstamped approval",
    )
    assert not record["counted"] and "carries no approver stamp" in record["reason"]
    assert status_of(k8s, team, "stamped")["phase"] == "AwaitingApproval"

    # An edit the webhook did not see voids the stamp.
    edited = experiment_yaml("stamped", team, duration="2h")
    assert kubectl_apply(control_plane, edited, "mallory").returncode == 0
    status = wait_for(
        lambda: (
            (s := status_of(k8s, team, "stamped")).get("observedGeneration") == 2 and s["phase"] == "Rejected" and s
        ),
        timeout=30,
        what="the operator to reject the edited experiment",
        describe=lambda: str(status_of(k8s, team, "stamped")),
    )
    assert "the spec or the stamp was changed without the admission webhook" in status["message"]


# --------------------------------------------------------------------------- issue 19/20: no deputy, no race


def pod_uids(k8s: client.ApiClient, namespace: str) -> set[str]:
    pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="app=checkout").items
    return {pod.metadata.uid for pod in pods if pod.metadata.deletion_timestamp is None}


def test_without_the_webhook_a_user_who_may_not_delete_pods_cannot_have_the_operator_kill_one(
    operators: Operators, control_plane: ControlPlane, k8s: client.ApiClient, team: str
) -> None:
    """The confused deputy of issue 19: by default, an operator that cannot know who wrote an
    experiment does nothing for it, and says how to fix that (turn the webhooks on)."""
    operators.plain()
    grant(k8s, team, "bob", rule(EXPERIMENTS, EDIT))  # experiments, but no pods: bob may not delete one
    assert (
        control_plane.kubectl("auth", "can-i", "delete", "pods", "-n", team, user="bob", check=False).stdout.strip()
        == "no"
    )
    assert (
        control_plane.kubectl(
            "auth", "can-i", "create", "pods", "--subresource=eviction", "-n", team, user="bob", check=False
        ).stdout.strip()
        == "no"
    )
    before = pod_uids(k8s, team)

    assert kubectl_apply(control_plane, experiment_yaml("deputy", team, mode="all"), "bob").returncode == 0
    status = wait_for_phase(k8s, team, "deputy", "Rejected")
    assert "REFUSED author-unknown: the author is unknown: the admission webhook must be running" in status["message"]
    assert "turn the webhooks on (Helm: webhook.enabled=true" in status["message"]
    event = wait_for_event(k8s, team, "deputy", "AuthorUnknown")
    assert "turn the webhooks on" in event.message
    assert status["runsTotal"] == 0 and status.get("lastRun") is None
    assert pod_uids(k8s, team) == before


def test_an_approval_stamped_before_its_experiment_existed_never_counts(
    operators: Operators, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    """The approval race of issue 20: an approval is refused for an experiment that does not exist;
    and one stamped anyway while it did not (bound to no UID, as the old webhook signed them) does not
    count for the experiment created under that name afterwards, even for the very same spec."""
    from chaosguard.decisions.stamps import ApprovalStamp, approval_annotations, spec_hash

    operators.webhooks()
    policy(approval=APPROVAL)
    text = experiment_yaml("raced", team)
    approval: dict[str, Any] = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosApproval",
        "metadata": {"name": "raced-bob", "namespace": team},
        "spec": {"experiment": "raced", "specHash": spec_hash(yaml.safe_load(text)["spec"])},
    }
    refused = control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(approval), user="bob", check=False)
    assert refused.returncode != 0
    assert f"there is no ChaosExperiment 'raced' in namespace '{team}' to approve" in refused.stderr
    assert "create the experiment first" in refused.stderr

    # What the webhook signed when the experiment appeared between its stamp and its check: the
    # operator's own signature over bob's approval of the name, bound to no UID.
    secret = client.CoreV1Api(k8s).read_namespaced_secret("chaosguard-signing-key", operators.namespace)
    key = base64.b64decode(secret.data["hmac-key"])
    stamp = ApprovalStamp("bob", ("sre-leads",), datetime.now(UTC), "")
    approval["metadata"]["annotations"] = approval_annotations(key, team, approval["spec"], stamp)
    operators.plain()  # no webhook to re-stamp it: it is stored as signed
    control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(approval))

    operators.webhooks()
    assert kubectl_apply(control_plane, text, "alice").returncode == 0
    assert spec_hash(experiment(k8s, team, "raced")["spec"]) == approval["spec"]["specHash"]
    record = wait_for(
        lambda: approval_records(k8s, team, "raced").get("bob"),
        timeout=30,
        what="the operator to judge the approval bound to no experiment",
        describe=lambda: str(status_of(k8s, team, "raced")),
    )
    assert record["counted"] is False
    assert record["reason"].startswith("it is bound to no experiment (stamped while no ChaosExperiment 'raced'")
    status = status_of(k8s, team, "raced")
    assert status["phase"] == "AwaitingApproval" and status["runsTotal"] == 0
    assert wait_for_event(k8s, team, "raced", "ApprovalRejected")


def test_an_editor_who_lost_the_right_stops_the_experiment_as_the_author_would(
    webhooks: OperatorProcess, control_plane: ControlPlane, k8s: client.ApiClient, team: str, policy: Any
) -> None:
    """Editors are re-checked before a run, like the author: mallory's edit was admitted while she
    could delete pods in shop; once that is revoked, the experiment she co-wrote no longer runs."""
    policy(approval=APPROVAL)
    assert kubectl_apply(control_plane, experiment_yaml("co-written", team), "alice").returncode == 0
    wait_for_phase(k8s, team, "co-written", "AwaitingApproval")
    assert kubectl_apply(control_plane, experiment_yaml("co-written", team, duration="4s"), "mallory").returncode == 0
    wait_for(
        lambda: (
            (s := status_of(k8s, team, "co-written")).get("observedGeneration") == 2
            and s["phase"] == "AwaitingApproval"
        ),
        timeout=30,
        what="mallory's edit to be admitted and await approval",
    )
    assert json.loads(annotations_of(k8s, team, "co-written")["chaosguard.dev/editors"]) == ["mallory"]

    rbac = client.RbacAuthorizationV1Api(k8s)
    for binding in rbac.list_namespaced_role_binding(team).items:
        if any(subject.name == "mallory" for subject in binding.subjects or []):
            rbac.delete_namespaced_role_binding(binding.metadata.name, team)
    status = wait_for_phase(k8s, team, "co-written", "Rejected")
    assert f"mallory may not delete pods in namespace '{team}'" in status["message"]
    assert "editors are checked by user name alone" in status["message"]
    assert status["runsTotal"] == 0


def test_a_days_old_stamp_counts_the_authors_own_rights_not_the_groups_it_froze(
    operators: Operators, control_plane: ControlPlane, k8s: client.ApiClient, team: str
) -> None:
    """Fresh identities: bob may delete pods in shop only as a member of sre-leads. His scheduled game
    day, stamped with that group, is admitted; a day later the group no longer counts from the stamp
    (an identity provider may have removed him since), so the run is skipped, saying how to refresh."""
    from datetime import timedelta

    rbac = client.RbacAuthorizationV1Api(k8s)
    rbac.create_namespaced_role(
        team, {"metadata": {"name": "leads"}, "rules": [rule(EXPERIMENTS, EDIT), rule(PODS, ["get", "list", "delete"])]}
    )
    rbac.create_namespaced_role_binding(
        team,
        {
            "metadata": {"name": "leads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leads"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sre-leads"}],
        },
    )
    now = datetime.now(UTC)
    fire = (now + timedelta(hours=25)).replace(second=0, microsecond=0) + timedelta(minutes=2)
    body = yaml.safe_load(experiment_yaml("weekly", team, dry_run=True))
    body["spec"]["schedule"] = {"cron": f"{fire.minute} {fire.hour} * * *"}
    operators.webhooks()
    assert kubectl_apply(control_plane, yaml.safe_dump(body), "bob").returncode == 0
    assert "sre-leads" in json.loads(annotations_of(k8s, team, "weekly")["chaosguard.dev/author-groups"])
    wait_for_phase(k8s, team, "weekly", "Scheduled")

    operators.plain(clock_offset_seconds=(fire - timedelta(seconds=20) - datetime.now(UTC)).total_seconds())
    skipped = wait_for_event(k8s, team, "weekly", "RunSkipped", timeout=90)
    assert f"REFUSED target-permission: bob may not delete pods in namespace '{team}'" in skipped.message
    assert "bob's groups were last confirmed at" in skipped.message and "more than 24h ago" in skipped.message
    assert "refreshes them by updating the experiment" in status_of(k8s, team, "weekly")["message"]
    assert status_of(k8s, team, "weekly")["runsTotal"] == 0
