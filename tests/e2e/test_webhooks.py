"""The admission webhooks as installed by default (Helm here, kustomize on kind): two replicas, both
serving them behind their Service (a ClusterIP that kube-proxy routes to the operator's pods), the two
webhook configurations shipped by the install with the CA they trust. The mutating webhook stamps the
author, the validating webhook refuses at `kubectl apply` what policy refuses; a replica deleted
(a rollout, a drain) leaves the configurations as they were, and the other replica answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localcluster import install
from tests.support.example_flow import EXAMPLES, Kubectl

WEBHOOK_CONFIGURATION = "chaosguard.dev"

DRY_RUN = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: stamped}
spec:
  action: pod-kill
  target: {selector: {matchLabels: {app: nothing}}, mode: one}
  duration: 10s
  dryRun: true
"""
REFUSED = """
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: refused}
spec:
  action: pod-kill
  target: {selector: {matchLabels: {app: nothing}}, mode: all}
  duration: 10s
"""


@pytest.fixture
def webhooks_enabled(installed_operator: str) -> None:
    """Both installs serve the webhooks by default: nothing to switch on (for the tests that ask for them)."""


def configurations(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    return {
        kind: json.loads(kubectl("get", kind, WEBHOOK_CONFIGURATION, "-o", "json"))
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
    }


def stamped_and_refused(kubectl: Kubectl, namespace: str, name: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=DRY_RUN.replace("name: stamped", f"name: {name}"))
    stamped = json.loads(kubectl("get", "chaosexperiment", name, "-n", namespace, "-o", "json"))
    annotations = stamped["metadata"].get("annotations", {})
    assert annotations.get("chaosguard.dev/author") == "admin", annotations
    assert annotations.get("chaosguard.dev/signature"), annotations

    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", namespace, "-f", "-", input=REFUSED)
    assert "denied the request" in str(refused.value) and "REFUSED max-percentage" in str(refused.value)


def test_every_replica_serves_the_webhooks_through_their_service(
    kubectl: Kubectl, installed_operator: str, e2e_namespace: str
) -> None:
    deployment = json.loads(kubectl("get", "deployment", install.DEPLOYMENT, "-n", install.NAMESPACE, "-o", "json"))
    assert deployment["spec"]["replicas"] == 2 and deployment["status"].get("readyReplicas") == 2, deployment["status"]
    before = configurations(kubectl)
    for kind, configuration in before.items():
        assert configuration["webhooks"], kind
        for webhook in configuration["webhooks"]:
            assert webhook["clientConfig"]["service"]["name"] == "chaosguard-webhook", webhook["clientConfig"]
            assert "url" not in webhook["clientConfig"], webhook["clientConfig"]
            assert webhook["clientConfig"].get("caBundle"), f"{kind} {webhook['name']}: no caBundle"
            assert webhook["failurePolicy"] == "Fail", webhook["name"]

    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    # Several applies, so that the Service sends them to both replicas.
    for index in range(4):
        stamped_and_refused(kubectl, e2e_namespace, f"stamped-{index}")

    # A replica deleted (SIGTERM, as in a rollout or a drain): the configurations stay exactly as they
    # were, and the other replica answers while the Deployment replaces it.
    pods = json.loads(
        kubectl("get", "pods", "-n", install.NAMESPACE, "-l", "app.kubernetes.io/name=chaosguard", "-o", "json")
    )["items"]
    kubectl("delete", "pod", pods[0]["metadata"]["name"], "-n", install.NAMESPACE, "--wait=true")
    assert configurations(kubectl) == before
    for index in range(4):
        stamped_and_refused(kubectl, e2e_namespace, f"after-{index}")
    kubectl("rollout", "status", f"deployment/{install.DEPLOYMENT}", "-n", install.NAMESPACE, "--timeout=300s")
    assert configurations(kubectl) == before
