"""A real Kubernetes node on this machine: kubelet, containerd, runc, a CNI bridge and kube-proxy.

Started next to a ``ControlPlane`` (localcluster/controlplane.py) whose API server listens on the
node's address, so that pods reach it through the `kubernetes` Service like in any cluster::

    node = RealNode(workdir, bin_dir)
    node.network_up()                       # the node's bridge and address; needs root
    plane = ControlPlane(..., **node.control_plane_options()).start()
    node.start(plane)                       # Ready, with the images of hack/build-images.sh
    ...
    node.stop(); plane.stop(); node.network_down()

What it takes on these machines (shared/notes/real-node.md has the measurements):
- containerd 1.6 runs by hand with its own root, state and socket in the work directory, runc on
  cgroupfs, and ``restrict_oom_score_adj`` (CAP_SYS_RESOURCE is not in the bounding set here, so
  runc could not raise a container's oom_score_adj and every sandbox would fail);
- the node's address is a /32 on a bridge of its own (the kubelet refuses loopback and the kernel
  has no dummy module); pods sit on a second bridge, a /24, whose gateway is the host: their
  traffic ends on this machine (ip_forward stays off, nothing is masqueraded or routed off it);
- the kubelet runs in a mount namespace of its own where /proc/sys's kernel tunables it would set
  (vm.overcommit_memory, kernel.panic, ...) are files of the work directory: the machine's own
  values are never changed. Its root directory is a shared bind mount, so the volumes it mounts
  there are seen by containerd;
- the API server authenticates to the kubelet with a client certificate, and the kubelet asks the
  API server (webhook authentication and authorization) whether to serve it, as in a cluster;
- kube-proxy in nftables mode gives Services their ClusterIPs: its table is the only firewall
  state it adds, NodePorts answer only on the node's address, and the service range is routed to
  the node's bridge, so no packet for a ClusterIP can leave through the machine's own interface;
- paths the kubelet and containerd write outside the work directory whatever their flags (the
  device-plugins directory, the CNI result cache, network namespaces, shim sockets, the kubepods
  cgroups) are recorded before the start and removed at stop().
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster.controlplane import (
    REPO_ROOT,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    ControlPlaneError,
    _pick_port,
    _Process,
    wait_for_probe,
)

NODE_NAME = "chaosguard-node"
NODE_BRIDGE = "cg-node0"  # holds only the node's address
NODE_IP = "10.240.0.1"
POD_BRIDGE = "cg-pods0"  # the CNI bridge; the host is the pods' gateway
POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
KUBELET_USER = f"system:node:{NODE_NAME}"
KUBE_PROXY_USER = "system:kube-proxy"  # bound to system:node-proxier by the default RBAC policy
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"  # CN of the API server's client certificate
IMAGES_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
#: No registry is reachable here: examples/shop-workload.yaml's image is the local pause image, tagged
#: with the name the example uses (it only sleeps, as the real one does).
IMAGE_ALIASES: Mapping[str, tuple[str, ...]] = {"pause": ("registry.k8s.io/pause:3.10",)}
#: What the faults' ephemeral containers run (deploy/Dockerfile.injector, built by hack/build-images.sh
#: under this name): the reference the operator is given wherever a test runs one.
INJECTOR_IMAGE = "docker.io/library/chaosguard-injector:dev"
#: What the stress fault's stress-ng runs in (the same Dockerfile's `stressor` target): --stressor-image.
STRESSOR_IMAGE = "docker.io/library/chaosguard-stressor:dev"
#: What the real node imports unless told otherwise.
NODE_IMAGES = ("pause", "e2e-app", "chaosguard", "injector", "stressor")
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
#: The kernel tunables the kubelet sets for the whole machine unless protectKernelDefaults (then it
#: exits): inside its mount namespace each is a file of the work directory holding the value it wants.
KUBELET_SYSCTLS: Mapping[str, str] = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
#: Written by the kubelet, containerd or the CNI plugins whatever their flags: cleaned at stop().
OUTSIDE_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
    Path("/var/run/netns"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: containerd's socket, named so that the shims of a real node whose test process was killed outright
#: (they outlive containerd by design) can be told apart from anything else's.
SOCKET_NAME = "chaosguard-containerd.sock"
#: The lock (one real node per machine: they share names and addresses) and what the node holding it
#: must clean up, kept where a later node finds it should this one's process be killed outright.
_STATE = Path("/run/chaosguard-realnode.json")


class RealNodeError(ControlPlaneError):
    """The real node could not be set up, started or stopped."""


def _run(*argv: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
    if check and result.returncode != 0:
        raise RealNodeError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def missing_prerequisites() -> list[str]:
    """What this machine lacks for a real node (empty when it can run one)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (network bridges, mounts, cgroups)")
    for tool in ("containerd", "ctr", "runc", "nft", "unshare", "buildah", "debootstrap", "ip"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} (hack/install-system-deps.sh installs it)")
    if not (CNI_BIN_DIR / "bridge").exists():
        problems.append(f"the CNI plugins in {CNI_BIN_DIR} (containernetworking-plugins)")
    return problems


