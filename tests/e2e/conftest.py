"""End-to-end tests: chaosguard installed from its own image, the way a user installs it, on a node
with a real kubelet and real containers. The same tests run in two places:

- here, through `make test` (so CI runs them): a control plane and a real node on this machine
  (localcluster/realnode.py), the images built with buildah (hack/build-images.sh), the operator
  installed with Helm for the whole suite, then once with `kubectl apply -k` for a smoke test
  (tests marked `kustomize`, which run last);
- in users' CI against a kind cluster (`make e2e-kind`, `pytest tests/e2e --e2e`), where the
  Makefile installed the operator with kustomize. They run only when kubectl's current context is
  a kind cluster (its name starts with `kind-`): they create namespaces and a cluster-wide
  ChaosPolicy and kill pods, so they must never reach a real cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster import install
from localcluster.controlplane import REPO_ROOT, ControlPlane, default_bin_dir
from tests.support.example_flow import Kubectl

E2E_DIR = Path(__file__).resolve().parent
OPERATOR_NAMESPACE = install.NAMESPACE
OPERATOR_DEPLOYMENT = install.DEPLOYMENT
APP_IMAGE = "chaosguard-e2e-app:dev"  # tests/e2e/app; hack/build-images.sh here, docker build for kind
#: What every install here names as the injector (Helm's injector.image.tag=dev, the kind overlay's
#: `images:`): hack/build-images.sh builds it and the real node imports it; `make image` for kind.
INJECTOR_IMAGE = "chaosguard-injector:dev"
#: What the stress fault's stress-ng runs in (Helm's stressor image follows injector.image.tag).
STRESSOR_IMAGE = "chaosguard-stressor:dev"
_CONTEXT = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run tests/e2e against the current kubectl context, which must be a kind cluster (kind-*), "
        "instead of the real node this machine starts",
    )


def _kubectl_binary() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise pytest.UsageError("the e2e tests need kubectl on PATH (or $KUBECTL)")
    return found


def _current_context(kubectl: str) -> str:
    result = subprocess.run([kubectl, "config", "current-context"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise pytest.UsageError(f"no current kubectl context: {result.stderr.strip()}; run `make e2e-kind`")
    return result.stdout.strip()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_items = [item for item in items if E2E_DIR in item.path.parents]
    if not e2e_items:
        return
    # The kustomize smoke test replaces the Helm install: after every other e2e test.
    items.sort(key=lambda item: item in e2e_items and item.get_closest_marker("kustomize") is not None)
    if not config.getoption("--e2e", default=False):
        from localcluster.realnode import missing_prerequisites

        if problems := missing_prerequisites():
            reason = "the real node needs " + "; ".join(problems) + " (or run them on kind: make e2e-kind)"
            for item in e2e_items:
                item.add_marker(pytest.mark.skip(reason=reason))
        return
    context = _current_context(_kubectl_binary())
    if not context.startswith("kind-"):
        raise pytest.UsageError(
            f"refusing to run the e2e tests against kubectl context {context!r}: they kill pods and create "
            "cluster-wide objects, so they only run against a kind cluster (a context named kind-*). "
            "Run `make e2e-kind`, or `kubectl config use-context kind-<cluster>`."
        )
    config.stash[_CONTEXT] = context


@dataclass
class E2ECluster:
    """Where the e2e tests run: this machine's real node, or a kind cluster (`plane` is None)."""

    kubectl: Kubectl
    #: The argv that starts kubectl against this cluster, for long-running commands (logs -f).
    kubectl_command: list[str]
    plane: ControlPlane | None = None
    bin_dir: Path | None = None
    node_has_netem: bool = True
    #: This machine's kernel tunables before the node started (the kubelet must not change them).
    sysctls_before: dict[str, str] | None = None

    @property
    def real_node(self) -> bool:
        return self.plane is not None

    def install_step_runner(self) -> install.Run:
        assert self.plane is not None and self.bin_dir is not None
        return install.runner(self.bin_dir, self.plane.kubeconfig)


