"""`make demo`: everything chaosguard does, end to end, on this machine.

It starts a local Kubernetes control plane (or uses the cluster $KUBECONFIG points at), a local
Prometheus scraping a small metrics endpoint that stands in for the shop's error ratio, and the
operator; deploys 5 replicas of a shop workload and a safe default policy; then runs two
experiments: a pod-kill that completes, and an SLO-guarded pod-kill that an SLI breach aborts.
It prints each run's status and game-day report. Everything it starts is stopped at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    create_deployment,
    events_for,
    install_crds,
    label_namespace,
    running_operator,
    status_of,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "shop"
TERMINAL = ("Completed", "Aborted", "Failed", "Rejected")


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


class ExternalCluster:
    """A cluster the user already has (kind, for example), driven with the pinned kubectl."""

    def __init__(self, kubeconfig: Path, bin_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_path = bin_dir / "kubectl"

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, input=input, capture_output=True, text=True, check=True)

    def api_client(self) -> client.ApiClient:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def follow(api: client.ApiClient, name: str, on_running: Any = None, timeout: float = 180) -> dict[str, Any]:
    """Prints each phase as it changes until the experiment ends; `on_running` is called once."""
    last = None
    deadline = time.monotonic() + timeout
    called = False
    while time.monotonic() < deadline:
        status = status_of(api, NAMESPACE, name)
        phase = status.get("phase")
        if phase != last:
            say(f"  {name}: {phase} — {status.get('message', '')}")
            last = phase
        if phase == "Running" and on_running is not None and not called:
            called = True
            on_running()
        if phase in TERMINAL:
            return status
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not finish within {timeout:.0f}s")


def show(plane: Any, api: client.ApiClient, name: str) -> None:
    print(plane.kubectl("get", "chaosexperiment", name, "-n", NAMESPACE, "-o", "wide").stdout)
    print("Events:")
    for event in events_for(api, NAMESPACE, name):
        print(f"  {event.type:<7} {event.reason:<20} {event.message}")
    print()
    from chaosguard.cli.main import main as chaosguard

    say(f"chaosguard report {name} -n {NAMESPACE}")
    chaosguard(["report", name, "-n", NAMESPACE, "--kubeconfig", str(plane.kubeconfig)])
    print()


def guarded_experiment(prometheus_url: str) -> str:
    """examples/slo-guarded.yaml pointed at the demo's Prometheus and its stand-in error ratio."""
    manifest = yaml.safe_load((REPO / "examples" / "slo-guarded.yaml").read_text())
    steady = manifest["spec"]["steadyState"]
    steady["prometheus"]["url"] = prometheus_url
    steady["conditions"][0]["query"] = 'demo_error_ratio{app="checkout"}'
    steady["conditions"][0]["for"] = "2s"
    return yaml.safe_dump(manifest)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-demo-"))
    external = os.environ.get("KUBECONFIG")
    with contextlib.ExitStack() as stack:
        if external:
            say(f"using the cluster in KUBECONFIG={external}")
            plane: Any = ExternalCluster(Path(external), default_bin_dir())
        else:
            say("starting a local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok")
            plane = stack.enter_context(ControlPlane(workdir / "cluster", default_bin_dir()))
            say(f"control plane ready ({plane.timings.get('total', 0):.1f}s); kubeconfig: {plane.kubeconfig}")
        api = plane.api_client()

        say("starting Prometheus (1 s scrapes) and a metrics endpoint standing in for the shop's error ratio")
        target = stack.enter_context(MetricsTarget())
        target.set_error_ratio(0.001, app="checkout")
        prometheus = stack.enter_context(PrometheusServer(workdir / "prometheus", [target]))
        prometheus.wait_for_value('demo_error_ratio{app="checkout"}', equals(0.001))
        say(f"Prometheus ready at {prometheus.url}")

        say("kubectl apply -k crds/   (the CRDs, generated from the models)")
        install_crds(plane)
        operator = stack.enter_context(running_operator(plane, workdir))
        say(f"operator running: chaosguard run   (log: {operator.log_path})")
        say("kubectl apply -f examples/policy-default.yaml   (opt-in required, at most 40 % of a workload down)")
        plane.kubectl("apply", "-f", str(REPO / "examples" / "policy-default.yaml"))
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        label_namespace(api, NAMESPACE, {"chaosguard.dev/chaos": "allowed"})
        say("5 replicas of checkout in namespace shop, opted in with chaosguard.dev/chaos=allowed")
        with contextlib.suppress(client.ApiException):
            create_deployment(api, NAMESPACE, "checkout", 5)

        from chaosguard.cli.main import main as chaosguard

        say("chaosguard validate -f examples/pod-kill-percent.yaml --policy examples/policy-default.yaml")
        chaosguard(
            [
                "validate",
                "-f",
                str(REPO / "examples/pod-kill-percent.yaml"),
                "--policy",
                str(REPO / "examples/policy-default.yaml"),
            ]
        )

        say("1/2  kubectl apply -n shop -f examples/pod-kill-percent.yaml   (kill 40 % of checkout, once)")
        plane.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "pod-kill-percent.yaml"))
        follow(api, "checkout-pod-kill")
        show(plane, api, "checkout-pod-kill")

        say("2/2  an SLO-guarded pod-kill (examples/slo-guarded.yaml): one pod every 10 s for 2 minutes,")
        say("     aborted as soon as the error ratio stays at 1 % or more for 2 s")

        def break_checkout() -> None:
            say("  the shop starts failing: error ratio 0.001 -> 0.2")
            target.set_error_ratio(0.2, app="checkout")

        plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=guarded_experiment(prometheus.url))
        follow(api, "checkout-guarded-kill", on_running=break_checkout)
        show(plane, api, "checkout-guarded-kill")
        say("done; stopping the operator, Prometheus and the control plane")
    return 0


if __name__ == "__main__":
    sys.exit(main())
