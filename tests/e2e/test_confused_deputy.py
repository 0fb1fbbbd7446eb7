"""Nobody steers the operator beyond their own rights, under the Helm defaults (two replicas, webhooks
on), through kubectl as the user, on the real node:

- the confused deputy of issue 19: alice may create ChaosExperiments in the shop's namespace but may
  neither delete nor evict its pods; her pod-kill experiment is refused at `kubectl apply`, she is told
  why, and no pod goes;
- an endpoint's answer is not a channel (issue 20): an experiment whose steadyState points at an
  in-cluster server that answers 500 with a secret in its body is aborted, and the body reaches neither
  its status nor its Events.
"""

from __future__ import annotations

import json

import pytest

from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, E2ECluster
from tests.support.example_flow import EXAMPLES, Kubectl, full_strength, ready_pod_uids

EXPERIMENT_AUTHOR = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: alice-chaos}
rules:
  - apiGroups: [chaosguard.dev]
    resources: [chaosexperiments]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-chaos}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-chaos}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
"""

POD_KILL = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: deputy}
spec:
  action: pod-kill
  podKill: {gracePeriodSeconds: 1}
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: 10s
"""

SECRET = "s3cr3t-in-the-body-7f1c"
ANSWER = "HTTP/1.1 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n\\r\\n"
# An internal endpoint that answers every request 500, with a secret in the body.
LEAKY = f"""
apiVersion: v1
kind: Pod
metadata: {{name: leaky, labels: {{app: leaky}}}}
spec:
  containers:
    - name: nc
      image: {APP_IMAGE}
      imagePullPolicy: IfNotPresent
      command:
        - sh
        - -c
        - >-
          while true; do printf '{ANSWER}{SECRET}\\n' | nc -l -p 8080 >/dev/null; done
      readinessProbe:
        tcpSocket: {{port: 8080}}
        periodSeconds: 1
"""


def guarded_by(url: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: echo}}
spec:
  action: pod-kill
  target: {{selector: {{matchLabels: {{app: nothing}}}}, mode: one}}
  duration: 30s
  dryRun: true
  steadyState:
    prometheus: {{url: "{url}", timeout: 2s}}
    interval: 1s
    conditions:
      - {{name: up, query: up, operator: ">", threshold: 0}}
"""


@pytest.fixture
def shop(e2e_cluster: E2ECluster, kubectl: Kubectl, installed_operator: str, e2e_namespace: str) -> str:
    if not e2e_cluster.real_node:
        pytest.skip("alice is a static-token user of the real node's control plane")
    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    return e2e_namespace


def test_a_user_who_may_not_delete_pods_cannot_have_the_operator_kill_one(
    e2e_cluster: E2ECluster, kubectl: Kubectl, shop: str
) -> None:
    assert e2e_cluster.plane is not None
    plane = e2e_cluster.plane
    kubectl("apply", "-n", shop, "-f", str(EXAMPLES / "shop-workload.yaml"))
    before = full_strength(kubectl, shop, 180)
    kubectl("apply", "-n", shop, "-f", "-", input=EXPERIMENT_AUTHOR)
    for verb, resource in (("delete", "pods"), ("create", "pods/eviction")):
        can = plane.kubectl("auth", "can-i", verb, resource, "-n", shop, user="alice", check=False)
        assert can.stdout.strip() == "no", f"alice may {verb} {resource}: the test would prove nothing"
    assert plane.kubectl("auth", "can-i", "create", "chaosexperiments", "-n", shop, user="alice").stdout.strip() == (
        "yes"
    )

    applied = plane.kubectl("apply", "-n", shop, "-f", "-", input=POD_KILL, user="alice", check=False, timeout=120)
    assert applied.returncode != 0, f"alice's experiment was admitted: {applied.stdout}"
    assert "denied the request" in applied.stderr and "alice" in applied.stderr, applied.stderr
    assert "delete" in applied.stderr or "evict" in applied.stderr, applied.stderr
    listed = json.loads(kubectl("get", "chaosexperiments", "-n", shop, "-o", "json"))["items"]
    assert listed == []
    assert ready_pod_uids(kubectl, shop) == before  # nobody's pod went


def test_an_endpoints_error_body_reaches_neither_status_nor_events(kubectl: Kubectl, shop: str) -> None:
    kubectl("apply", "-n", shop, "-f", "-", input=LEAKY)
    kubectl("wait", "--for=condition=Ready", "pod/leaky", "-n", shop, "--timeout=180s")
    ip = json.loads(kubectl("get", "pod", "leaky", "-n", shop, "-o", "json"))["status"]["podIP"]
    kubectl("apply", "-n", shop, "-f", "-", input=guarded_by(f"http://{ip}:8080"))

    def ended() -> dict[str, object]:
        status = json.loads(kubectl("get", "chaosexperiment", "echo", "-n", shop, "-o", "json")).get("status") or {}
        return status if status.get("phase") in ("Aborted", "Rejected", "Failed", "Completed") else {}

    status = wait_for(ended, timeout=120, interval=1.0, what="the guarded experiment to end")
    events = kubectl("get", "events", "-n", shop, "--field-selector", "involvedObject.name=echo", "-o", "json")
    said = json.dumps(status) + events
    assert "HTTP 500" in said, said[:3000]  # the user is told what happened: a status code, not the body
    assert SECRET not in said
