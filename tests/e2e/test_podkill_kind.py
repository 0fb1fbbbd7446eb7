"""Pod-kill in a kind cluster, the operator running from its image with the RBAC of deploy/: the
README's first experiment, applied with kubectl from examples/, as a user's CI runs it."""

from __future__ import annotations

import pytest

from tests.support.example_flow import Kubectl, check_pod_kill_percent, run_pod_kill_percent


@pytest.mark.usefixtures("installed_operator")
def test_pod_kill_percent_example_completes_with_two_kills(kubectl: Kubectl, e2e_namespace: str) -> None:
    run = run_pod_kill_percent(kubectl, e2e_namespace, timeout=300)
    check_pod_kill_percent(run)
