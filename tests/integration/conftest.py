"""Fixtures for tests against the real local control plane (etcd, kube-apiserver, KCM, scheduler, kwok)."""

from __future__ import annotations

import contextlib
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaosguard.decisions.injector_image import INJECTOR_IMAGE_VARIABLE, STRESSOR_IMAGE_VARIABLE
from localcluster.controlplane import ControlPlane, ControlPlaneError, default_bin_dir, format_timings
from localcluster.realnode import injector_image, stressor_image


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    # KeyboardInterrupt makes pytest stop and still run fixture teardown, which stops the processes.
    raise KeyboardInterrupt(f"received signal {signum}")


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """Show `line` on the terminal even while output is being captured."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def told_the_fault_images() -> Iterator[None]:
    """Drivers that tests run in this process are told the images as `chaosguard run` is (the operator
    processes get them from localcluster.operator): there is no default, by design."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INJECTOR_IMAGE_VARIABLE, injector_image())
        patch.setenv(STRESSOR_IMAGE_VARIABLE, stressor_image())
        yield


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """One control plane for the whole test session, with 3 Ready kwok nodes."""
    try:
        bin_dir = default_bin_dir()
    except ControlPlaneError as error:
        pytest.fail(f"cannot get the control-plane binaries: {error}", pytrace=False)
    workdir: Path = tmp_path_factory.mktemp("controlplane")
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    plane = ControlPlane(workdir, bin_dir)
    try:
        with plane:
            _report(request, f"{format_timings(plane.timings)}; logs in {plane.log_dir}")
            yield plane
    finally:
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def k8s(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An admin `kubernetes` client."""
    api = control_plane.api_client()
    with api:
        yield api


def create_namespace(api: client.ApiClient, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    client.CoreV1Api(api).create_namespace(body)
    return name


@pytest.fixture
def namespace(k8s: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    prefix = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    name = create_namespace(k8s, prefix)
    yield name
    client.CoreV1Api(k8s).delete_namespace(name)


# The operator as a process, and the workload/policy fixtures built on it.
from localcluster.operator import chaos_operator, chaosguard_crds, isolated_policies, operator_at, shop, slow_shop  # noqa: E402,F401