def injector_image() -> str:
    """The injector image's reference, as the operator is told it (--injector-image) in every test:
    the real node has it imported (build_images), and a simulated node never pulls it."""
    return INJECTOR_IMAGE


def stressor_image() -> str:
    """The stressor image's reference (--stressor-image), like injector_image()."""
    return STRESSOR_IMAGE


def build_images(names: Sequence[str] = ()) -> dict[str, tuple[str, Path]]:
    """Builds (or finds in the cache) the images: {name: (reference, docker-archive)}."""
    result = subprocess.run(["bash", str(IMAGES_SCRIPT), *names], capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise RealNodeError(f"{IMAGES_SCRIPT} failed with code {result.returncode}:\n{tail}")
    images = {}
    for line in result.stdout.splitlines():
        name, reference, archive = line.split("\t")
        images[name] = (reference, Path(archive))
    for name, expected in (("injector", INJECTOR_IMAGE), ("stressor", STRESSOR_IMAGE)):
        if name in images and images[name][0] != expected:
            raise RealNodeError(f"{IMAGES_SCRIPT} built the {name} as {images[name][0]}, not {expected}")
    return images


# --- PKI ------------------------------------------------------------------------------------------


def _client_pki(directory: Path, common_name: str, organization: str | None) -> None:
    """A CA (client-ca.crt) and one client certificate signed by it (client.crt, client.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "client-ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "client.crt").write_bytes(cert.public_bytes(pem))
    key_path = directory / "client.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


# --- clean-up of what lands outside the work directory ---------------------------------------------


def _children(path: Path) -> set[str]:
    with contextlib.suppress(OSError):
        return {child.name for child in path.iterdir()}
    return set()


def _mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == str(prefix) or point.startswith(f"{prefix}/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _unmount_under(prefix: Path) -> None:
    for point in _mounts_under(prefix):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _kubepods_cgroups() -> list[Path]:
    found = []
    for controller in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        for name in ("kubepods", "kubepods.slice"):
            if (controller / name).is_dir():
                found.append(controller / name)
    return found


def _remove_cgroup_tree(root: Path) -> None:
    """rmdir bottom-up (cgroup directories cannot be removed with their files)."""
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


# --- the node --------------------------------------------------------------------------------------


class RealNode:
    """kubelet + containerd + CNI bridge + kube-proxy, as one Kubernetes Node on this machine."""

    def __init__(
        self, workdir: Path, bin_dir: Path, *, timeout: float = 120.0, stop_grace: float = 15.0, node_ip: str = NODE_IP
    ) -> None:
        self.workdir = Path(workdir).resolve()
        #: Where the kubelet listens and what the Node reports (a guest's node has its own: localcluster/guestnode.py).
        self.node_ip = node_ip
        self.bin_dir = Path(bin_dir).resolve()
        self.timeout = timeout
        self.stop_grace = stop_grace
        self.log_dir = self.workdir / "logs"
        self.pki_dir = self.workdir / "node-pki"
        self.containerd_dir = self.workdir / "containerd"
        self.kubelet_dir = self.workdir / "kubelet"
        self.cni_dir = self.workdir / "cni"
        #: Seconds from the start of start() until each step finished.
        self.timings: dict[str, float] = {}
        self.images: dict[str, tuple[str, Path]] = {}
        self._processes: list[_Process] = []
        self._outside: dict[Path, set[str] | None] = {}
        self._cgroups_before: set[Path] = set()
        self._network = False
        self._plane: ControlPlane | None = None

    # -- facts --

    @property
    def socket(self) -> Path:
        return self.containerd_dir / SOCKET_NAME

    @property
    def logs(self) -> dict[str, Path]:
        return {p.name: p.log_path for p in self._processes}

    def control_plane_options(self) -> dict[str, Any]:
        """What the ControlPlane needs for this node: listen on the node's address (pods reach it
        there through the `kubernetes` Service), the kubelet's and kube-proxy's identities, and a
        client certificate for the kubelet's API (exec, logs) checked against the kubelet's CA."""
        return {
            "bind_address": self.node_ip,
            "extra_users": {KUBELET_USER: ("system:nodes",), KUBE_PROXY_USER: ()},
            "apiserver_args": [
                f"--kubelet-client-certificate={self.pki_dir / 'apiserver-client' / 'client.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'apiserver-client' / 'client.key'}",
                f"--kubelet-certificate-authority={self.pki_dir / 'kubelet-serving' / 'ca.crt'}",
            ],
        }

    # -- lifecycle --

    def network_up(self) -> None:
        """The node's bridge and address, the route of the service range, and the PKI. Root only."""
        if problems := missing_prerequisites():
            raise RealNodeError("this machine cannot run a real node; missing: " + "; ".join(problems))
        self._take_lock()
        for directory in (self.workdir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._network = True
        self._delete_links()
        _run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{self.node_ip}/32", "dev", NODE_BRIDGE)
        _run("ip", "link", "set", NODE_BRIDGE, "up")
        # ClusterIPs exist only as kube-proxy's DNAT: unrouted, a packet for one would take the
        # default route off the machine. Routed to the node's bridge it goes nowhere instead.
        _run("ip", "route", "replace", SERVICE_CLUSTER_IP_RANGE, "dev", NODE_BRIDGE, "src", self.node_ip)
        shutil.rmtree(self.pki_dir, ignore_errors=True)
        from chaosguard.admission.webhook_tls import ensure_tls  # see controlplane._write_pki

        ensure_tls(self.pki_dir / "kubelet-serving", [NODE_NAME, self.node_ip])
        _client_pki(self.pki_dir / "apiserver-client", APISERVER_KUBELET_CLIENT, None)

    def network_down(self) -> None:
        if not self._network:
            return
        self._delete_links()
        self._network = False
        if _read_state().get("pid") == os.getpid():
            _STATE.unlink(missing_ok=True)

    def start(self, plane: ControlPlane, images: Mapping[str, tuple[str, Path]] | None = None) -> RealNode:
        """containerd (with the images imported), the kubelet and kube-proxy; returns when the Node
        is Ready and kube-proxy has programmed the `kubernetes` Service."""
        if not self._network:
            raise RealNodeError("call network_up() before start(), and before the control plane starts")
        self._plane = plane
        t0 = time.monotonic()
        try:
            self.images = dict(images) if images is not None else build_images(NODE_IMAGES)
            self.timings["images"] = time.monotonic() - t0
            self._record_outside()
            self._start_containerd()
            self._import_images()
            self.timings["containerd"] = time.monotonic() - t0
            self._grant_apiserver_kubelet_access()
            self._start_kubelet()
            self._wait(f"Node {NODE_NAME}", self._node_ready)
            self.timings["node-ready"] = time.monotonic() - t0
            self._start_kube_proxy()
            self._wait("the kubernetes Service in kube-proxy's rules", self._service_programmed)
            self.timings["kube-proxy"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stops every process and container and removes what they left outside the work directory.
        Idempotent; the network stays (network_down() removes it, after the control plane)."""
        errors: list[str] = []
        by_name = {p.name: p for p in self._processes}
        for name in ("kube-proxy", "kubelet"):
            if name in by_name:
                self._stop_process(by_name[name], errors)
        if "containerd" in by_name and by_name["containerd"].running():
            self._remove_all_containers(errors)
            self._stop_process(by_name["containerd"], errors)
        self._kill_shims()
        self._processes.clear()
        with contextlib.suppress(RealNodeError):
            for family in ("ip", "ip6"):
                _run("nft", "delete", "table", family, "kube-proxy", check=False)
        _clean_up(self.workdir, self._outside, self._cgroups_before)
        self._outside = {}
        if errors:
            raise RealNodeError("could not stop cleanly: " + "; ".join(errors))

    # -- steps --

    def _take_lock(self) -> None:
        """One real node per machine. A lock left by a process that died without its teardown is
        taken over, after what its node left is cleaned up."""
        state = _read_state()
        owner = state.get("pid")
        if isinstance(owner, int) and owner != os.getpid():
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                _reap_stale_node(state)
            else:
                raise RealNodeError(
                    f"another real node (process {owner}) is running on this machine: "
                    "stop it first (`make sandbox-down` for the sandbox)"
                )
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "workdir": str(self.workdir),
            "outside": {str(k): sorted(v) if v is not None else None for k, v in self._outside.items()},
            "cgroups_before": sorted(str(c) for c in self._cgroups_before),
        }
        _STATE.write_text(json.dumps(state))

    def _delete_links(self) -> None:
        for link in (POD_BRIDGE, NODE_BRIDGE):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "route", "del", SERVICE_CLUSTER_IP_RANGE, "dev", NODE_BRIDGE], capture_output=True)

    def _record_outside(self) -> None:
        self._outside = {path: _children(path) if path.exists() else None for path in OUTSIDE_PATHS}
        self._cgroups_before = set(_kubepods_cgroups())
        self._save_state()

    def _launch(self, name: str, argv: Sequence[str]) -> _Process:
        process = _Process(name, list(argv), self.log_dir / f"{name}.log", self.workdir)
        self._processes.append(process)
        return process

    def _start_containerd(self) -> None:
        root = self.containerd_dir
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(self.cni_dir, ignore_errors=True)
        (self.cni_dir / "net.d").mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "chaosguard",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,  # the bridge holds the gateway: pods reach the node's address
                    "ipMasq": False,  # nothing is masqueraded: the pods' traffic stays on this machine
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.cni_dir / "ipam"),
                    },
                }
            ],
        }
        (self.cni_dir / "net.d" / "10-chaosguard.conflist").write_text(json.dumps(conflist, indent=2))
        pause_reference = self.images["pause"][0]
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{root / "containerd.ttrpc.sock"}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{pause_reference}"
  # runc may not raise oom_score_adj here (no CAP_SYS_RESOURCE in the bounding set).
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.cni_dir / "net.d"}"
    max_conf_num = 1
"""
        root.mkdir(parents=True)
        (root / "config.toml").write_text(config)
        self._launch("containerd", ["containerd", f"--config={root / 'config.toml'}"])
        self._wait("containerd", lambda: self._ctr_answers())

    def _ctr(self, *args: str, timeout: float = 120) -> str:
        return _run("ctr", f"--address={self.socket}", "--namespace=k8s.io", *args, timeout=timeout)

    def _ctr_answers(self) -> tuple[bool, str]:
        try:
            self._ctr("version", timeout=5)
        except (RealNodeError, subprocess.TimeoutExpired) as error:
            return False, str(error)
        return True, "ctr version answered"

    def _import_images(self) -> None:
        for name, (reference, archive) in sorted(self.images.items()):
            self._ctr("images", "import", "--no-unpack=false", str(archive), timeout=300)
            listed = self._ctr("images", "ls", "-q")
            if reference not in listed.split():
                raise RealNodeError(f"importing {archive} did not give the image {reference}: {listed}")
            for alias in IMAGE_ALIASES.get(name, ()):
                self._ctr("images", "tag", "--force", reference, alias)

    def _grant_apiserver_kubelet_access(self) -> None:
        """The kubelet asks the API server (webhook authorization) whether the API server's own client
        certificate may use its API: bind the built-in role for that, as kubeadm does."""
        assert self._plane is not None
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "chaosguard-test:kube-apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APISERVER_KUBELET_CLIENT}],
        }
        status, body = self._plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        if status not in (201, 409):
            raise RealNodeError(f"binding system:kubelet-api-admin: HTTP {status} {body}")

    def _start_kubelet(self) -> None:
        assert self._plane is not None
        directory = self.kubelet_dir
        _unmount_under(directory)
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "root").mkdir(parents=True)
        # The volumes the kubelet mounts under its root directory must reach containerd, which runs in
        # the machine's mount namespace: a shared bind mount propagates them back out.
        root = str(directory / "root")
        _run("mount", "--bind", root, root)
        _run("mount", "--make-shared", root)
        sysctls = directory / "sysctl"
        binds = []
        for name, value in KUBELET_SYSCTLS.items():
            path = sysctls / name.replace("/", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{value}\n")
            if Path("/proc/sys", name).exists():
                binds.append(f'mount --bind "{path}" "/proc/sys/{name}"')
        wrapper = directory / "in-own-mount-namespace.sh"
        wrapper.write_text(
            "#!/bin/sh\n"
            "# Runs in the kubelet's own mount namespace (unshare -m): /proc becomes private to it, and the\n"
            "# kernel tunables it would set are bind-mounted files, so the machine's values stay as they are.\n"
            "set -eu\n"
            "mount --make-rprivate /proc\n" + "\n".join(binds) + '\nexec "$@"\n'
        )
        wrapper.chmod(0o755)
        port = _pick_port({self._plane_port()}, self.node_ip)
        healthz_port = _pick_port({port, self._plane_port()})
        self._kubelet_healthz = f"http://127.0.0.1:{healthz_port}/healthz"
        serving = self.pki_dir / "kubelet-serving"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine mounts cgroup v1 controllers
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.node_ip,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz_port,
            "tlsCertFile": str(serving / "tls.crt"),
            "tlsPrivateKeyFile": str(serving / "tls.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True, "cacheTTL": "30s"},
                "x509": {"clientCAFile": str(self.pki_dir / "apiserver-client" / "client-ca.crt")},
            },
            "authorization": {
                "mode": "Webhook",
                "webhook": {"cacheAuthorizedTTL": "30s", "cacheUnauthorizedTTL": "5s"},
            },
            "podLogsDir": str(directory / "pod-logs"),
            "volumePluginDir": str(directory / "volume-plugins"),
            "makeIPTablesUtilChains": False,
            "failSwapOn": False,
            "protectKernelDefaults": False,
            # No eviction and no image garbage collection: this machine's disk is not the node's alone.
            "evictionHard": {"memory.available": "0%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "logging": {"format": "text"},
        }
        (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            str(wrapper),
            str(self.bin_dir / "kubelet"),
            f"--config={directory / 'config.yaml'}",
            f"--kubeconfig={self._plane.kubeconfig_for(KUBELET_USER)}",
            f"--root-dir={root}",
            f"--cert-dir={directory / 'pki'}",
            f"--node-ip={self.node_ip}",
            f"--hostname-override={NODE_NAME}",
            "--node-labels=chaosguard.dev/real-node=true",
            "--v=1",
        ]
        self._launch("kubelet", argv)

    def _plane_port(self) -> int:
        assert self._plane is not None
        return int(self._plane.server.rsplit(":", 1)[1])

    def _start_kube_proxy(self) -> None:
        assert self._plane is not None
        directory = self.workdir / "kube-proxy"
        directory.mkdir(parents=True, exist_ok=True)
        health = _pick_port({self._plane_port()})
        metrics = _pick_port({self._plane_port(), health})
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self._plane.kubeconfig_for(KUBE_PROXY_USER))},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": CLUSTER_CIDR,
            "nodePortAddresses": [f"{self.node_ip}/32"],
            "healthzBindAddress": f"127.0.0.1:{health}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            # Zero: leave the machine's conntrack settings alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._launch("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={directory / 'config.yaml'}"])

    # -- readiness --

    def _wait(self, what: str, probe: Callable[[], tuple[bool, str]]) -> None:
        def tails() -> str:
            return "\n".join(p.log_tail(20) for p in self._processes)

        wait_for_probe(self._processes, what, probe, self.timeout, tails, RealNodeError)

    def _node_ready(self) -> tuple[bool, str]:
        assert self._plane is not None
        status, body = self._plane.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False, f"Node {NODE_NAME}: HTTP {status}"
        conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        return ready.get("status") == "True", f"Ready={ready.get('status')}: {ready.get('message', '')}"

    def _service_programmed(self) -> tuple[bool, str]:
        listed = subprocess.run(["nft", "list", "table", "ip", "kube-proxy"], capture_output=True, text=True)
        first_service_ip = SERVICE_CLUSTER_IP_RANGE.split("/")[0].rsplit(".", 1)[0] + ".1"
        ok = listed.returncode == 0 and first_service_ip in listed.stdout
        return ok, f"nft table ip kube-proxy: {listed.stderr.strip() or 'no rule for ' + first_service_ip}"

    # -- teardown --

    def _stop_process(self, process: _Process, errors: list[str]) -> None:
        try:
            process.stop(self.stop_grace)
        except Exception as error:
            errors.append(f"{process.name}: {error!r}")

    def _remove_all_containers(self, errors: list[str]) -> None:
        """Every container and pod sandbox of the k8s.io namespace, killed and deleted."""
        try:
            for task in self._ctr("tasks", "ls", "-q").split():
                subprocess.run(
                    ["ctr", f"--address={self.socket}", "--namespace=k8s.io", "tasks", "kill", "-s", "SIGKILL", task],
                    capture_output=True,
                )
                subprocess.run(
                    ["ctr", f"--address={self.socket}", "--namespace=k8s.io", "tasks", "delete", "-f", task],
                    capture_output=True,
                )
            for container in self._ctr("containers", "ls", "-q").split():
                subprocess.run(
                    ["ctr", f"--address={self.socket}", "--namespace=k8s.io", "containers", "delete", container],
                    capture_output=True,
                )
        except (RealNodeError, subprocess.TimeoutExpired) as error:
            errors.append(f"removing containers: {error}")

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; these are the ones started for our socket."""
        _kill_shims_of(str(self.socket).encode())


def _kill_shims_of(marker: bytes) -> None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _read_state() -> dict[str, Any]:
    try:
        state = json.loads(_STATE.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _reap_stale_node(state: Mapping[str, Any]) -> None:
    """What a real node whose process was killed outright (no teardown ran) left: its shims and its
    pods' processes, its firewall table, and the rest as stop() would have removed it."""
    _kill_shims_of(SOCKET_NAME.encode())
    for cgroup in _kubepods_cgroups():
        for procs in cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    for family in ("ip", "ip6"):
        subprocess.run(["nft", "delete", "table", family, "kube-proxy"], capture_output=True)
    outside = {Path(k): set(v) if v is not None else None for k, v in (state.get("outside") or {}).items()}
    before = {Path(c) for c in state.get("cgroups_before") or []}
    _clean_up(Path(str(state.get("workdir") or "")), outside, before)


