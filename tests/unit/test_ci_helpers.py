"""The CI helpers users copy: the pre-commit hook runs `chaosguard validate` on the files pre-commit passes,
and the chaos-ci workflow runs `chaosguard apply --wait` and publishes its JUnit XML and report."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "chaos-ci.yaml"
EXPERIMENT = """apiVersion: chaosguard.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: checkout-kill, namespace: shop}
spec:
  action: pod-kill
  target: {selector: {matchLabels: {app: checkout}}, mode: one}
  duration: DURATION
"""
POLICY = """apiVersion: chaosguard.dev/v1alpha1
kind: ChaosPolicy
metadata: {name: short}
spec: {maxDuration: 5m}
"""


def run_hook(*files: Path) -> subprocess.CompletedProcess[str]:
    """The hook's entry with the file names appended, as pre-commit runs it."""
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "chaosguard-validate" and hook["language"] == "python"
    argv = [*shlex.split(hook["entry"]), *map(str, files)]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def test_pre_commit_hook_passes_admitted_files_and_fails_refused_ones(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ok, long = tmp_path / "ok.yaml", tmp_path / "long.yaml"
    ok.write_text(EXPERIMENT.replace("DURATION", "1m"))
    long.write_text(EXPERIMENT.replace("DURATION", "1h"))

    passed = run_hook(ok, policy)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    refused = run_hook(ok, long, policy)
    assert refused.returncode == 1
    assert f"{long} shop/checkout-kill: refused" in refused.stdout
    assert "REFUSED max-duration: " in refused.stdout


def test_pre_commit_hook_passes_a_commit_without_experiments_but_checks_its_policies(tmp_path: Path) -> None:
    workload = tmp_path / "deployment.yaml"
    workload.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: checkout}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert run_hook(workload, policy).returncode == 0
    policy.write_text(POLICY.replace("maxDuration: 5m", "maxDuration: five minutes"))
    broken = run_hook(policy)
    assert broken.returncode == 2 and "ChaosPolicy is invalid" in broken.stderr, broken.stderr


def test_the_chaos_ci_workflow_runs_apply_and_publishes_junit_and_the_report() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "helm install chaosguard deploy/helm/chaosguard" in runs
    assert "chaosguard apply -f" in runs and "--wait" in runs
    assert "--junit chaos-junit.xml" in runs and "--report chaos-report.html" in runs
    uses = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    assert "helm/kind-action" in uses and "azure/setup-helm" in uses
    assert uses["mikepenz/action-junit-report"]["with"]["report_paths"] == "chaos-junit.xml"
    assert "chaos-report.html" in uses["actions/upload-artifact"]["with"]["path"]
    assert {"push", "pull_request"} <= set(workflow[True]), "this repository runs it"  # PyYAML reads `on:` as True
