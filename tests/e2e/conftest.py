"""End-to-end tests against a kind cluster with the operator's image installed (`make e2e-kind`).

They run only with `--e2e`, and only when kubectl's current context is a kind cluster (its name
starts with `kind-`): they create namespaces, a cluster-wide ChaosPolicy and kill pods, so they
must never reach a real cluster. Every kubectl call names the context checked at the start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.example_flow import Kubectl

E2E_DIR = Path(__file__).resolve().parent
OPERATOR_NAMESPACE = "chaosguard-system"
OPERATOR_DEPLOYMENT = "chaosguard"
_CONTEXT = pytest.StashKey[str]()
SKIP_REASON = "e2e tests need a kind cluster with chaosguard installed: run `make e2e-kind` (pytest tests/e2e --e2e)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run tests/e2e against the current kubectl context, which must be a kind cluster (kind-*)",
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
    if not config.getoption("--e2e", default=False):
        for item in e2e_items:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        return
    context = _current_context(_kubectl_binary())
    if not context.startswith("kind-"):
        raise pytest.UsageError(
            f"refusing to run the e2e tests against kubectl context {context!r}: they kill pods and create "
            "cluster-wide objects, so they only run against a kind cluster (a context named kind-*). "
            "Run `make e2e-kind`, or `kubectl config use-context kind-<cluster>`."
        )
    config.stash[_CONTEXT] = context


@pytest.fixture(scope="session")
def kind_context(pytestconfig: pytest.Config) -> str:
    """The kind context checked at collection; every kubectl call below is pinned to it."""
    return pytestconfig.stash[_CONTEXT]


@pytest.fixture(scope="session")
def kubectl(kind_context: str) -> Kubectl:
    binary = _kubectl_binary()

    def run(*args: str, input: str | None = None) -> str:
        argv = [binary, f"--context={kind_context}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    return run


@pytest.fixture(scope="session")
def installed_operator(kubectl: Kubectl) -> None:
    """The operator (deploy/overlays/kind) is rolled out; a clear message when it is not."""
    try:
        kubectl("rollout", "status", "-n", OPERATOR_NAMESPACE, f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=180s")
    except AssertionError as error:
        pytest.fail(
            f"the operator is not running in {OPERATOR_NAMESPACE}: install it with "
            f"`kubectl apply -k deploy/overlays/kind` (make e2e-kind does)\n{error}",
            pytrace=False,
        )


@pytest.fixture
def e2e_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace name; the test creates the namespace, and it is deleted afterwards."""
    name = f"chaosguard-e2e-{uuid.uuid4().hex[:6]}"
    yield name
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")