def _kernel_has_netem() -> bool:
    """Whether this machine's kernel (the real node's) can add a netem qdisc: asked in a throwaway
    network namespace, so nothing of the machine's own is touched."""
    name = f"chaosguard-netem-probe-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
        )
        return result.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _kubectl_for(plane: ControlPlane) -> Kubectl:
    def run(*args: str, input: str | None = None) -> str:
        result = plane.kubectl(*args, input=input, check=False, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"`kubectl {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    return run


@pytest.fixture(scope="session")
def e2e_cluster(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    if pytestconfig.getoption("--e2e"):
        context = pytestconfig.stash[_CONTEXT]
        binary = _kubectl_binary()

        def run(*args: str, input: str | None = None) -> str:
            argv = [binary, f"--context={context}", *args]
            result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise AssertionError(f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr}")
            return result.stdout

        yield E2ECluster(run, [binary, f"--context={context}"])
        return
    from localcluster.realnode import build_images, host_sysctls, leftovers, real_cluster

    bin_dir = default_bin_dir()
    images = build_images()
    workdir = Path(os.environ.get("CHAOSGUARD_E2E_DIR") or tmp_path_factory.mktemp("e2e-real-node"))
    sysctls, before = host_sysctls(), set(leftovers())
    with real_cluster(workdir, bin_dir, images) as (plane, _node):
        command = [str(plane.kubectl_path), f"--kubeconfig={plane.kubeconfig}"]
        yield E2ECluster(_kubectl_for(plane), command, plane, bin_dir, _kernel_has_netem(), sysctls)
    # The node is gone, and so is everything it made outside its work directory.
    left = sorted(set(leftovers()) - before)
    assert not left, f"the real node left behind: {left}"
    assert host_sysctls() == sysctls, "the kubelet changed this machine's kernel tunables"


@pytest.fixture(scope="session")
def kubectl(e2e_cluster: E2ECluster) -> Kubectl:
    return e2e_cluster.kubectl


def _rolled_out(kubectl: Kubectl) -> None:
    try:
        kubectl("rollout", "status", "-n", OPERATOR_NAMESPACE, f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=300s")
    except AssertionError as error:
        pytest.fail(f"the operator is not running in {OPERATOR_NAMESPACE}:\n{error}", pytrace=False)


@pytest.fixture(scope="session")
def helm_install(e2e_cluster: E2ECluster) -> Iterator[str]:
    """Here: README's Helm install, once for the session; on kind, what the Makefile installed."""
    if not e2e_cluster.real_node:
        _rolled_out(e2e_cluster.kubectl)
        yield "kustomize (make e2e-kind)"
        return
    run = e2e_cluster.install_step_runner()
    install.run_steps(run, install.HELM_INSTALL)
    _rolled_out(e2e_cluster.kubectl)
    yield "helm"


@pytest.fixture(scope="session")
def installed_operator(helm_install: str) -> str:
    """The operator is installed and rolled out; returns how it was installed."""
    return helm_install


@pytest.fixture(scope="session")
def kustomize_install(e2e_cluster: E2ECluster, helm_install: str) -> Iterator[str]:
    """Here: the Helm release goes, and README's kustomize install replaces it (tests marked
    `kustomize` run after all others); on kind the Makefile already installed with kustomize."""
    if not e2e_cluster.real_node:
        yield helm_install
        return
    run = e2e_cluster.install_step_runner()
    install.run_steps(run, install.HELM_UNINSTALL)
    install.run_steps(run, install.KUSTOMIZE_INSTALL)
    _rolled_out(e2e_cluster.kubectl)
    yield "kustomize"


@pytest.fixture
def e2e_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace name; the test creates the namespace, and it is deleted afterwards."""
    name = f"chaosguard-e2e-{uuid.uuid4().hex[:6]}"
    yield name
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


__all__ = ["APP_IMAGE", "REPO_ROOT", "E2ECluster"]


def check_ran_from_the_injector_image(pod: dict[str, Any], stressor: str = "") -> None:
    """Every chaosguard container the operator added to the pod names the injector image (the one named
    `stressor`, if given, the stressor image), and the kubelet ran that image (its report names the image
    it resolved), never the operator's."""
    added = [c for c in pod["spec"].get("ephemeralContainers", []) if c["name"].startswith("chaosguard-")]
    assert added, f"the operator added no container to pod {pod['metadata']['name']}"
    wanted = {c["name"]: STRESSOR_IMAGE if c["name"] == stressor else INJECTOR_IMAGE for c in added}
    assert {c["name"]: c["image"] for c in added} == wanted
    ran = [s for s in pod["status"].get("ephemeralContainerStatuses", []) if s["name"].startswith("chaosguard-")]
    for status in ran:
        if status.get("imageID"):
            assert status["image"].rsplit("/", 1)[-1] == wanted[status["name"]], (status["name"], status["image"])
