"""The admission webhooks, reached by the API server through their Service (a ClusterIP that kube-proxy
routes to the operator's pod), with the chart's webhook option: the mutating webhook stamps the
author, the validating webhook refuses at `kubectl apply` what policy refuses. The chart runs one
replica with webhooks (only the leader serves them); the release goes back to its defaults after.
Here only: the kind install of users' CI (kustomize) has no webhooks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localcluster import install
from localcluster.wait import wait_for
from tests.e2e.conftest import E2ECluster
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


def helm_upgrade(e2e_cluster: E2ECluster, *settings: str) -> None:
    run = e2e_cluster.install_step_runner()
    flags = [flag for setting in settings for flag in ("--set", setting)]
    chart = ("helm", "upgrade", install.RELEASE, "deploy/helm/chaosguard", "--namespace", install.NAMESPACE)
    run((*chart, "--reuse-values", *flags, "--wait", f"--timeout={install.ROLLOUT_TIMEOUT}"))
    run(install.ROLLOUT_STATUS)


@pytest.fixture
def webhooks_enabled(e2e_cluster: E2ECluster, kubectl: Kubectl, installed_operator: str) -> Iterator[None]:
    if not e2e_cluster.real_node:
        pytest.skip("the kind install (kustomize) serves no webhooks")
    helm_upgrade(e2e_cluster, "webhook.enabled=true", "replicaCount=1")
    try:
        yield
    finally:
        helm_upgrade(e2e_cluster, "webhook.enabled=false", "replicaCount=2")
        # kopf registered them; with no webhook server left they would refuse every experiment.
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl("delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found")


@pytest.mark.usefixtures("webhooks_enabled")
def test_the_webhooks_answer_through_their_service(kubectl: Kubectl, e2e_namespace: str) -> None:
    def registered() -> dict[str, object]:
        found = kubectl("get", "validatingwebhookconfiguration", "-o", "json")
        items = [i for i in json.loads(found)["items"] if i["metadata"]["name"] == WEBHOOK_CONFIGURATION]
        return items[0] if items and items[0].get("webhooks") else {}  # kopf creates it, then fills it in

    configuration = wait_for(registered, timeout=120, what="the operator to register its webhooks")
    for webhook in configuration["webhooks"]:  # type: ignore[attr-defined]
        assert webhook["clientConfig"]["service"]["name"] == "chaosguard-webhook", webhook["clientConfig"]
        assert "url" not in webhook["clientConfig"], webhook["clientConfig"]

    kubectl("apply", "-f", str(EXAMPLES / "policy-default.yaml"))
    kubectl("create", "namespace", e2e_namespace)
    kubectl("label", "namespace", e2e_namespace, "chaosguard.dev/chaos=allowed")
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=DRY_RUN)
    stamped = json.loads(kubectl("get", "chaosexperiment", "stamped", "-n", e2e_namespace, "-o", "json"))
    annotations = stamped["metadata"].get("annotations", {})
    assert annotations.get("chaosguard.dev/author") == "admin", annotations
    assert annotations.get("chaosguard.dev/signature"), annotations

    with pytest.raises(AssertionError) as refused:
        kubectl("apply", "-n", e2e_namespace, "-f", "-", input=REFUSED)
    assert "denied the request" in str(refused.value) and "REFUSED max-percentage" in str(refused.value)
