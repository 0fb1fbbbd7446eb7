"""The installed operator runs both faults under exactly the role it ships with (the Helm chart's here,
deploy/base's in the kustomize smoke test and on kind), and the latency fault without
`patch pods/ephemeralcontainers` fails with a reason that names the missing permission.

The role is changed in place (the ClusterRole `chaosguard`, as installed) and put back afterwards:
RBAC takes effect at once, so the operator under test is the same process before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import E2ECluster
from tests.e2e.test_container_restart import container_restart_allowed  # noqa: F401 (a fixture)
from tests.e2e.test_latency import (
    check_failed_for_want_of_netem,
    finished,
    latency_experiment,
    opted_in_target,
    target_pod,
)
from tests.support.example_flow import Kubectl, event_reasons

ROLE = "chaosguard"


def role(kubectl: Kubectl) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", "clusterrole", ROLE, "-o", "json")))


def replace_rules(kubectl: Kubectl, rules: list[dict[str, Any]]) -> None:
    body = role(kubectl)
    body["rules"] = rules
    kubectl("replace", "-f", "-", input=json.dumps(body))


@pytest.fixture
def shipped_role(kubectl: Kubectl) -> Iterator[list[dict[str, Any]]]:
    """The installed ClusterRole's rules; whatever a test does to them, they are put back."""
    rules = role(kubectl)["rules"]
    yield rules
    replace_rules(kubectl, rules)


@pytest.mark.usefixtures("installed_operator")
def test_latency_without_the_ephemeral_containers_grant_fails_naming_it_and_works_with_the_shipped_role(
    kubectl: Kubectl, e2e_cluster: E2ECluster, e2e_namespace: str, shipped_role: list[dict[str, Any]]
) -> None:
    assert any("pods/ephemeralcontainers" in rule.get("resources", []) for rule in shipped_role), shipped_role
    assert not any("pods/exec" in rule.get("resources", []) for rule in shipped_role), shipped_role
    opted_in_target(kubectl, e2e_namespace)

    lacking = [rule for rule in shipped_role if "pods/ephemeralcontainers" not in rule.get("resources", [])]
    replace_rules(kubectl, lacking)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=latency_experiment("without-grant"))
    status = finished(kubectl, e2e_namespace, "without-grant")
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "InjectionFailed", dump
    (fault,) = status["lastRun"]["faults"]
    assert fault["state"] == "Failed", dump
    assert "the API refused the injector (403)" in fault["message"], dump
    assert "pods/ephemeralcontainers" in fault["message"] and "cannot patch" in fault["message"], dump
    assert "LatencyRefused" in event_reasons(kubectl, e2e_namespace, "ChaosExperiment", "without-grant")
    target = target_pod(kubectl, e2e_namespace, fault["name"])
    assert not target["spec"].get("ephemeralContainers"), "nothing got into the pod"

    replace_rules(kubectl, shipped_role)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=latency_experiment("with-grant", "20s"))
    status = finished(kubectl, e2e_namespace, "with-grant", timeout=180)
    if e2e_cluster.node_has_netem:  # kind: the delay is in and taken out at the deadline
        assert status["phase"] == "Completed", yaml.safe_dump(status)[:4000]
    else:  # this machine: the injector ran and the kernel said no, as the latency test shows
        check_failed_for_want_of_netem(kubectl, e2e_namespace, "with-grant", status)
    (fault,) = status["lastRun"]["faults"]
    names = [c["name"] for c in target_pod(kubectl, e2e_namespace, fault["name"])["spec"]["ephemeralContainers"]]
    assert any(name.startswith("chaosguard-latency-") for name in names), names


@pytest.mark.usefixtures("installed_operator", "container_restart_allowed")
def test_container_restart_needs_no_grant_beyond_the_ephemeral_containers_one(
    kubectl: Kubectl, e2e_namespace: str, shipped_role: list[dict[str, Any]]
) -> None:
    """container-restart adds no operator permission: its signaller is an ephemeral container (patch
    pods/ephemeralcontainers, as latency's injector) and it reads the target pod (get pods, as every kind).
    Without the ephemeral-containers grant the restart fails naming it; with the shipped role it restarts
    (tests/e2e/test_container_restart.py runs under that role)."""
    from tests.e2e.test_container_restart import HANDLES_TERM, experiment, restricted_namespace

    restricted_namespace(kubectl, e2e_namespace, ("handles", HANDLES_TERM))
    lacking = [rule for rule in shipped_role if "pods/ephemeralcontainers" not in rule.get("resources", [])]
    replace_rules(kubectl, lacking)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", input=experiment("restart-without-grant", "handles"))
    status = finished(kubectl, e2e_namespace, "restart-without-grant")
    dump = yaml.safe_dump(status)[:4000]
    assert status["phase"] == "Failed" and status["lastRun"]["reason"] == "RestartFailed", dump
    (fault,) = status["lastRun"]["faults"]
    assert "the API refused the signaller (403)" in fault["message"], dump
    assert "pods/ephemeralcontainers" in fault["message"] and "cannot patch" in fault["message"], dump
    assert not target_pod(kubectl, e2e_namespace, fault["name"])["spec"].get("ephemeralContainers")
