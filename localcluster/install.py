"""Installing chaosguard into a cluster the way README's "Install" section tells a user to, step for
step: with Helm (the chart in deploy/helm/chaosguard) or with kustomize (`kubectl apply -k`).

The e2e tests (tests/e2e) and `make sandbox` install through these functions, and a test checks
that README shows exactly these commands, so the documentation cannot drift from what is tested.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from localcluster.controlplane import REPO_ROOT

NAMESPACE = "chaosguard-system"
RELEASE = "chaosguard"
DEPLOYMENT = "chaosguard"
CRDS = ("chaosexperiments.chaosguard.dev", "chaospolicies.chaosguard.dev", "chaosapprovals.chaosguard.dev")
ROLLOUT_TIMEOUT = "300s"

ROLLOUT_STATUS = (
    "kubectl",
    "-n",
    NAMESPACE,
    "rollout",
    "status",
    f"deployment/{DEPLOYMENT}",
    f"--timeout={ROLLOUT_TIMEOUT}",
)
#: README's Helm install, as argv (the first word is the tool).
HELM_INSTALL: Sequence[Sequence[str]] = (
    (
        "helm",
        "install",
        RELEASE,
        "deploy/helm/chaosguard",
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        "image.tag=dev",
        "--set",
        "injector.image.tag=dev",
        "--wait",
        f"--timeout={ROLLOUT_TIMEOUT}",
    ),
    ROLLOUT_STATUS,
)
HELM_UNINSTALL: Sequence[Sequence[str]] = (("helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"),)
#: README's kustomize install, as argv: CRDs first (deploy/base has a ChaosPolicy, which needs its CRD).
KUSTOMIZE_INSTALL: Sequence[Sequence[str]] = (
    ("kubectl", "apply", "--server-side", "-k", "crds"),
    ("kubectl", "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{crd}" for crd in CRDS)),
    ("kubectl", "apply", "--server-side", "-k", "deploy/overlays/kind"),
    ROLLOUT_STATUS,
)
KUSTOMIZE_UNINSTALL: Sequence[Sequence[str]] = (
    ("kubectl", "delete", "--ignore-not-found", "--wait", "-k", "deploy/overlays/kind"),
)

Run = Callable[[Sequence[str]], str]


def runner(bin_dir: Path, kubeconfig: Path) -> Run:
    """Runs one step with the pinned kubectl and helm against the cluster of `kubeconfig`."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(kubeconfig.parent / "helm-cache")}
    env["HELM_CONFIG_HOME"] = str(kubeconfig.parent / "helm-config")
    env["HELM_DATA_HOME"] = str(kubeconfig.parent / "helm-data")

    def run(step: Sequence[str]) -> str:
        argv = [str(bin_dir / step[0]), *step[1:]]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"`{' '.join(step)}` failed ({result.returncode}):\n{result.stderr}\n{result.stdout}")
        return result.stdout

    return run


def run_steps(run: Run, steps: Sequence[Sequence[str]]) -> None:
    for step in steps:
        run(step)


def readme_commands(steps: Sequence[Sequence[str]]) -> list[str]:
    """The steps as README shows them, one shell command each."""
    return [" ".join(step) for step in steps]