def _clean_up(workdir: Path, outside: Mapping[Path, set[str] | None], cgroups_before: set[Path]) -> None:
    """Unmounts what is mounted under the work directory, removes the kubepods cgroups the node made
    (once their processes are gone) and whatever it created outside the work directory."""
    if workdir.is_absolute() and workdir != Path("/"):
        _unmount_under(workdir)
    deadline = time.monotonic() + 10
    for cgroup in _kubepods_cgroups():
        if cgroup in cgroups_before:
            continue
        while any(p.read_text().strip() for p in cgroup.rglob("cgroup.procs")) and time.monotonic() < deadline:
            time.sleep(0.1)  # killed processes leave their cgroup when the kernel has reaped them
        _remove_cgroup_tree(cgroup)
    netns = Path("/var/run/netns")
    for path, before in outside.items():
        created = _children(path) - (before or set())
        for name in sorted(created):
            child = path / name
            _unmount_under(child)
            if path == netns:
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
        if before is None and path != netns:  # `ip netns` owns that directory; only our namespaces go
            shutil.rmtree(path, ignore_errors=True)


def host_sysctls() -> dict[str, str]:
    """This machine's values of the tunables the kubelet would set (they must never change)."""
    values = {}
    for name in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def leftovers() -> list[str]:
    """What a stopped real node would have left on this machine; empty when it left nothing."""
    found = []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"network link {link}" for link in (NODE_BRIDGE, POD_BRIDGE) if f" {link}:" in links]
    routes = subprocess.run(["ip", "route", "show", SERVICE_CLUSTER_IP_RANGE], capture_output=True, text=True).stdout
    found += [f"route {route}" for route in routes.splitlines() if route.strip()]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found += [f"nftables {line}" for line in tables.splitlines() if "kube-proxy" in line]
    found += [f"network namespace {name}" for name in _children(Path("/var/run/netns")) if name.startswith("cni-")]
    found += [f"cgroup {cgroup}" for cgroup in _kubepods_cgroups()]
    for path in OUTSIDE_PATHS[:3]:
        if path.exists():
            found.append(f"path {path}")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
                if Path(argv0.decode(errors="replace")).name in ("kubelet", "kube-proxy", "containerd-shim-runc-v2"):
                    found.append(f"process {entry.name} {argv0.decode(errors='replace')}")
    return found


