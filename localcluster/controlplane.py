"""A real Kubernetes control plane for integration tests, without Docker.

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from the
binaries that ``hack/build-control-plane.sh`` builds, all on 127.0.0.1 and free ports, and
registers fake kwok Nodes on which ordinary pods are scheduled and become Running and Ready.

    with ControlPlane(workdir, bin_dir) as cp:
        cp.kubectl("get", "nodes")
        cp.kubectl("auth", "whoami", user="alice")

From a shell (used by ``make demo`` and ``make bench``)::

    python -m localcluster.controlplane up --dir .work/controlplane
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import dataclasses
import datetime
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"

#: Pre-made static-token users and their groups (every one is also system:authenticated).
USERS: Mapping[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    "alice": (),
    "bob": ("sre-leads",),
    "mallory": (),
    "carol": ("sre-leads",),
}

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_IP = "127.0.0.1"  # loopback: anything that dials a "kubelet" stays on this machine
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME = "chaosguard"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: kwok's stage files (copied next to bin/ by the build script) that make nodes and pods live.
KWOK_STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
#: A pod annotated with this (a Go duration, e.g. "20s") becomes Ready only after that long, like a
#: real container that takes time to start; tests of the blast-radius cap need replacements to lag.
POD_READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"


def _with_ready_delay(stage: str) -> str:
    delay = (
        "  delay:\n"
        "    durationMilliseconds: 0\n"
        "    durationFrom:\n"
        f"      expressionFrom: '.metadata.annotations[\"{POD_READY_DELAY_ANNOTATION}\"]'\n"
    )
    if "\nspec:\n" not in stage or "delay:" in stage:
        raise ControlPlaneError("kwok's pod-ready stage changed shape; update _with_ready_delay")
    return stage.replace("\nspec:\n", "\nspec:\n" + delay, 1)


_HEALTH_PATHS = "/healthz,/readyz,/livez,/metrics"
_NOT_SCHEDULABLE_TAINTS = frozenset(
    {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "node.kubernetes.io/unschedulable"}
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or asked to do something."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike CalledProcessError, its message shows kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}"


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def _pick_port(taken: Collection[int], host: str = "127.0.0.1") -> int:
    """A free port on `host` (and 127.0.0.1), preferably outside the kernel's ephemeral range.

    Binding port 0 hands out a port from the ephemeral range, which is also where the source
    ports of outgoing connections come from: between our check and the daemon's own bind, the
    apiserver's many connections to etcd took such a port often enough to fail start-up
    ("bind: address already in use"). Ports below that range are only taken by listeners,
    and the bind test below sees those. A daemon that still loses the race is relaunched.
    """
    low, high = _ephemeral_port_range()
    if low - 10000 >= 2000:
        pool = range(10000, low)
    elif 65535 - high >= 2000:
        pool = range(high + 1, 65536)
    else:
        pool = range(0, 1)  # no room outside the ephemeral range: let the kernel choose
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(pool)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                if host != "127.0.0.1":
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
                        other.bind((host, port))
            except OSError:
                continue
            chosen = int(s.getsockname()[1])
        if chosen not in taken:
            return chosen
    raise ControlPlaneError("found no free port on 127.0.0.1")


def _advertise_address() -> str:
    """The host's non-loopback IPv4 address, which kube-apiserver publishes for the `kubernetes` Service.

    Loopback is not allowed there, and with --bind-address=127.0.0.1 the apiserver would otherwise
    look for a default route itself and refuse to start without one.
    """
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))  # no packet is sent: this only asks the kernel for a route
        address = s.getsockname()[0]
        if not ipaddress.ip_address(address).is_loopback:
            return str(address)
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = info[4][0]
            if not ipaddress.ip_address(address).is_loopback:
                return str(address)
    # No usable interface: any non-loopback address will do, nothing here connects to it.
    return "192.0.2.1"


# --- process plumbing -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover
    _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # SIGKILL, not SIGTERM: with its parent gone nobody escalates, and a kube-apiserver whose
    # etcd died with it can hang in graceful shutdown. Everything it has is disposable.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Process:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # Own process group, so that teardown signals the whole group and a Ctrl-C in a terminal
        # reaches only us; and (Linux, main thread) die when the test process dies, even by SIGKILL.
        # PR_SET_PDEATHSIG fires when the forking *thread* exits, hence the main-thread condition.
        preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,  # only set on the main thread, see above
        )

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(could not read {self.log_path}: {error})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}"

    def stop(self, grace: float) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it."""
        try:
            if self.popen.poll() is None:
                # The leader is not reaped yet, so its pid is still our process group's id.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(10)
        finally:
            self._log.close()


