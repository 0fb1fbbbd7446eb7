"""`make demo`: a local Kubernetes control plane (or the cluster $KUBECONFIG points at), the
operator, a 5-replica shop workload, a safe default policy and one pod-kill experiment, shown as
it runs and with its status at the end. Everything it starts is stopped when it ends."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.controlplane import ControlPlane, default_bin_dir
from tests.support.operator import (
    create_deployment,
    events_for,
    install_crds,
    label_namespace,
    running_operator,
    status_of,
)

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "shop"
EXPERIMENT = "checkout-pod-kill"


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def local_control_plane(workdir: Path) -> Iterator[ControlPlane]:
    say("starting a local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok (3 nodes)")
    with ControlPlane(workdir, default_bin_dir()) as plane:
        say(f"control plane ready; kubeconfig: {plane.kubeconfig}")
        yield plane


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


def show_run(plane: ControlPlane, api: client.ApiClient) -> None:
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = status_of(api, NAMESPACE, EXPERIMENT)
        phase = status.get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
            say(f"phase {phase}: {status.get('message', '')}")
        if phase in ("Completed", "Aborted", "Failed", "Rejected"):
            break
        time.sleep(0.5)
    print(plane.kubectl("get", "chaosexperiments", "-n", NAMESPACE, "-o", "wide").stdout)
    run: dict[str, Any] = status_of(api, NAMESPACE, EXPERIMENT).get("lastRun") or {}
    print(f"run {run.get('id')}: {run.get('phase')} — {run.get('message')}")
    for kill in run.get("kills", []):
        recovered = kill.get("recoveredAfterSeconds")
        back = f"workload back at full strength after {recovered}s" if recovered is not None else "not yet recovered"
        print(f"  {kill['result']:<8} {kill['name']} (uid {kill['uid'][:8]}…) by {kill['method']}; {back}")
    print("\nEvents:")
    for event in events_for(api, NAMESPACE, EXPERIMENT):
        print(f"  {event.type:<7} {event.reason:<18} {event.message}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-demo-"))
    external = os.environ.get("KUBECONFIG")
    with contextlib.ExitStack() as stack:
        if external:
            say(f"using the cluster in KUBECONFIG={external}")
            plane = ExternalCluster(Path(external), default_bin_dir())  # type: ignore[assignment]
        else:
            plane = stack.enter_context(local_control_plane(workdir))
        api = plane.api_client()
        say("installing the CRDs generated from the models (crds/)")
        install_crds(plane)
        say("starting the operator: chaosguard run")
        operator = stack.enter_context(running_operator(plane, workdir))
        say(f"operator is live (log: {operator.log_path})")
        say("applying examples/policy-default.yaml: opt-in required, at most 40 % of a workload down")
        plane.kubectl("apply", "-f", str(REPO / "examples" / "policy-default.yaml"))
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        label_namespace(api, NAMESPACE, {"chaosguard.dev/chaos": "allowed"})
        say("deploying 5 replicas of checkout into namespace shop (opted in)")
        with contextlib.suppress(client.ApiException):
            create_deployment(api, NAMESPACE, "checkout", 5)
        say("chaosguard validate -f examples/pod-kill-percent.yaml --policy examples/policy-default.yaml")
        from chaosguard.cli import main as chaosguard

        chaosguard(
            [
                "validate",
                "-f",
                str(REPO / "examples/pod-kill-percent.yaml"),
                "--policy",
                str(REPO / "examples/policy-default.yaml"),
            ]
        )
        say("kubectl apply -n shop -f examples/pod-kill-percent.yaml")
        plane.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "pod-kill-percent.yaml"))
        show_run(plane, api)
        say("done; stopping the operator and the control plane")
    return 0


if __name__ == "__main__":
    sys.exit(main())
