"""Real network namespaces for the latency injector's tests and benchmark.

Everything here acts only inside namespaces it creates (`ip netns add`), joined by a veth pair
that is created directly inside them, with addresses from 10.200.0.0/16 and fd00:200::/32.
Nothing touches the namespace the tests run in.

Topology (one per test):

    netns <name>-tgt  ("the pod")                 netns <name>-peer  ("its dependencies")
      cg-tgt0 10.200.0.1/24, fd00:200::1/64  <-->   cg-peer0 10.200.0.2/24, fd00:200::2/64
      default via 10.200.0.2 / fd00:200::2          lo: 10.200.9.2/32, fd00:209::2/128
                                                    UDP echo + TCP listeners on the ports

The injector runs in the target namespace and delays its egress; RTTs are measured from the
target to the peer's two addresses (10.200.0.2 "near", 10.200.9.2 "far"), so that CIDR and port
narrowing can be told apart.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from chaosguard.decisions.netem import ROOT_HANDLE, script_path

# CHAOSGUARD_NETEM_SCRIPT runs the tests against another copy of the script (e.g. a mutant, to
# check that the tests catch its fault).
SCRIPT = Path(os.environ.get("CHAOSGUARD_NETEM_SCRIPT") or script_path())
CLONE_NEWNET = 0x40000000
ECHO_PORTS = (7001, 7002)

NEAR_V4 = "10.200.0.2"
FAR_V4 = "10.200.9.2"
NEAR_V6 = "fd00:200::2"
FAR_V6 = "fd00:209::2"
TARGET_DEVICE = "cg-tgt0"

_libc = ctypes.CDLL(None, use_errno=True)
_counter = 0
_counter_lock = threading.Lock()


def unique_name(prefix: str = "cg") -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        return f"{prefix}{os.getpid()}x{_counter}"


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs a command; on failure raises with its output, so a test failure says what went wrong."""
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


# --- is netem there at all? ------------------------------------------------------------------


def netem_problem() -> str | None:
    """Why the netns tests cannot run here (not root, no iproute2, a kernel without netem/prio/u32).

    Probes in a throw-away namespace (`unshare --net`), so nothing is left behind.
    """
    if os.geteuid() != 0:
        return "the netns tests need root (ip netns add, tc)"
    for tool in ("ip", "tc", "unshare", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, util-linux, iputils-ping)"
    probe = (
        "ip link set lo up"
        " && tc qdisc add dev lo root handle 1: netem delay 1ms"
        " && tc qdisc del dev lo root"
        " && tc qdisc add dev lo root handle 1: prio bands 4"
        " && tc qdisc add dev lo parent 1:4 handle 2: netem delay 1ms"
        " && tc filter add dev lo parent 1: protocol ip pref 1 u32 match ip dst 10.0.0.0/8 flowid 1:4"
    )
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        return (
            f"kernel {os.uname().release} cannot run tc netem/prio/u32 "
            f"({(result.stderr or result.stdout).strip()}); "
            "run tests/integration/test_netem_in_guest.py, which boots a kernel that has them"
        )
    return None


# --- namespaces ------------------------------------------------------------------------------


@dataclass
class Topology:
    name: str
    target: str
    peer: str
    device: str = TARGET_DEVICE

    def qdisc(self) -> dict[str, object]:
        """The target device's root qdisc as `tc -j` reports it."""
        return root_qdisc(self.target, self.device)


