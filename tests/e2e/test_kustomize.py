"""The kustomize install (`kubectl apply -k`, README's second way) replaces the Helm release, and both
faults run under exactly the role of deploy/base: a smoke test, after every other e2e test."""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.conftest import E2ECluster
from tests.e2e.test_latency import check_failed_for_want_of_netem, finished, latency_experiment, opted_in_target
from tests.support.example_flow import Kubectl, check_pod_kill_percent, run_pod_kill_percent

pytestmark = pytest.mark.kustomize


def test_both_faults_under_the_deploy_base_role(
    kustomize_install: str, kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str
) -> None:
    assert kustomize_install.startswith("kustomize")
    managed = kubectl("get", "deployment", "chaosguard", "-n", "chaosguard-system", "-o", "yaml")
    assert "meta.helm.sh/release-name" not in managed, "the Helm release should be gone"
    check_pod_kill_percent(run_pod_kill_percent(kubectl, e2e_namespace, timeout=300))

    latency_namespace = f"{e2e_namespace}-latency"
    try:
        opted_in_target(kubectl, latency_namespace)
        kubectl("apply", "-n", latency_namespace, "-f", "-", input=latency_experiment("smoke", "20s"))
        status = finished(kubectl, latency_namespace, "smoke", timeout=180)
        if e2e_cluster.node_has_netem:
            assert status["phase"] == "Completed", yaml.safe_dump(status)[:4000]
        else:
            check_failed_for_want_of_netem(kubectl, latency_namespace, "smoke", status)
    finally:
        kubectl("delete", "namespace", latency_namespace, "--ignore-not-found", "--wait=false")
