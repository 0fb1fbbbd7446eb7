"""The generated CRDs on a real API server: accepted, every example accepted, and bad experiments
refused by the API server itself, naming the field, with no operator running."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.controlplane import ControlPlane
from localcluster.wait import wait_for

pytestmark = pytest.mark.controlplane
REPO = Path(__file__).resolve().parents[2]

VALID = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: probe}
spec:
  action: pod-kill
  target: {selector: {matchLabels: {app: checkout}}, mode: fixed-percent, value: 25}
  duration: 5m
"""


def server_dry_run(control_plane: ControlPlane, text: str, namespace: str = "default") -> tuple[int, str]:
    result = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text, check=False)
    return result.returncode, result.stdout + result.stderr


def test_crds_are_established_with_printer_columns(chaosguard_crds: ControlPlane) -> None:
    names = chaosguard_crds.kubectl("api-resources", "--api-group=chaosguard.dev", "-o", "name").stdout.split()
    assert sorted(names) == [
        "chaosapprovals.chaosguard.dev",
        "chaosexperiments.chaosguard.dev",
        "chaospolicies.chaosguard.dev",
    ]
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    explained = wait_for(
        lambda: (
            (r := chaosguard_crds.kubectl("explain", "chaosexperiment.spec.target.mode", check=False)).returncode == 0
            and r.stdout
        ),
        timeout=30,
        what="kubectl explain to know the new CRD",
    )
    assert "one | fixed | fixed-percent | all" in explained


def test_a_valid_experiment_is_accepted(chaosguard_crds: ControlPlane) -> None:
    code, output = server_dry_run(chaosguard_crds, VALID)
    assert code == 0, output


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_accepted_by_the_api_server(chaosguard_crds: ControlPlane, example: Path) -> None:
    code, output = server_dry_run(chaosguard_crds, example.read_text())
    assert code == 0, output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("mode: fixed-percent, value: 25", "mode: fixed"), "target.value is required for mode fixed"),
        (("mode: fixed-percent, value: 25", "mode: one, value: 2"), "must be omitted for mode one and all"),
        (("value: 25", "value: 150"), "use 1 to 100"),
        (("action: pod-kill", "action: explode"), 'spec.action: Unsupported value: "explode"'),
        (("duration: 5m", "duration: 5 minutes"), "spec.duration: Invalid value"),
        (("action: pod-kill", "action: latency"), "spec.latency is required when action is latency"),
        (("  duration: 5m", "  duration: 5m\n  podKill: {gracePeriodSeconds: 0}"), "spec.podKill.gracePeriodSeconds"),
        (("  duration: 5m", "  duration: 5m\n  targett: {}"), 'unknown field "spec.targett"'),
        (("  duration: 5m", ""), "spec.duration: Required value"),
    ],
    ids=[
        "value-missing",
        "value-forbidden",
        "percent-range",
        "action-enum",
        "duration-form",
        "latency-block",
        "force-delete",
        "unknown-field",
        "duration-required",
    ],
)
def test_bad_experiments_are_refused_by_the_api_server_naming_the_field(
    chaosguard_crds: ControlPlane, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in VALID
    code, output = server_dry_run(chaosguard_crds, VALID.replace(old, new))
    assert code != 0, output
    assert expected in output, output


NETWORK = VALID.replace("  action: pod-kill\n", "  action: network\n  network: {loss: 30}\n")
PARTITION = VALID.replace(
    "  action: pod-kill\n", "  action: partition\n  partition: {destinationCIDRs: [10.1.0.0/16]}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (NETWORK.replace("{loss: 30}", "{}"), "spec.network impairs nothing"),
        (NETWORK.replace("{loss: 30}", "{reorder: 25}"), "spec.network.reorder needs spec.network.delay"),
        (NETWORK.replace("{loss: 30}", "{loss: 130}"), "spec.network.loss: Invalid value"),
        (NETWORK.replace("{loss: 30}", "{rate: 1mb}"), "spec.network.rate: Invalid value"),
        (NETWORK.replace("{loss: 30}", "{loss: 0.0000001}"), "the smallest percentage tc takes"),
        (NETWORK.replace("{loss: 30}", "{loss: 3, lossCorrelation: 5, corrupt: -1}"), "spec.network.corrupt"),
        (NETWORK.replace("  network: {loss: 30}\n", ""), "spec.network is required when action is network"),
        (PARTITION.replace("[10.1.0.0/16]", "[10.1.0.0/16, 0.0.0.0/0]"), "a /0 CIDR covers every address"),
        (PARTITION.replace("[10.1.0.0/16]", "[10.1.0.0/16, 0.0.0.0/00]"), "a /0 CIDR covers every address"),
        (PARTITION.replace("[10.1.0.0/16]", "[]"), "spec.partition.destinationCIDRs"),
        (PARTITION.replace("[10.1.0.0/16]}", "[10.1.0.0/16], direction: sideways}"), "spec.partition.direction"),
        (PARTITION.replace("action: partition", "action: latency"), "spec.partition is only allowed when action"),
    ],
    ids=[
        "nothing",
        "reorder-without-delay",
        "loss-range",
        "rate-unit",
        "loss-below-tc",
        "corrupt-range",
        "network-block",
        "partition-everything",
        "partition-everything-00",
        "partition-no-cidrs",
        "partition-direction",
        "partition-block",
    ],
)
def test_bad_network_faults_are_refused_by_the_api_server_naming_the_field(
    chaosguard_crds: ControlPlane, text: str, expected: str
) -> None:
    assert text not in (NETWORK, PARTITION)
    code, output = server_dry_run(chaosguard_crds, text)
    assert code != 0, output
    assert expected in output, output