def create_topology(name: str) -> Topology:
    """Creates both namespaces and the veth pair in one `ip -batch`, then configures each side."""
    topology = Topology(name=name, target=f"{name}-tgt", peer=f"{name}-peer")
    try:
        run(
            ["ip", "-batch", "-"],
            input=f"netns add {topology.target}\n"
            f"netns add {topology.peer}\n"
            f"link add {TARGET_DEVICE} netns {topology.target} type veth peer name cg-peer0 netns {topology.peer}\n",
        )
        run(
            ["ip", "-n", topology.target, "-batch", "-"],
            input="\n".join(
                [
                    "link set lo up",
                    f"addr add 10.200.0.1/24 dev {TARGET_DEVICE}",
                    f"addr add fd00:200::1/64 dev {TARGET_DEVICE} nodad",
                    f"link set {TARGET_DEVICE} up",
                    f"route add default via {NEAR_V4} dev {TARGET_DEVICE}",
                    f"route add default via {NEAR_V6} dev {TARGET_DEVICE}",
                ]
            )
            + "\n",
        )
        run(
            ["ip", "-n", topology.peer, "-batch", "-"],
            input="\n".join(
                [
                    "link set lo up",
                    f"addr add {FAR_V4}/32 dev lo",
                    f"addr add {FAR_V6}/128 dev lo nodad",
                    f"addr add {NEAR_V4}/24 dev cg-peer0",
                    f"addr add {NEAR_V6}/64 dev cg-peer0 nodad",
                    "link set cg-peer0 up",
                ]
            )
            + "\n",
        )
    except BaseException:
        delete_namespaces(topology.target, topology.peer)
        raise
    return topology


def delete_namespaces(*names: str) -> None:
    existing = [name for name in names if os.path.exists(f"/run/netns/{name}")]
    if existing:
        run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {name}\n" for name in existing))


def root_qdisc(netns: str, device: str) -> dict[str, object]:
    output = run(["tc", "-n", netns, "-j", "qdisc", "show", "dev", device, "root"]).stdout
    qdiscs = json.loads(output or "[]")
    assert len(qdiscs) == 1, f"expected one root qdisc on {device} in {netns}, got {output}"
    return dict(qdiscs[0])


def is_ours(qdisc: dict[str, object]) -> bool:
    return qdisc.get("handle") == ROOT_HANDLE


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Bounded polling for a condition (a callable returning truthy)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- sockets inside a namespace ----------------------------------------------------------------


def sockets_in_netns(netns: str, family: int, kind: int, count: int = 1) -> list[socket.socket]:
    """Creates sockets that live in `netns`, without moving this thread there.

    A short-lived thread joins the namespace (setns applies to the calling thread only), creates
    the sockets and ends; a socket keeps the namespace it was created in.
    """
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with open(f"/run/netns/{netns}", "rb") as handle:
                if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
            made.extend(socket.socket(family, kind) for _ in range(count))
        except BaseException as error:
            failure.append(error)

    worker = threading.Thread(target=work, name=f"setns-{netns}")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return made


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class EchoServer:
    """UDP echo and TCP accept-and-close on ECHO_PORTS of the peer's addresses, in a namespace.

    UDP sockets are bound to each address rather than the wildcard, so that an echo leaves from
    the address it was sent to (a wildcard socket would answer from the route's source address).
    """

    def __init__(
        self,
        netns: str,
        addresses: Sequence[str] = (NEAR_V4, FAR_V4, NEAR_V6, FAR_V6),
        ports: Sequence[int] = ECHO_PORTS,
    ) -> None:
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        for address in addresses:
            family = family_of(address)
            made = sockets_in_netns(netns, family, socket.SOCK_DGRAM, len(ports))
            made += sockets_in_netns(netns, family, socket.SOCK_STREAM, len(ports))
            for index, sock in enumerate(made):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, ports[index % len(ports)]))
                sock.setblocking(False)
                self._sockets.append(sock)
                if sock.type == socket.SOCK_STREAM:
                    sock.listen(128)
                    self._selector.register(sock, selectors.EVENT_READ, "tcp")
                else:
                    self._selector.register(sock, selectors.EVENT_READ, "udp")
        self._thread = threading.Thread(target=self._serve, name=f"echo-{netns}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if key.data == "udp":
                        data, address = sock.recvfrom(2048)
                        sock.sendto(data, address)
                    else:
                        connection, _ = sock.accept()
                        connection.close()
                except (BlockingIOError, ConnectionError):
                    continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._selector.close()
        for sock in self._sockets:
            sock.close()


def udp_rtts(
    netns: str,
    host: str,
    port: int,
    count: int = 7,
    *,
    priority: int | None = None,
    timeout: float = 10.0,
) -> list[float]:
    """Round-trip times (s) of `count` UDP echoes from `netns` to host:port, one at a time."""
    (sock,) = sockets_in_netns(netns, family_of(host), socket.SOCK_DGRAM)
    with sock:
        if priority is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, priority)
        sock.settimeout(timeout)
        sock.connect((host, port))
        rtts = []
        for sequence in range(count):
            payload = f"chaosguard-{sequence}".encode()
            started = time.perf_counter()
            sock.send(payload)
            while sock.recv(2048) != payload:  # a late echo of an earlier probe: keep waiting
                pass
            rtts.append(time.perf_counter() - started)
    return rtts


