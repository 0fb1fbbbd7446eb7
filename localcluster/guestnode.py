"""A real Kubernetes node inside the netem guest (localcluster/vm.py), joined to a control plane here.

This machine's kernel has no sch_netem, so the network faults can only end Failed on the host's real
node (localcluster/realnode.py). A distribution kernel booted under QEMU has it. This module runs
the same node, the kubelet, containerd, runc and the CNI bridge of RealNode, inside that guest::

    with guest_cluster(workdir, bin_dir, images) as (plane, node):
        ...                       # plane: a ControlPlane on this machine; the guest's Node is Ready

Choices, and why:
- The control plane runs here, not in the guest: under TCG (no KVM) every process in the guest runs
  some ten times slower, and etcd plus kube-apiserver would take most of the guest's two CPUs; the
  control plane's behaviour does not depend on the node's kernel. The same holds for the operator,
  which tests run here as a process against this control plane. What must be real in the guest is
  what touches the kernel: the kubelet, containerd/runc/CNI, the pods and the injector's container.
- The guest is joined by a tap link (TAP, a /30): QEMU's user networking only lets the guest dial
  out, but the API server must also dial the kubelet (exec, logs, ephemeral containers' attach),
  as in a cluster. The link holds only these two addresses; nothing is routed or forwarded.
- The node's work directory in the guest is a tmpfs (overlayfs, containerd's snapshotter, cannot
  use the guest's overlay root as its upper layer); its logs, the PKI and the control plane's
  kubeconfigs are in a directory shared read-write with the guest (9p).
- Images are only the small ones (pause and the e2e app, busybox-based, and the injector's): importing
  the operator's 456 MB image into containerd took more than 300 s under TCG, and the operator runs
  here anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from localcluster import vm
from localcluster.controlplane import ControlPlane
from localcluster.realnode import (
    APISERVER_KUBELET_CLIENT,
    KUBELET_USER,
    NODE_NAME,
    RealNode,
    RealNodeError,
    _client_pki,
    build_images,
    cluster_with,
    missing_prerequisites,
)

TAP = "cg-guest0"
GUEST_NODE_IP = "10.241.0.1"  # the guest's NIC: the Node's InternalIP, where the kubelet listens
HOST_IP = "10.241.0.2"  # this machine's end of the tap: where kube-apiserver listens for the guest
LINK_PREFIX = 30
GUEST_MEMORY = "2G"
#: The images the guest's node imports (busybox-based, a few MB each).
GUEST_IMAGES = ("pause", "e2e-app", "injector")
#: Kernel modules the node needs; loaded up front so no first use waits for the kernel's modprobe.
GUEST_MODULES = ("overlay", "bridge", "veth", "sch_netem", "sch_prio", "cls_u32", "sch_ingress", "cls_basic")
#: The guest's cgroup v2 root enables none; the kubelet's QoS cgroups need these.
CGROUP_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")
GUEST_WORKDIR = Path("/var/lib/chaosguard-guest-node")
SETTINGS = "guest-node.json"  # in the shared directory: what the guest needs to know
TIMINGS = "guest-timings.json"  # written by the guest: seconds since its boot for each step
STOP = "stop"  # created here when the guest should power off
LOCK = Path("/run/chaosguard-guestnode.lock")  # one guest node per machine


class GuestNodeError(RealNodeError):
    """The guest's node could not be set up, started or stopped."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise GuestNodeError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def guest_node_problem() -> str | None:
    """Why no guest node can run here, or None."""
    if problem := vm.boot_problem():
        return problem
    if problems := missing_prerequisites():
        return "the guest's node needs " + "; ".join(problems)
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing (the tap link to the guest)"
    return None


class _PlaneSeenFromGuest(ControlPlane):
    """The host's control plane as the guest's node knows it: its URL and the kubeconfigs it wrote."""

    def __init__(self, workdir: Path, bin_dir: Path, server: str) -> None:
        super().__init__(workdir, bin_dir, nodes=0)
        self._server = server

    @property
    def server(self) -> str:
        return self._server


