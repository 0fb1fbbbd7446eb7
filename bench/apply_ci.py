"""`chaosguard apply --wait` as CI runs it, as a real process against a local control plane with the
operator running: how long after a run ends the command exits with its verdict, and how long a Ctrl-C
(SIGINT, with --abort-on-interrupt) takes to abort the run and exit.

- apply_run_end_to_exit: from the run's `finishedAt` in status (the operator's clock, the same machine)
  to the process's exit, for a 2 s pod-kill run. The command polls every second, so up to about 1 s.
- apply_interrupt_to_exit: from SIGINT, sent once the run's first kill is in status, to the process's
  exit with the run recorded Aborted (the abort request, the operator's rollback, the command's check).
RUNS of each on one operator."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client

from bench.apply_to_kill import percentile
from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import (
    REPO,
    create_deployment,
    experiment_names,
    experiment_yaml,
    install_crds,
    label_namespace,
    running_operator,
    status_of,
)
from localcluster.wait import wait_for

RUNS = 10
NAMESPACE = "bench"


def apply(plane: ControlPlane, path: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "chaosguard", "apply", "-f", str(path), "-n", NAMESPACE, "--wait", *extra]
    argv += ["--kubeconfig", str(plane.kubeconfig)]
    return subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def run() -> dict[str, tuple[float, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="chaosguard-bench-apply-"))
    to_exit: list[float] = []
    interrupted: list[float] = []
    with ControlPlane(workdir / "cp", default_bin_dir()) as plane:
        install_crds(plane)
        with running_operator(plane, workdir):
            api = plane.api_client()
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
            label_namespace(api, NAMESPACE, {"chaosguard.dev/chaos": "allowed"})
            create_deployment(api, NAMESPACE, "checkout", 5)
            for index in range(RUNS):
                name = f"ends-{index}"
                path = workdir / f"{name}.yaml"
                path.write_text(experiment_yaml(name, duration="2s"))
                process = apply(plane, path)
                assert process.wait(120) == 0, f"{name}: exit {process.returncode}"
                exited = datetime.now(UTC)
                finished = datetime.fromisoformat(status_of(api, NAMESPACE, name)["lastRun"]["finishedAt"])
                to_exit.append((exited - finished).total_seconds())

                name = f"interrupted-{index}"
                path = workdir / f"{name}.yaml"
                path.write_text(experiment_yaml(name, duration="2m", interval="2s"))
                process = apply(plane, path, "--abort-on-interrupt")
                wait_for(
                    lambda n=name: (
                        n in experiment_names(api, NAMESPACE)
                        and (status_of(api, NAMESPACE, n).get("currentRun") or {}).get("killsTotal", 0)
                    ),
                    timeout=60,
                    what=f"the first kill of {name}",
                )
                sent = time.perf_counter()
                process.send_signal(signal.SIGINT)
                assert process.wait(120) == 1, f"{name}: exit {process.returncode}"
                interrupted.append(time.perf_counter() - sent)
                assert status_of(api, NAMESPACE, name)["lastRun"]["phase"] == "Aborted"
    print(
        f"# apply_ci: {RUNS} runs each; run end to exit median {statistics.median(to_exit):.3f}s "
        f"(max {max(to_exit):.3f}s); SIGINT to exit median {statistics.median(interrupted):.3f}s "
        f"(max {max(interrupted):.3f}s)"
    )
    return {
        "apply_run_end_to_exit_p50": (statistics.median(to_exit), "s"),
        "apply_run_end_to_exit_p95": (percentile(to_exit, 0.95), "s"),
        "apply_interrupt_to_exit_p50": (statistics.median(interrupted), "s"),
        "apply_interrupt_to_exit_p95": (percentile(interrupted, 0.95), "s"),
    }
