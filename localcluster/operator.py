"""The chaosguard operator as a real process (`python -m chaosguard run`), plus helpers tests share
for workloads, experiments, policies and Events — all through the API, as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.controlplane import POD_READY_DELAY_ANNOTATION, ControlPlane
from localcluster.realnode import injector_image, stressor_image
from localcluster.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "chaosguard.dev", "v1alpha1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signing_key_file(kubeconfig: Path) -> Path:
    """The harness's signing key for operators of the control plane whose admin kubeconfig this is."""
    return kubeconfig.parent / "chaosguard-signing.key"


class OperatorProcess:
    """`chaosguard run` in its own process group, logging to a file, ready once /healthz answers.

    The test harness's defaults, unlike a real install's:
    - `allow_unverified_authors` (default True): most tests create experiments as admin through the API
      with no admission webhook (starting one per test, and keeping it registered across the restarts
      many tests make, would cost each of them a TLS setup and a window where every create fails), so
      the harness opts out of the author check with CHAOSGUARD_ALLOW_UNVERIFIED_AUTHORS=true. Tests of
      the secure default (test_admission, test_run_record) pass False; so does every test with webhooks.
    - a signing key: the one in CHAOSGUARD_NAMESPACE's Secret when the test sets that, else a key file
      beside the control plane's kubeconfig, the same for every operator of the session, so a run one
      operator sealed verifies for the next one (as the Secret does for replicas of a real install).
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        allow_unverified_authors: bool = True,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = dict(env or {})
        self.args = list(args)  # extra `chaosguard run` options, e.g. --webhook-port
        if allow_unverified_authors:
            self.env.setdefault("CHAOSGUARD_ALLOW_UNVERIFIED_AUTHORS", "true")
        # What a network fault's ephemeral containers run, as a user's install names it.
        self.env.setdefault("CHAOSGUARD_INJECTOR_IMAGE", injector_image())
        self.env.setdefault("CHAOSGUARD_STRESSOR_IMAGE", stressor_image())
        if "CHAOSGUARD_NAMESPACE" not in self.env and "--signing-key-file" not in self.args:
            self.args += ["--signing-key-file", str(signing_key_file(kubeconfig))]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0

    def start(self) -> OperatorProcess:
        self.port = _free_port()
        self.metrics_port = _free_port()
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosguard",
                "run",
                "--kubeconfig",
                str(self.kubeconfig),
                "--liveness",
                f"http://127.0.0.1:{self.port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        log.close()
        wait_for(self._healthy, timeout=60, what="the operator's /healthz", describe=self.log_tail)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-flight, as in a node failure or OOM kill."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_operator(
    control_plane: ControlPlane, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(control_plane.kubeconfig, workdir / "operator.log", env).start()
    try:
        yield operator
    finally:
        operator.stop()


#: The webhook configurations the installs ship (deploy/base; the chart renders the same ones).
WEBHOOK_CONFIGURATIONS_MANIFEST = REPO / "deploy" / "base" / "webhooks.yaml"
WEBHOOK_CONFIGURATION_KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


def webhook_configurations_at(url: str, ca_pem: bytes | None = None) -> list[dict[str, Any]]:
    """The shipped webhook configurations, each webhook reached at `url` plus its path instead of through
    the Service: for operators that run as processes on this machine, where the API server calls them on
    loopback. Without `ca_pem` the caBundle is left for the operator to set (--webhook-tls-secret)."""
    import base64

    configurations = [doc for doc in yaml.safe_load_all(WEBHOOK_CONFIGURATIONS_MANIFEST.read_text()) if doc]
    for configuration in configurations:
        for webhook in configuration["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": url.rstrip("/") + path}
            if ca_pem is not None:
                webhook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
    return configurations


def install_webhook_configurations(control_plane: ControlPlane, url: str, ca_pem: bytes | None = None) -> None:
    """What the installs do, for an operator on loopback: the operator itself never creates them."""
    text = yaml.safe_dump_all(webhook_configurations_at(url, ca_pem))
    control_plane.kubectl("apply", "-f", "-", input=text)


def remove_webhook_configurations(control_plane: ControlPlane) -> None:
    for kind in WEBHOOK_CONFIGURATION_KINDS:
        control_plane.kubectl("delete", kind, "chaosguard.dev", "--ignore-not-found")


def install_crds(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-k", str(REPO / "crds"))
    for crd in ("chaosexperiments", "chaospolicies", "chaosapprovals"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}.{GROUP}", "--timeout=60s")


# --------------------------------------------------------------------------- workloads


def label_namespace(api: client.ApiClient, namespace: str, labels: Mapping[str, str | None]) -> None:
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": dict(labels)}})


def create_deployment(
    api: client.ApiClient,
    namespace: str,
    name: str,
    replicas: int,
    labels: Mapping[str, str] | None = None,
    ready_after: str | None = None,
) -> None:
    """A Deployment of pause pods; `ready_after` (e.g. "8s") makes every pod, replacements included,
    take that long to become Ready, as real containers do."""
    pod_labels = {"app": name, **(labels or {})}
    annotations = {POD_READY_DELAY_ANNOTATION: ready_after} if ready_after else {}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, cast(client.V1Deployment, body)
    )  # the API client takes a dict as well
    wait_for_ready_pods(api, namespace, name, replicas)


def ready_pods(api: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        pod
        for pod in pods
        if pod.metadata is not None
        and pod.metadata.deletion_timestamp is None
        and pod.status is not None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def wait_for_ready_pods(api: client.ApiClient, namespace: str, app: str, count: int, timeout: float = 90) -> None:
    wait_for(
        lambda: len(ready_pods(api, namespace, app)) == count,
        timeout=timeout,
        what=f"{count} Ready pods of {namespace}/{app}",
        describe=lambda: f"{len(ready_pods(api, namespace, app))} Ready",
    )


# --------------------------------------------------------------------------- chaosguard objects


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def apply_yaml(control_plane: ControlPlane, text: str, namespace: str | None = None, user: str = "admin") -> str:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    return control_plane.kubectl(*args, input=text, user=user).stdout


def experiment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments", name)
    return cast(dict[str, Any], obj)


def status_of(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(experiment(api, namespace, name).get("status") or {})


def end_written(status: Mapping[str, Any]) -> bool:
    """Whether the last run's end has reached history too (true while no run has ended)."""
    last = (status.get("lastRun") or {}).get("id")
    return last is None or any(past.get("id") == last for past in status.get("history") or [])


