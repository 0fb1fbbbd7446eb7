"""`chaosguard validate` as GitOps CI runs it: files in, REFUSED lines and an exit code out."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosguard.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TUESDAY_AFTERNOON = "2026-11-24T14:00:00+01:00"
HOLIDAY_TUESDAY = "2026-12-22T11:00:00+01:00"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_examples_are_admitted_by_the_default_policy(capsys: pytest.CaptureFixture[str]) -> None:
    experiments = [arg for path in sorted(EXAMPLES.glob("*kill*.yaml")) for arg in ("-f", str(path))]
    experiments += ["-f", str(EXAMPLES / "gameday-weekly.yaml")]
    code, out = run(capsys, *experiments, "--policy", str(EXAMPLES / "policy-default.yaml"))
    assert code == 0, out
    assert out.count("admitted") == 4


def test_window_and_blackout_are_judged_at_the_given_time(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    experiment = str(EXAMPLES / "pod-kill-percent.yaml")
    policy = str(EXAMPLES / "policy-windows-blackout.yaml")
    assert run(capsys, "-f", experiment, "--policy", policy, "--at", TUESDAY_AFTERNOON)[0] == 0
    code, out = run(capsys, "-f", experiment, "--policy", policy, "--at", HOLIDAY_TUESDAY)
    assert code == 1
    assert "REFUSED blackout:" in out and "holiday freeze" in out
    code, out = run(capsys, "-f", experiment, "--policy", policy, "--at", "2026-11-27T14:00:00+01:00")
    assert code == 1 and "REFUSED window:" in out and "next allowed start is 2026-11-30T10:00:00+01:00" in out


def test_each_refusal_is_printed_with_its_rule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "strict.yaml"
    policy.write_text(
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosPolicy\nmetadata: {name: strict}\n"
        "spec: {maxPercentage: 20, maxDuration: 10s, requireSteadyState: true, excludedNamespaces: [shop]}\n"
    )
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        (EXAMPLES / "pod-kill-percent.yaml")
        .read_text()
        .replace("name: checkout-pod-kill", "name: x\n  namespace: shop")
    )
    code, out = run(capsys, "-f", str(experiment), "--policy", str(policy))
    assert code == 1
    refused = [line.strip().split(":")[0] for line in out.splitlines() if "REFUSED" in line]
    assert refused == [
        "REFUSED excluded-namespace",
        "REFUSED max-duration",
        "REFUSED require-steady-state",
        "REFUSED max-percentage",
    ]


def test_schema_errors_are_refusals_naming_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "pod-kill-percent.yaml").read_text().replace("value: 40", "value: 400"))
    code, out = run(capsys, "-f", str(bad))
    assert code == 1
    assert "REFUSED schema: spec.target: Value error, target.value is a percentage" in out or "use 1 to 100" in out


@pytest.mark.parametrize("content", ["action: [unclosed", "- just\n- a list\n"])
def test_unreadable_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    assert run(capsys, "-f", str(bad))[0] == 2
    assert run(capsys, "-f", str(tmp_path / "missing.yaml"))[0] == 2
    assert run(capsys, "-f", str(EXAMPLES / "pod-kill-percent.yaml"), "--at", "tuesday")[0] == 2


def test_platform_guards_are_listed_as_checked_at_run_time_never_as_passed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        (EXAMPLES / "slo-guarded.yaml")
        .read_text()
        .replace("name: checkout-guarded-kill", "name: x\n  namespace: payments")
    )
    policies = [
        "--policy",
        str(EXAMPLES / "policy-payments-budget.yaml"),
        "--policy",
        str(EXAMPLES / "policy-quiet-alerts.yaml"),
    ]
    code, out = run(capsys, "-f", str(experiment), *policies, "--policy", str(EXAMPLES / "policy-default.yaml"))
    assert code == 0, out
    guards = [line.strip() for line in out.splitlines() if line.strip().startswith("GUARD")]
    assert all(line.endswith(": checked at run time") for line in guards), guards
    assert len(guards) == 6, guards  # two budgets (start and burn gates each), one condition, quiet alerts
    assert any(
        "ChaosPolicy/payments-budget error budget checkout-availability: starts only with at least 50%" in g
        for g in guards
    ), guards
    assert any(g.startswith("GUARD ChaosPolicy/quiet-alerts quiet alerts") for g in guards), guards
    assert "passed" not in out
