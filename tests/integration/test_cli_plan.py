"""`chaosguard plan` against the live cluster: which pods would be hit now, which are left out
and by which rule, and when the next allowed window opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from chaosguard.cli.main import main
from localcluster.controlplane import ControlPlane
from localcluster.operator import create_policy, ready_pods, scoped_policy

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_plan_shows_hits_exclusions_with_their_rule_and_the_next_window(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    shop: str,
    isolated_policies: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    protected = ready_pods(k8s, shop, "checkout")[0].metadata.name
    client.CoreV1Api(k8s).patch_namespaced_pod(
        protected, shop, {"metadata": {"labels": {"chaosguard.dev/protected": "true"}}}
    )
    create_policy(
        k8s,
        f"plan-{shop}",
        scoped_policy(
            shop,
            protectedSelector={"matchLabels": {"chaosguard.dev/protected": "true"}},
            windows=[{"cron": "0 10 * * TUE", "duration": "1h", "timeZone": "Europe/Berlin"}],
        ),
    )
    isolated_policies.append(f"plan-{shop}")
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        (EXAMPLES / "pod-kill-percent.yaml")
        .read_text()
        .replace("name: checkout-pod-kill", f"name: p\n  namespace: {shop}")
    )

    code = main(
        [
            "plan",
            "-f",
            str(experiment),
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--at",
            "2026-11-24T10:30:00+01:00",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "would hit 1 of 4 eligible pods" in out  # 40 % of the 4 that are not protected
    assert out.count("    HIT ") == 1 and out.count("    ELIGIBLE ") == 3
    assert f"LEFT-OUT {shop}/{protected}: protected-pod" in out
    assert "next allowed start: 2026-11-24T10:30:00+01:00" in out

    code = main(
        [
            "plan",
            "-f",
            str(experiment),
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--at",
            "2026-11-24T12:00:00+01:00",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "REFUSED window" in out and "next allowed start: 2026-12-01T10:00:00+01:00" in out


def aimed_at(directory: Path, example: str, namespace: str, cidr: str) -> Path:
    """A copy of a network example in `namespace`, whose destinationCIDRs is [cidr]."""
    text = (EXAMPLES / example).read_text().replace("\nmetadata:\n", f"\nmetadata:\n  namespace: {namespace}\n")
    copy = directory / example
    copy.write_text(text.replace("[10.1.0.0/16]", f"[{cidr}]"))
    return copy


def test_plan_refuses_a_partition_of_the_api_server_and_network_faults_on_the_operator(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    shop: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api_server = client.CoreV1Api(k8s).read_namespaced_service("kubernetes", "default").spec.cluster_ip
    partition = aimed_at(tmp_path, "partition.yaml", shop, f"{api_server}/32")
    kubeconfig = ["--kubeconfig", str(control_plane.kubeconfig)]
    code = main(["plan", "-f", str(partition), *kubeconfig])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"REFUSED partition-protected-address: spec.partition.destinationCIDRs[0] {api_server}/32" in out, out

    # The shop's own pods stand in for the operator's: its namespace is named on the command line.
    pod_ip = ready_pods(k8s, shop, "checkout")[0].status.pod_ip
    network = aimed_at(tmp_path, "network-loss.yaml", shop, f"{pod_ip}/32")
    assert main(["plan", "-f", str(network), *kubeconfig]) == 0, capsys.readouterr().out
    code = main(["plan", "-f", str(network), *kubeconfig, "--operator-namespace", shop])
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED operator-namespace-destination" in out, out


def test_plan_judges_a_container_restart_with_the_same_rules_as_the_operator(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    shop: str,
    isolated_policies: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    experiment = tmp_path / "container-restart.yaml"
    text = (EXAMPLES / "container-restart.yaml").read_text()
    experiment.write_text(text.replace("\nmetadata:\n", f"\nmetadata:\n  namespace: {shop}\n"))
    kubeconfig = ["--kubeconfig", str(control_plane.kubeconfig)]

    code = main(["plan", "-f", str(experiment), *kubeconfig])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "would hit 1 of 5 eligible pods" in out and out.count("    HIT ") == 1, out

    create_policy(k8s, f"plan-cr-{shop}", scoped_policy(shop, allowedActions=["pod-kill", "latency"]))
    isolated_policies.append(f"plan-cr-{shop}")
    code = main(["plan", "-f", str(experiment), *kubeconfig])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "REFUSED allowed-actions" in out and "container-restart" in out, out