def tcp_connect_rtts(netns: str, host: str, port: int, count: int = 7, timeout: float = 10.0) -> list[float]:
    """TCP handshake times (s): connect() returns after SYN, SYN-ACK, i.e. one round trip."""
    rtts = []
    for sock in sockets_in_netns(netns, family_of(host), socket.SOCK_STREAM, count):
        with sock:
            sock.settimeout(timeout)
            started = time.perf_counter()
            sock.connect((host, port))
            rtts.append(time.perf_counter() - started)
    return rtts


_PING_TIME = re.compile(r"time=([0-9.]+) ms")


def ping_rtts(netns: str, host: str, count: int = 7, interval: float = 0.05) -> list[float]:
    """ICMP echo RTTs (s) measured by ping(8) from inside `netns`."""
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "10", host]
    result = run(in_netns(netns, argv), check=False, timeout=60)
    rtts = [float(value) / 1000 for value in _PING_TIME.findall(result.stdout)]
    # A loaded emulated guest drops an echo now and then; RTTs are judged on what came back, but a
    # path that lost most of them is no measurement at all.
    enough = max(3, count - 2)
    assert len(rtts) >= enough, (
        f"ping {host} in {netns}: expected at least {enough} of {count} replies\n{result.stdout}{result.stderr}"
    )
    return rtts


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def describe(samples: Sequence[float]) -> str:
    return "[" + ", ".join(f"{value * 1000:.1f}" for value in samples) + "] ms"


# --- the injector as a process -----------------------------------------------------------------

SHELLS: dict[str, list[str]] = {"dash": ["dash"], "busybox": ["busybox", "sh"]}


@dataclass
class Injector:
    """netem.sh running in a namespace, with its stdout and stderr lines collected as they come."""

    process: subprocess.Popen[str]
    argv: list[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, netns: str, argv: Sequence[str], shell: str = "dash") -> Injector:
        full = in_netns(netns, [*SHELLS[shell], *argv])
        process = subprocess.Popen(
            full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a SIGKILL can take its sleep too
        )
        injector = cls(process=process, argv=list(full))
        threading.Thread(target=injector._read, daemon=True).start()
        return injector

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain(self, timeout: float) -> str | None:
        try:
            line = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return ""
        if line is not None:
            self.lines.append(line)
        return line

    def wait_for_line(self, needle: str, timeout: float = 60) -> str:
        for seen in self.lines:
            if needle in seen:
                return seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._drain(deadline - time.monotonic())
            if line is None:
                break
            if line and needle in line:
                return line
        raise AssertionError(f"injector never printed {needle!r}; output so far:\n{self.output()}")

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"injector still running after {timeout}s; output so far:\n{self.output()}") from None
        while self._drain(5) is not None:
            pass
        return code

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL to the script and its sleep, like a container being killed."""
        with suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@contextmanager
def topology_with_echo(name: str | None = None) -> Iterator[Topology]:
    topology = create_topology(name or unique_name())
    try:
        server = EchoServer(topology.peer)
        try:
            yield topology
        finally:
            server.close()
    finally:
        delete_namespaces(topology.target, topology.peer)


# --- impairments beyond delay: counts, rates, counters -----------------------------------------


@dataclass
class Burst:
    """What came back from a burst of numbered UDP echoes: every reply's sequence number, in order."""

    sent: int
    replies: list[int]

    @property
    def lost_percent(self) -> float:
        return 100.0 * (self.sent - len(set(self.replies))) / self.sent

    @property
    def duplicate_percent(self) -> float:
        return 100.0 * (len(self.replies) - len(set(self.replies))) / self.sent

    @property
    def inversions(self) -> int:
        """Replies that arrived after a reply to a later probe (reordering)."""
        return sum(1 for earlier, later in zip(self.replies, self.replies[1:], strict=False) if later < earlier)