def wait_for_phase(
    api: client.ApiClient, namespace: str, name: str, phases: set[str] | str, timeout: float = 60
) -> dict[str, Any]:
    """The status once it shows one of `phases` and the end of its last run is written in full: an end
    writes its verdict first (phase, lastRun) and its history and conditions in a second write."""
    wanted = {phases} if isinstance(phases, str) else phases

    def reached() -> dict[str, Any] | None:
        status = status_of(api, namespace, name)
        return status if status and status.get("phase") in wanted and end_written(status) else None

    reached_status = wait_for(
        reached,
        timeout=timeout,
        what=f"ChaosExperiment {namespace}/{name} to reach {sorted(wanted)}",
        describe=lambda: yaml.safe_dump(status_of(api, namespace, name))[:3000],
    )
    assert reached_status is not None  # wait_for returns only a truthy value
    return reached_status


def create_policy(api: client.ApiClient, name: str, spec: Mapping[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosPolicy", "metadata": {"name": name}, "spec": dict(spec)}
    custom(api).create_cluster_custom_object(GROUP, VERSION, "chaospolicies", body)


def delete_policy(api: client.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        custom(api).delete_cluster_custom_object(GROUP, VERSION, "chaospolicies", name)


def events_for(api: client.ApiClient, namespace: str, name: str, kind: str = "ChaosExperiment") -> list[Any]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
    )
    return sorted(events.items, key=lambda e: e.metadata.creation_timestamp)


def wait_for_event(api: client.ApiClient, namespace: str, name: str, reason: str, timeout: float = 30) -> Any:
    return wait_for(
        lambda: next((e for e in events_for(api, namespace, name) if e.reason == reason), None),
        timeout=timeout,
        what=f"an Event {reason} on {namespace}/{name}",
        describe=lambda: str([(e.reason, e.message) for e in events_for(api, namespace, name)]),
    )


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds


@pytest.fixture
def isolated_policies(k8s: client.ApiClient) -> Iterator[list[str]]:
    """Names of the ChaosPolicies a test creates; all are deleted at the end of the test."""
    names: list[str] = []
    yield names
    for name in names:
        delete_policy(k8s, name)


@pytest.fixture(scope="session")
def chaosguard_crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture(scope="session")
def chaos_operator(
    chaosguard_crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session; tests that restart or reconfigure it start their own."""
    with running_operator(chaosguard_crds, tmp_path_factory.mktemp("operator")) as operator:
        yield operator


@pytest.fixture
def slow_shop(k8s: client.ApiClient, namespace: str) -> str:
    """Like `shop`, but pods take 8 s to become Ready, so a killed pod stays missing for a while."""
    label_namespace(k8s, namespace, {"chaosguard.dev/chaos": "allowed", "chaosguard.dev/test": namespace})
    create_deployment(k8s, namespace, "checkout", 5, ready_after="8s")
    return namespace


@pytest.fixture
def shop(k8s: client.ApiClient, namespace: str) -> str:
    """A namespace opted in to chaos, labelled for test-scoped policies, with 5 checkout pods."""
    label_namespace(k8s, namespace, {"chaosguard.dev/chaos": "allowed", "chaosguard.dev/test": namespace})
    create_deployment(k8s, namespace, "checkout", 5)
    return namespace


def new_shop(api: client.ApiClient, namespace: str) -> None:
    """A new namespace opted in to chaos with 5 checkout pods: the benchmarks' target."""
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    label_namespace(api, namespace, {"chaosguard.dev/chaos": "allowed"})
    create_deployment(api, namespace, "checkout", 5)


def scoped_policy(namespace: str, **spec: Any) -> dict[str, Any]:
    """A policy spec that applies only to one test's namespace, so tests do not see each other's."""
    return {"namespaceSelector": {"matchLabels": {"chaosguard.dev/test": namespace}}, **spec}


@pytest.fixture
def operator_at(
    chaos_operator: OperatorProcess, chaosguard_crds: ControlPlane, tmp_path: Path
) -> Iterator[Callable[[datetime], OperatorProcess]]:
    """Restarts the operator with its clock moved to a given instant (CHAOSGUARD_CLOCK_OFFSET_SECONDS);
    the session's operator is back, on real time, when the test ends."""
    started: list[OperatorProcess] = []

    def start_at(moment: datetime) -> OperatorProcess:
        for operator in started:
            operator.stop()
        chaos_operator.stop()
        offset = (moment - datetime.now(UTC)).total_seconds()
        log = tmp_path / f"operator-{len(started)}.log"
        operator = OperatorProcess(
            chaosguard_crds.kubeconfig, log, {"CHAOSGUARD_CLOCK_OFFSET_SECONDS": f"{offset:.3f}"}
        )
        started.append(operator.start())
        return operator

    yield start_at
    for operator in started:
        operator.stop()
    chaos_operator.start()


def experiment_yaml(
    name: str,
    *,
    mode: str = "one",
    value: int | None = None,
    duration: str = "3s",
    interval: str | None = None,
    dry_run: bool = False,
) -> str:
    lines = [
        "apiVersion: chaosguard.dev/v1alpha1",
        "kind: ChaosExperiment",
        f"metadata: {{name: {name}}}",
        "spec:",
        "  action: pod-kill",
        "  podKill: {gracePeriodSeconds: 1}",
        "  target:",
        "    selector: {matchLabels: {app: checkout}}",
        f"    mode: {mode}",
        *([f"    value: {value}"] if value is not None else []),
        f"  duration: {duration}",
        *([f"  interval: {interval}"] if interval else []),
        *(["  dryRun: true"] if dry_run else []),
    ]
    return "\n".join(lines) + "\n"


def experiment_names(k8s: client.ApiClient, namespace: str) -> set[str]:
    listed = client.CustomObjectsApi(k8s).list_namespaced_custom_object(GROUP, VERSION, namespace, "chaosexperiments")
    return {item["metadata"]["name"] for item in cast(dict[str, Any], listed)["items"]}