def test_network_faults_are_accepted_by_the_api_server(chaosguard_crds: ControlPlane) -> None:
    for text in (NETWORK, PARTITION):
        code, output = server_dry_run(chaosguard_crds, text)
        assert code == 0, output


POLICY = """\
apiVersion: chaosguard.dev/v1alpha1
kind: ChaosPolicy
metadata: {name: budget-probe}
spec:
  steadyState:
    prometheus: {url: "http://prometheus:9090"}
    errorBudgets:
      - name: checkout
        errorQuery: sum(rate(errors[{{.window}}]))
        totalQuery: sum(rate(requests[{{.window}}]))
        objective: 99.9
        minBudgetRemaining: 10
"""
SLOTH = "        sloth: {service: checkout, slo: availability}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (POLICY.replace("        totalQuery: sum(rate(requests[{{.window}}]))\n", ""), "errorQuery and totalQuery go"),
        (POLICY.replace("        objective: 99.9\n", SLOTH), "give exactly one SLI source"),
        (POLICY.replace("        objective: 99.9\n", ""), "objective is required with queries"),
        (
            POLICY.replace("        errorQuery: sum(rate(errors[{{.window}}]))\n", SLOTH).replace(
                "        totalQuery: sum(rate(requests[{{.window}}]))\n", ""
            ),
            "refused with sloth or pyrra",
        ),
        (POLICY.replace("        minBudgetRemaining: 10\n", ""), "a gate with neither checks nothing"),
    ],
    ids=["error-without-total", "two-sources", "no-objective", "objective-with-sloth", "no-gate"],
)
def test_bad_error_budgets_are_refused_by_the_api_server(
    chaosguard_crds: ControlPlane, text: str, expected: str
) -> None:
    assert text != POLICY
    code, output = server_dry_run(chaosguard_crds, text)
    assert code != 0, output
    assert expected in output, output


def test_a_valid_error_budget_is_accepted_by_the_api_server(chaosguard_crds: ControlPlane) -> None:
    sloth = POLICY.replace("        errorQuery: sum(rate(errors[{{.window}}]))\n", SLOTH).replace(
        "        totalQuery: sum(rate(requests[{{.window}}]))\n        objective: 99.9\n", ""
    )
    for text in (POLICY, sloth):
        code, output = server_dry_run(chaosguard_crds, text)
        assert code == 0, output