def udp_burst(netns: str, host: str, port: int, count: int, spacing: float = 0.002, linger: float = 1.5) -> Burst:
    """Sends `count` numbered UDP probes, `spacing` s apart, and collects the echoes (duplicates
    included) until `linger` s after the last one."""
    (sock,) = sockets_in_netns(netns, family_of(host), socket.SOCK_DGRAM)
    replies: list[int] = []
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.setblocking(False)

        def drain() -> None:
            while True:
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    return
                if data.startswith(b"cgseq-"):
                    replies.append(int(data[6:16]))

        for sequence in range(count):
            sock.send(b"cgseq-%010d" % sequence + b"." * 64)
            drain()
            time.sleep(spacing)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline:
            drain()
            time.sleep(0.01)
    return Burst(count, replies)


class TcpSink:
    """Accepts one TCP connection in a namespace and counts the bytes it receives over time."""

    def __init__(self, netns: str, address: str, port: int) -> None:
        (self._listener,) = sockets_in_netns(netns, family_of(address), socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((address, port))
        self._listener.listen(1)
        self.samples: list[tuple[float, int]] = []  # (monotonic time, bytes so far)
        self._thread = threading.Thread(target=self._serve, name=f"sink-{netns}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        total = 0
        with connection:
            while True:
                data = connection.recv(1 << 16)
                if not data:
                    return
                total += len(data)
                self.samples.append((time.monotonic(), total))

    def rate_bits(self, start: float, end: float) -> float:
        """Goodput (payload bits/s) received between two moments, from the nearest samples."""
        inside = [(at, total) for at, total in self.samples if start <= at <= end]
        assert len(inside) >= 2, f"too few samples between {start} and {end}: {self.samples[-5:]}"
        (first_at, first_total), (last_at, last_total) = inside[0], inside[-1]
        return 8 * (last_total - first_total) / (last_at - first_at)

    def close(self) -> None:
        self._listener.close()


def bulk_send(netns: str, host: str, port: int, seconds: float) -> None:
    """Sends as fast as TCP lets it, from `netns` to host:port, for `seconds`."""
    (sock,) = sockets_in_netns(netns, family_of(host), socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.settimeout(5)
        sock.connect((host, port))
        chunk = b"x" * 16384
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with suppress(TimeoutError):
                sock.send(chunk)
        sock.shutdown(socket.SHUT_RDWR)


def ingress_qdisc(netns: str, device: str) -> dict[str, object] | None:
    """The device's ingress-side qdisc (handle ffff:) as `tc -j` reports it, or None."""
    output = run(["tc", "-n", netns, "-j", "qdisc", "show", "dev", device]).stdout
    found = [q for q in json.loads(output or "[]") if q.get("handle") == "ffff:"]
    return dict(found[0]) if found else None


def snmp_counter(netns: str, protocol: str, name: str) -> int:
    """One counter of /proc/net/snmp as seen in `netns` (e.g. Udp InCsumErrors)."""
    lines = [line.split() for line in run(in_netns(netns, ["cat", "/proc/net/snmp"])).stdout.splitlines()]
    header, values = [line for line in lines if line[0] == f"{protocol}:"][:2]
    return int(values[header.index(name)])


def rx_packets(netns: str, device: str) -> int:
    stats = json.loads(run(["ip", "-n", netns, "-j", "-s", "link", "show", "dev", device]).stdout)
    return int(stats[0]["stats64"]["rx"]["packets"])
