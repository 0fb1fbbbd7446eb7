"""`make sandbox`: a cluster to try chaosguard by hand, left running until `make sandbox-down`.

A control plane and a real node on this machine (localcluster/realnode.py), a Prometheus that pods
reach on the node's address, and the operator installed from its image with Helm, exactly as
README's install section (and the e2e tests) do it. `up` runs in the background (the Makefile starts
it with nohup) and writes `<dir>/env` with the `export KUBECONFIG=...` line once all is ready;
`wait` blocks until then; `down` stops it, which removes everything it made.

    python -m localcluster.sandbox up --dir .work/sandbox
    python -m localcluster.sandbox wait --dir .work/sandbox
    python -m localcluster.sandbox down --dir .work/sandbox
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from localcluster import install
from localcluster.controlplane import REPO_ROOT, default_bin_dir
from localcluster.prometheus import PrometheusServer
from localcluster.realnode import NODE_IP, build_images, real_cluster

DEFAULT_DIR = REPO_ROOT / ".work" / "sandbox"
START_TIMEOUT = 900.0  # a cold machine builds the images first


def _up(directory: Path) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (directory / "env").unlink(missing_ok=True)
    started = time.monotonic()
    bin_dir = default_bin_dir()
    images = build_images()
    print(f"images ready in {time.monotonic() - started:.0f}s", flush=True)
    with real_cluster(directory, bin_dir, images) as (plane, node):
        print(f"node Ready: {node.timings}", flush=True)
        prometheus = PrometheusServer(directory / "prometheus", [], host=NODE_IP).start()
        try:
            install.run_steps(install.runner(bin_dir, plane.kubeconfig), install.HELM_INSTALL)
            lines = [
                f"export KUBECONFIG={plane.kubeconfig}",
                f"export PATH={bin_dir}:$PATH  # the pinned kubectl and helm",
                f"# Prometheus, for spec.steadyState.prometheus.url: {prometheus.url}",
                f"# logs: {plane.log_dir} and {node.log_dir}; stop with: make sandbox-down",
            ]
            (directory / "env").write_text("\n".join(lines) + "\n")
            print(f"sandbox ready in {time.monotonic() - started:.0f}s", flush=True)
            while not stop.wait(1.0):
                dead = [name for name, alive in plane.running().items() if not alive]
                dead += [p.name for p in node._processes if not p.running()]
                if dead:
                    print(f"stopping: {', '.join(dead)} exited", file=sys.stderr, flush=True)
                    return 1
        finally:
            prometheus.stop()
            (directory / "env").unlink(missing_ok=True)
    return 0


def _pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _wait(directory: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while not (directory / "env").exists():
        if _pid(directory) is None or time.monotonic() > deadline:
            log = (directory / "sandbox.log").read_text(errors="replace").splitlines()[-40:]
            print("the sandbox did not start:\n" + "\n".join(log), file=sys.stderr)
            return 1
        time.sleep(1)
    print((directory / "env").read_text(), end="")
    return 0


def _down(directory: Path) -> int:
    pid = _pid(directory)
    if pid is None:
        print("no sandbox is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while _pid(directory) is not None:
        if time.monotonic() > deadline:
            print(f"the sandbox (process {pid}) did not stop within 120s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    (directory / "pid").unlink(missing_ok=True)
    print("sandbox stopped; everything it made is gone")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "wait", "down"))
    parser.add_argument("--dir", default=str(DEFAULT_DIR))
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return {"up": _up, "wait": _wait, "down": _down}[args.command](directory)


if __name__ == "__main__":
    sys.exit(main())