class Node(Protocol):
    """A node a control plane is started for: the real node here, or the one in the netem guest."""

    def network_up(self) -> None: ...

    def network_down(self) -> None: ...

    def control_plane_options(self) -> dict[str, Any]: ...

    def start(self, plane: ControlPlane, images: Mapping[str, tuple[str, Path]] | None) -> object: ...

    def stop(self) -> object: ...


NodeT = TypeVar("NodeT", bound=Node)


@contextlib.contextmanager
def real_cluster(
    workdir: Path, bin_dir: Path, images: Mapping[str, tuple[str, Path]] | None = None
) -> Iterator[tuple[ControlPlane, RealNode]]:
    """A control plane (no kwok nodes) and the real node, torn down in reverse order."""
    with cluster_with(RealNode(workdir / "node", bin_dir), workdir, bin_dir, images) as started:
        yield started


@contextlib.contextmanager
def cluster_with(
    node: NodeT, workdir: Path, bin_dir: Path, images: Mapping[str, tuple[str, Path]] | None = None
) -> Iterator[tuple[ControlPlane, NodeT]]:
    """A control plane (no kwok nodes) and `node`, torn down in reverse order."""
    node.network_up()
    try:
        plane = ControlPlane(workdir / "controlplane", bin_dir, nodes=0, **node.control_plane_options())
        with plane:
            node.start(plane, images)
            try:
                yield plane, node
            finally:
                node.stop()
    finally:
        node.network_down()


def _up(args: argparse.Namespace) -> int:
    from localcluster.controlplane import default_bin_dir

    bin_dir = Path(args.bin_dir) if args.bin_dir else default_bin_dir()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with real_cluster(Path(args.dir).resolve(), bin_dir) as (plane, node):
        print(f"node {NODE_NAME} Ready: {node.timings}", flush=True)
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.realnode")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a control plane and the real node; run until SIGINT/SIGTERM")
    up.add_argument("--dir", default=str(REPO_ROOT / ".work" / "realnode"))
    up.add_argument("--bin-dir")
    return _up(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