def wait_for_probe(
    processes: Sequence[_Process],
    what: str,
    probe: Callable[[], tuple[bool, str]],
    timeout: float,
    tails: Callable[[], str],
    error: type[ControlPlaneError] | None = None,
) -> None:
    """Poll `probe` (ready, detail) until it is ready; fail fast with its log tail when one of
    `processes` died, or after `timeout` seconds with `tails()` (the logs that may say why)."""
    failure = error or ControlPlaneError
    deadline = time.monotonic() + timeout
    while True:
        for started in processes:
            if not started.running():
                raise failure(
                    f"{started.name} exited with code {started.popen.returncode} while waiting "
                    f"for {what}\n{started.log_tail()}"
                )
        ready, detail = probe()
        if ready:
            return
        if time.monotonic() > deadline:
            raise failure(f"{what} not ready after {timeout:.0f}s: {detail}\n{tails()}")
        time.sleep(0.1)


def _remove_orphaned_data_dirs(parent: Path) -> None:
    """Remove etcd data left in tmpfs by control planes whose Python process was killed outright."""
    for directory in parent.glob(f"{_DATA_DIR_PREFIX}*"):
        try:
            owner = int((directory / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


_DATA_DIR_PREFIX = "chaosguard-etcd-"
_LAUNCH_ATTEMPTS = 3


@dataclasses.dataclass
class _Daemon:
    """How to launch one listening process, and how to tell that it is ready."""

    name: str  # also the binary's name
    ports: Sequence[str]  # names of the ports to pick (afresh for each launch)
    args: Callable[[], Sequence[str]]
    probe: Callable[[], tuple[bool, str]]
    before_launch: Callable[[], None] | None = None
    process: _Process | None = None
    attempt: int = 0

    def lost_port_race(self) -> bool:
        """It died because one of its ports was taken between our check and its bind."""
        process = self.process
        return process is not None and not process.running() and "address already in use" in process.log_tail(10)


_LIVE: set[ControlPlane] = set()  # started and not yet stopped; strong refs, so atexit sees them


@atexit.register
def _stop_all_at_exit() -> None:
    for plane in list(_LIVE):
        plane.stop()


# --- PKI ------------------------------------------------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _write_pki(pki: Path, server_ips: Sequence[str], server_names: Sequence[str]) -> None:
    """CA + apiserver serving cert (the operator's own generator: ca.crt, tls.crt, tls.key) and the
    service-account key pair, all ECDSA P-256 (fast to make)."""
    # Imported here: it pulls in the Kubernetes client, which a guest node's Python never needs
    # (localcluster/guestnode.py: every import costs seconds under TCG).
    from chaosguard.admission.webhook_tls import ensure_tls

    ensure_tls(pki, ["kube-apiserver", *server_names, *server_ips])

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


# --- the control plane ----------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, with fake Nodes.

    ``workdir`` receives the PKI, kubeconfigs, kwok config and ``logs/<process>.log``; etcd's data
    goes to a fresh directory on /dev/shm when it is writable (removed on stop()).
    """

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path,
        *,
        nodes: int = 3,
        timeout: float = 120.0,
        stop_grace: float = 15.0,
        bind_address: str = "127.0.0.1",
        apiserver_args: Sequence[str] = (),
        extra_users: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """`bind_address`: where kube-apiserver listens and what it advertises for the `kubernetes`
        Service when it is not loopback (a real node's address, so that pods reach it);
        `apiserver_args` are appended to its flags; `extra_users` are static-token users beside
        USERS (a kubelet's system:node:NAME, kube-proxy's system:kube-proxy)."""
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve()
        self.node_names: list[str] = [f"kwok-node-{i}" for i in range(nodes)]
        self.timeout = timeout
        self.stop_grace = stop_grace
        self.bind_address = bind_address
        self.apiserver_args = list(apiserver_args)
        self._users: dict[str, tuple[str, ...]] = {**USERS, **(extra_users or {})}
        self.log_dir = self.workdir / "logs"
        self.pki_dir = self.workdir / "pki"
        self.kubeconfig_dir = self.workdir / "kubeconfigs"
        #: Seconds from the start of start() until each step finished; "total" at the end.
        self.timings: dict[str, float] = {}
        self._tokens: dict[str, str] = {}
        self._processes: list[_Process] = []
        self._data_dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # -- public read-only facts --

    @property
    def server(self) -> str:
        """The API server URL, e.g. https://127.0.0.1:43121."""
        return f"https://{self.bind_address}:{self._port('apiserver')}"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig."""
        return self.workdir / "admin.kubeconfig"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def users(self) -> Mapping[str, tuple[str, ...]]:
        """Static-token user names and their groups."""
        return self._users

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._port('etcd')}"

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of every process started so far, by name."""
        return {p.name: p.log_path for p in self._processes}

    def token_for(self, user: str) -> str:
        if user not in self._tokens:
            raise ControlPlaneError(f"unknown user {user!r}: the static users are {sorted(self._users)}")
        return self._tokens[user]

    # -- lifecycle --

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every process in order and return once 3 (``nodes``) kwok Nodes are Ready.

        On any failure, everything already started is stopped again before the error propagates.
        """
        if self._started:
            raise ControlPlaneError("this ControlPlane is already started")
        self._started = True
        _LIVE.add(self)
        t0 = time.monotonic()
        try:
            self._prepare()
            self.timings["pki"] = time.monotonic() - t0
            self._await_daemons([self._launch_daemon(self._etcd())], t0)
            self._await_daemons([self._launch_daemon(self._apiserver())], t0)
            self._create_nodes()
            # The rest only need the API server: launch them in order, then wait for all.
            daemons = [self._controller_manager(), self._scheduler()]
            if self.node_names:  # kwok only runs fake nodes; none asked for, none started
                daemons.append(self._kwok())
            self._await_daemons([self._launch_daemon(d) for d in daemons], t0)
            self._wait_until("kube-controller-manager", self._default_service_account_exists)
            self.timings["default-serviceaccount"] = time.monotonic() - t0
            self._wait_until("kwok", self._nodes_ready)
            self.timings["nodes-ready"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every started process in reverse order (SIGTERM, wait, SIGKILL). Idempotent."""
        errors: list[str] = []
        while self._processes:
            process = self._processes.pop()
            try:
                process.stop(self.stop_grace)
            except Exception as error:  # keep stopping the others
                errors.append(f"{process.name}: {error!r}")
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
        _LIVE.discard(self)
        if errors:
            raise ControlPlaneError("could not stop cleanly: " + "; ".join(errors))

    def running(self) -> dict[str, bool]:
        """Whether each started process is still alive."""
        return {p.name: p.running() for p in self._processes}

    # -- clients --

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig that authenticates as the static-token `user` (written at start)."""
        path = self.kubeconfig_dir / f"{user}.kubeconfig"
        if not path.exists():
            self._write_kubeconfig(path, user, self.token_for(user))
        return path

    def service_account_token(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> str:
        """A token for ServiceAccount namespace/name from the TokenRequest API; creates the SA if missing."""
        sa_path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        status, body = self.request("GET", sa_path)
        if status == 404:
            status, body = self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
            if status not in (201, 409):
                raise ControlPlaneError(f"creating ServiceAccount {namespace}/{name}: HTTP {status} {body}")
        elif status != 200:
            raise ControlPlaneError(f"reading ServiceAccount {namespace}/{name}: HTTP {status} {body}")
        status, body = self.request(
            "POST",
            f"{sa_path}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name}: HTTP {status} {body}")
        return str(body["status"]["token"])

    def kubeconfig_for_service_account(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig with a fresh TokenRequest token of ServiceAccount namespace/name."""
        token = self.service_account_token(namespace, name, expiration_seconds=expiration_seconds)
        path = self.kubeconfig_dir / f"sa-{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(path, f"system:serviceaccount:{namespace}:{name}", token)
        return path

    def kubectl(
        self,
        *args: str,
        user: str = "admin",
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as `user` (or with `kubeconfig`); if check, failure raises KubectlError."""
        config = kubeconfig if kubeconfig is not None else self.kubeconfig_for(user)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        # A fresh discovery/OpenAPI cache for every call: a cache shared between calls goes stale
        # when a test installs CRDs (e.g. `kubectl explain` then fails once), and costs nothing here.
        with tempfile.TemporaryDirectory(prefix="kubectl-cache-") as cache_dir:
            argv = [str(self.kubectl_path), f"--kubeconfig={config}", f"--cache-dir={cache_dir}", *args]
            result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def api_client(self, user: str = "admin", *, kubeconfig: Path | None = None) -> ApiClient:
        """A `kubernetes` Python client authenticated as `user` (or from `kubeconfig`)."""
        from kubernetes import config

        path = kubeconfig if kubeconfig is not None else self.kubeconfig_for(user)
        api: ApiClient = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        return api

    def request(
        self, method: str, path: str, body: Any = None, *, user: str = "admin", timeout: float = 10.0
    ) -> tuple[int, Any]:
        """A raw API call as `user`: (HTTP status, decoded JSON body or text)."""
        headers = {"Authorization": f"Bearer {self.token_for(user)}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    # -- start-up steps --

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise ControlPlaneError("the control plane has not been started")
        return self._ports[name]

    def _binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise ControlPlaneError(f"{path} is missing or not executable; run hack/build-control-plane.sh")
        return str(path)

    def _prepare(self) -> None:
        for directory in (self.workdir, self.log_dir, self.kubeconfig_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for old_log in self.log_dir.glob("*.log"):
            old_log.unlink()
        self._ports = {}
        loopback = ipaddress.ip_address(self.bind_address).is_loopback
        self._advertise = _advertise_address() if loopback else self.bind_address
        _write_pki(
            self.pki_dir,
            server_ips=["127.0.0.1", self.bind_address, self._advertise, str(next(iter(self._service_ips())))],
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        self._ssl = None
        self._tokens = {user: secrets.token_urlsafe(32) for user in self._users}
        lines = []
        for index, (user, groups) in enumerate(self._users.items()):
            line = f"{self._tokens[user]},{user},uid-{index}-{user}"
            if groups:
                line += ',"' + ",".join(groups) + '"'
            lines.append(line)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)

        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK) and not self.workdir.is_relative_to(shm):
            _remove_orphaned_data_dirs(shm)
            self._data_dir = Path(tempfile.mkdtemp(prefix=_DATA_DIR_PREFIX, dir=shm))
            (self._data_dir / "owner.pid").write_text(f"{os.getpid()}\n")
        else:
            self._data_dir = self.workdir / "data"
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir.mkdir(parents=True)

    @staticmethod
    def _service_ips() -> Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()

    def _launch(self, name: str, binary: str, args: Sequence[str]) -> _Process:
        process = _Process(name, [self._binary(binary), *args], self.log_dir / f"{name}.log", self.workdir)
        self._processes.append(process)
        return process

    def _launch_daemon(self, daemon: _Daemon) -> _Daemon:
        """Pick the daemon's ports and launch it."""
        daemon.attempt += 1
        for port_name in daemon.ports:
            self._ports.pop(port_name, None)
            self._ports[port_name] = _pick_port(set(self._ports.values()), self.bind_address)
        if daemon.before_launch is not None:
            daemon.before_launch()
        daemon.process = self._launch(daemon.name, daemon.name, daemon.args())
        return daemon

    def _await_daemons(self, daemons: Sequence[_Daemon], t0: float) -> None:
        """Wait until each daemon is ready; relaunch one that lost a port to another process."""
        for daemon in daemons:
            while True:
                try:
                    self._wait_until(daemon.name, daemon.probe)
                    break
                except ControlPlaneError:
                    lost = [d for d in daemons if d.lost_port_race()]
                    if not lost or any(d.attempt >= _LAUNCH_ATTEMPTS for d in lost):
                        raise
                    for loser in lost:
                        assert loser.process is not None
                        self._processes.remove(loser.process)
                        loser.process.stop(self.stop_grace)
                        with open(loser.process.log_path, "a") as log:
                            log.write(f"\n--- port taken; relaunching {loser.name} ---\n")
                        self._launch_daemon(loser)
            self.timings[daemon.name] = time.monotonic() - t0

    def _etcd(self) -> _Daemon:
        data_dir = self._data_dir
        assert data_dir is not None

        def args() -> list[str]:
            client = self.etcd_url
            peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
            shutil.rmtree(data_dir / "etcd", ignore_errors=True)
            return [
                "--name=n0",
                f"--data-dir={data_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=n0={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--auto-compaction-retention=1",
                "--log-level=warn",
            ]

        return _Daemon("etcd", ["etcd", "etcd-peer"], args, lambda: self._http_probe(f"{self.etcd_url}/readyz", None))

    def _apiserver(self) -> _Daemon:
        pki = self.pki_dir

        def write_kubeconfigs() -> None:  # they name the server's port
            self._write_kubeconfig(self.kubeconfig, "admin", self._tokens["admin"])
            for user in self._users:
                self._write_kubeconfig(self.kubeconfig_dir / f"{user}.kubeconfig", user, self._tokens[user])

        def args() -> list[str]:
            return [
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--secure-port={self._ports['apiserver']}",
                f"--advertise-address={self._advertise}",
                f"--tls-cert-file={pki / 'tls.crt'}",
                f"--tls-private-key-file={pki / 'tls.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                # The defaults already include PodSecurity, ServiceAccount, NamespaceLifecycle,
                # LimitRanger, ResourceQuota, Priority, DefaultTolerationSeconds, the webhooks and
                # ValidatingAdmissionPolicy; kubeadm adds NodeRestriction, so do we.
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                # exec/logs dial the node's InternalIP (loopback for kwok nodes), never a hostname
                # that would need DNS: nothing leaves this machine.
                "--kubelet-preferred-address-types=InternalIP",
                *self.apiserver_args,
            ]

        return _Daemon(
            "kube-apiserver",
            ["apiserver"],
            args,
            lambda: self._http_probe(f"{self.server}/readyz", self._ssl_context(), self._tokens["admin"]),
            before_launch=write_kubeconfigs,
        )

    def _controller_manager(self) -> _Daemon:
        def args() -> list[str]:
            return [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports['controller-manager']}",
                f"--authorization-always-allow-paths={_HEALTH_PATHS}",
                f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--cluster-name={CLUSTER_NAME}",
                "--profiling=false",
            ]

        return _Daemon(
            "kube-controller-manager",
            ["controller-manager"],
            args,
            lambda: self._http_probe(
                f"https://127.0.0.1:{self._ports['controller-manager']}/healthz", _insecure_context()
            ),
        )

    def _scheduler(self) -> _Daemon:
        def args() -> list[str]:
            return [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports['scheduler']}",
                f"--authorization-always-allow-paths={_HEALTH_PATHS}",
                "--profiling=false",
            ]

        return _Daemon(
            "kube-scheduler",
            ["scheduler"],
            args,
            lambda: self._http_probe(f"https://127.0.0.1:{self._ports['scheduler']}/readyz", _insecure_context()),
        )

    def _kwok(self) -> _Daemon:
        stages_dir = self.bin_dir.parent / "kwok-stages"
        documents = []
        for relative in KWOK_STAGE_FILES:
            path = stages_dir / relative
            if not path.is_file():
                raise ControlPlaneError(f"kwok stage {path} is missing; rerun hack/build-control-plane.sh")
            document = path.read_text().strip().removeprefix("---").strip()
            if relative == "pod/fast/pod-ready.yaml":
                document = _with_ready_delay(document)
            documents.append(document)
        config = self.workdir / "kwok.yaml"
        config.write_text("\n---\n".join(documents) + "\n")

        def args() -> list[str]:
            return [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--node-ip={KWOK_NODE_IP}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self._ports['kwok']}",
            ]

        return _Daemon(
            "kwok", ["kwok"], args, lambda: self._http_probe(f"http://127.0.0.1:{self._ports['kwok']}/healthz", None)
        )

    def _create_nodes(self) -> None:
        for name in self.node_names:
            resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeletVersion": "fake",
                        "kubeProxyVersion": "fake",
                    },
                },
            }
            status, body = self.request("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise ControlPlaneError(f"creating Node {name}: HTTP {status} {body}")

    # -- readiness probes: each returns (ready, detail for the timeout message) --

    def _http_probe(self, url: str, context: ssl.SSLContext | None, token: str | None = None) -> tuple[bool, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return response.status == 200, f"GET {url}: HTTP {response.status}"
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            failed = [line for line in body.splitlines() if "failed" in line] or body.splitlines()[-5:]
            return False, f"GET {url}: HTTP {error.code}: " + "; ".join(failed)
        except (OSError, urllib.error.URLError) as error:
            return False, f"GET {url}: {error}"

    def _default_service_account_exists(self) -> tuple[bool, str]:
        status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200, f"ServiceAccount default/default: HTTP {status}"

    def _nodes_ready(self) -> tuple[bool, str]:
        status, body = self.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
        if status != 200:
            return False, f"listing nodes: HTTP {status}"
        states = {}
        for node in body.get("items", []):
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = {t["key"] for t in node.get("spec", {}).get("taints", [])} & _NOT_SCHEDULABLE_TAINTS
            states[node["metadata"]["name"]] = (conditions.get("Ready") == "True", sorted(taints))
        ready = all(states.get(name, (False, []))[0] and not states[name][1] for name in self.node_names)
        detail = ", ".join(f"{n}: Ready={r} taints={t}" for n, (r, t) in sorted(states.items()))
        return ready, f"nodes {detail or 'none'}"

    def _wait_until(self, name: str, probe: Callable[[], tuple[bool, str]]) -> None:
        """Poll `probe` until it is ready; fail fast with the log tail if any process died."""
        process = next((p for p in self._processes if p.name == name), None)
        wait_for_probe(self._processes, name, probe, self.timeout, lambda: process.log_tail() if process else "")

    # -- helpers --

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        context = f"{user}@{CLUSTER_NAME}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CLUSTER_NAME,
                    "cluster": {"server": self.server, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user}}],
            "current-context": context,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