class GuestNode:
    """The guest (QEMU, TCG) with a kubelet, containerd, runc and CNI, as one Node of `plane`."""

    def __init__(self, workdir: Path, bin_dir: Path, *, timeout: float = 600.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve()
        self.timeout = timeout
        self.share = self.workdir / "share"  # read-write in the guest, at the same path
        # Its PKI and Node facts; its processes run in the guest (GuestSideNode).
        self.spec = RealNode(self.share / "node", self.bin_dir, node_ip=GUEST_NODE_IP)
        #: Seconds from the start of start(): boot (the guest runs our command), containerd, images,
        #: kubelet (started), node-ready (as the API server reports it).
        self.timings: dict[str, float] = {}
        self.guest: vm.GuestProcess | None = None
        self._network = False
        self._lock: IO[str] | None = None

    def control_plane_options(self) -> dict[str, Any]:
        return {**self.spec.control_plane_options(), "bind_address": HOST_IP}

    def network_up(self) -> None:
        """The tap link and the node's PKI. Root only. Waits for any other guest node on this machine
        to stop first (they would share the tap's name and addresses)."""
        if problem := guest_node_problem():
            raise GuestNodeError(problem)
        self._lock = LOCK.open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        shutil.rmtree(self.share, ignore_errors=True)
        self.share.mkdir(parents=True)
        subprocess.run(["ip", "link", "del", TAP], capture_output=True)
        self._network = True
        _run("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
        _run("ip", "addr", "add", f"{HOST_IP}/{LINK_PREFIX}", "dev", TAP)
        _run("ip", "link", "set", TAP, "up")
        from chaosguard.admission.webhook_tls import ensure_tls  # see controlplane._write_pki

        pki = self.spec.pki_dir
        ensure_tls(pki / "kubelet-serving", [NODE_NAME, GUEST_NODE_IP])
        _client_pki(pki / "apiserver-client", APISERVER_KUBELET_CLIENT, None)

    def network_down(self) -> None:
        if self._network:
            subprocess.run(["ip", "link", "del", TAP], capture_output=True)
            self._network = False
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def start(self, plane: ControlPlane, images: Mapping[str, tuple[str, Path]] | None = None) -> GuestNode:
        """Boots the guest, which starts containerd (images imported) and the kubelet; returns when
        the Node is Ready."""
        t0 = time.monotonic()
        try:
            chosen = dict(images) if images is not None else build_images(GUEST_IMAGES)
            self.spec._plane = plane
            self.spec._grant_apiserver_kubelet_access()
            settings = {
                "server": plane.server,
                "controlplane": str(plane.workdir),
                "kubelet_kubeconfig": str(plane.kubeconfig_for(KUBELET_USER)),
                "images": {name: [reference, str(archive)] for name, (reference, archive) in chosen.items()},
            }
            (self.share / SETTINGS).write_text(json.dumps(settings, indent=2))
            self.guest = vm.start_guest(
                f"{sys.executable} -m localcluster.guestnode in-guest --share {self.share}",
                self.share,
                memory=GUEST_MEMORY,
                qemu_opts=[
                    f"-netdev tap,id=cgnet,ifname={TAP},script=no,downscript=no",
                    "-device virtio-net-pci,netdev=cgnet",
                ],
            )
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.guest is not None
        deadline = t0 + self.timeout
        while True:
            if self.guest.up_at is not None and "boot" not in self.timings:
                self.timings["boot"] = self.guest.up_at - t0
            if not self.guest.running():
                raise GuestNodeError(f"the guest powered off before its Node was Ready:\n{self.log_tail()}")
            ready, detail = self.spec._node_ready()
            if ready:
                break
            if time.monotonic() > deadline:
                raise GuestNodeError(
                    f"Node {NODE_NAME} not Ready after {self.timeout:.0f}s: {detail}\n{self.log_tail()}"
                )
            time.sleep(0.5)
        self.timings["node-ready"] = time.monotonic() - t0
        boot, up = self.timings.get("boot"), self.guest.up_uptime
        if boot is not None and up is not None:
            for step, uptime in self.guest_timings().items():
                self.timings[step] = round(boot + uptime - up, 2)

    def guest_timings(self) -> dict[str, float]:
        """The guest's own timings: its uptime at each step."""
        with contextlib.suppress(OSError, ValueError):
            return {str(k): float(v) for k, v in json.loads((self.share / TIMINGS).read_text()).items()}
        return {}

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        if self.guest is not None:
            parts.append("--- guest console ---\n" + "\n".join(self.guest.output().splitlines()[-lines:]))
        for log in sorted((self.share / "node" / "logs").glob("*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines // 2 :])
            parts.append(f"--- {log.name} ---\n{tail}")
        return "\n".join(parts)

    def stop(self, timeout: float = 120.0) -> vm.GuestRun | None:
        """Asks the guest to power off (killed after `timeout` seconds). Idempotent."""
        if self.guest is None:
            return None
        (self.share / STOP).touch()
        run = self.guest.wait(timeout)
        self.guest = None
        return run


@contextlib.contextmanager
def guest_cluster(
    workdir: Path, bin_dir: Path, images: Mapping[str, tuple[str, Path]] | None = None
) -> Iterator[tuple[ControlPlane, GuestNode]]:
    """A control plane here (no kwok nodes) and the guest's node, torn down in reverse order."""
    with cluster_with(GuestNode(workdir / "guest", bin_dir), workdir, bin_dir, images) as started:
        yield started


# --- inside the guest ------------------------------------------------------------------------------


class GuestSideNode(RealNode):
    """RealNode's containerd and kubelet, run in the guest; the host did the rest."""

    def __init__(self, share: Path, bin_dir: Path) -> None:
        super().__init__(GUEST_WORKDIR, bin_dir, node_ip=GUEST_NODE_IP)
        shared = RealNode(share / "node", bin_dir)
        self.pki_dir = shared.pki_dir
        self.log_dir = shared.log_dir
        settings = json.loads((share / SETTINGS).read_text())
        self._plane = _PlaneSeenFromGuest(Path(settings["controlplane"]), bin_dir, settings["server"])
        self.images = {name: (reference, Path(archive)) for name, (reference, archive) in settings["images"].items()}

    def run(self, share: Path) -> None:
        timings: dict[str, float] = {}

        def step(name: str) -> None:
            timings[name] = _uptime()
            (share / TIMINGS).write_text(json.dumps(timings))

        step("python-started")
        _prepare_guest()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        step("guest-prepared")
        self._start_containerd()
        step("containerd")
        self._import_images()
        step("images")
        self._start_kubelet()
        step("kubelet")
        while not (share / STOP).exists():
            for process in self._processes:
                if not process.running():
                    raise GuestNodeError(f"{process.name} exited:\n{process.log_tail()}")
            time.sleep(0.5)


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _prepare_guest() -> None:
    """Kernel modules, cgroup controllers, the NIC's address and the node's tmpfs."""
    for module in GUEST_MODULES:
        _run("modprobe", module, check=False)
    controllers = " ".join(f"+{name}" for name in CGROUP_CONTROLLERS)
    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text(controllers)
    nics = sorted(name for name in os.listdir("/sys/class/net") if name != "lo")
    if not nics:
        raise GuestNodeError("the guest has no network interface (the tap link)")
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "addr", "add", f"{GUEST_NODE_IP}/{LINK_PREFIX}", "dev", nics[0])
    _run("ip", "link", "set", nics[0], "up")
    GUEST_WORKDIR.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", "mode=0755", "chaosguard-guest-node", str(GUEST_WORKDIR))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.guestnode")
    commands = parser.add_subparsers(dest="command", required=True)
    in_guest = commands.add_parser("in-guest", help="(run by the guest) start containerd and the kubelet")
    in_guest.add_argument("--share", required=True)
    in_guest.add_argument("--bin-dir")
    args = parser.parse_args(argv)
    from localcluster.controlplane import default_bin_dir

    bin_dir = Path(args.bin_dir) if args.bin_dir else default_bin_dir()
    share = Path(args.share)
    GuestSideNode(share, bin_dir).run(share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