def _insecure_context() -> ssl.SSLContext:
    """For the health endpoints of KCM and scheduler, which serve self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def default_bin_dir() -> Path:
    """$CHAOSGUARD_BIN_DIR, or the directory hack/build-control-plane.sh prints (building if needed)."""
    if override := os.environ.get("CHAOSGUARD_BIN_DIR"):
        return Path(override)
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, cwd=REPO_ROOT)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with code {result.returncode}:\n{tail}")
    return Path(lines[-1])


def format_timings(timings: Mapping[str, float]) -> str:
    steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items() if name != "total")
    return f"control plane ready in {timings.get('total', 0.0):.1f}s ({steps}; cumulative)"


# --- command line ---------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    bin_dir = Path(args.bin_dir) if args.bin_dir else default_bin_dir()
    workdir = Path(args.dir).resolve()
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        if starting and not stop.is_set():  # abort start-up; start() stops what it had started
            stop.set()
            raise KeyboardInterrupt(f"signal {signum}")
        stop.set()  # a repeated signal must not interrupt the teardown

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    launched = time.monotonic()
    plane = ControlPlane(workdir, bin_dir, nodes=args.nodes)
    try:
        plane.start()
        starting = False
        print(format_timings(plane.timings), f"(wall {time.monotonic() - launched:.1f}s)", flush=True)
        print(f"server: {plane.server}")
        print(f"logs: {plane.log_dir}")
        for user, groups in USERS.items():
            print(f"user {user} ({', '.join(groups) or 'no groups'}): {plane.kubeconfig_for(user)}")
        print(f"kubectl: {plane.kubectl_path}")
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        print("running until SIGINT/SIGTERM (Ctrl-C)", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            dead = [name for name, alive in plane.running().items() if not alive]
            if dead:
                print(f"stopping: {', '.join(dead)} exited; see {plane.log_dir}", file=sys.stderr, flush=True)
                return 1
        print("stopping the control plane", file=sys.stderr, flush=True)
        return 0
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted during start-up; stopping", file=sys.stderr, flush=True)
        return 130
    finally:
        plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.controlplane", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the control plane and keep it running until SIGINT/SIGTERM")
    up.add_argument("--dir", default=str(REPO_ROOT / ".work" / "controlplane"), help="work directory")
    up.add_argument("--bin-dir", help="binaries (default: from hack/build-control-plane.sh)")
    up.add_argument("--nodes", type=int, default=3, help="number of fake kwok nodes (default 3)")
    args = parser.parse_args(argv)
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
