"""The latency injector (operator/chaosguard/runtime/injector/netem.sh) against a real kernel's tc netem.

Each test gets its own pair of network namespaces (localcluster/netns.py): the injector runs in
the target namespace, as it would in a pod, and RTTs from the target to an echo server in the peer
namespace are measured before, during and after the fault.

Tolerance: the fastest probe during a fault must take at least delay - max(3 ms, 5 %) (netem never
delays less than asked), and the fastest probe during it minus the fastest before it at most
delay + max(25 ms, 25 %). Traffic the fault must not touch may gain at most 25 % of the delay, fastest
against fastest. The fastest probes are compared, not the medians: a loaded emulated guest only ever
adds time (a median of 7 once gained 27 ms of scheduling delay beside a benchmark), while a fault that
stacked or leaked would slow every probe, the fastest too.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from chaosguard.decisions.netem import ROOT_HANDLE, clear_command, injector_command
from localcluster import netns
from localcluster.netns import FAR_V4, FAR_V6, NEAR_V4, NEAR_V6, SCRIPT, TARGET_DEVICE, Topology
from tests.netns.conftest import StartInjector

DELAY = "100ms"
DELAY_S = 0.100
LONG = 600  # a deadline no test waits for

Probe = tuple[str, str, int]  # (udp | tcp | ping, host, port)


def inject_argv(
    *,
    delay: str = DELAY,
    jitter: str = "0ms",
    correlation: int = 0,
    deadline: int = LONG,  # seconds from now; the argv carries the absolute deadline
    cidrs: Sequence[str] = (),
    ports: Sequence[int] = (),
    device: str | None = TARGET_DEVICE,
    status_file: str | None = None,
) -> list[str]:
    return injector_command(
        delay,
        jitter,
        correlation,
        math.ceil(time.time()) + deadline,
        list(cidrs),
        list(ports),
        device,
        now=time.time(),
        script=str(SCRIPT),
        status_file=status_file,
    )


def inject(start_injector: StartInjector, namespace: str, shell: str = "dash", **settings: object) -> netns.Injector:
    """Starts the injector and returns once it says it holds the fault (the qdisc is in place)."""
    injector = start_injector(namespace, inject_argv(**settings), shell)  # type: ignore[arg-type]
    injector.wait_for_line("holding:")
    return injector


def clear(namespace: str, device: str | None = TARGET_DEVICE) -> subprocess.CompletedProcess[str]:
    return netns.run(netns.in_netns(namespace, clear_command(device, script=str(SCRIPT))), check=False)


def sample(topology: Topology, probe: Probe, count: int = 7) -> list[float]:
    kind, host, port = probe
    if kind == "udp":
        return netns.udp_rtts(topology.target, host, port, count)
    if kind == "tcp":
        return netns.tcp_connect_rtts(topology.target, host, port, count)
    return netns.ping_rtts(topology.target, host, count)


def baseline(topology: Topology, probes: Sequence[Probe]) -> dict[Probe, list[float]]:
    return {probe: sample(topology, probe) for probe in probes}


def expected_range(delay_s: float) -> tuple[float, float]:
    return delay_s - max(0.003, 0.05 * delay_s), delay_s + max(0.025, 0.25 * delay_s)


def check_delays(
    topology: Topology,
    before: dict[Probe, list[float]],
    delayed: Sequence[Probe] = (),
    undelayed: Sequence[Probe] = (),
    delay_s: float = DELAY_S,
) -> None:
    """Measures every probe now and asserts which are delayed by `delay_s` and which are not."""
    low, high = expected_range(delay_s)
    problems = []
    report = []
    for probe, should_delay in [(p, True) for p in delayed] + [(p, False) for p in undelayed]:
        during = sample(topology, probe)
        added = min(during) - min(before[probe])
        line = (
            f"{probe}: added {added * 1000:.1f} ms (before {netns.describe(before[probe])}, "
            f"now {netns.describe(during)})"
        )
        report.append(line)
        # netem never delivers a packet early, so the fastest probe during the fault is at least the
        # delay; a median-over-median lower bound also failed when a loaded guest inflated the baseline.
        if should_delay and not (min(during) >= low and added <= high):
            problems.append(
                f"should be delayed by {delay_s * 1000:.0f} ms ({low * 1000:.1f}..{high * 1000:.1f}): {line}"
            )
        if not should_delay and added > 0.25 * delay_s:
            problems.append(f"should not be delayed (at most {0.25 * delay_s * 1000:.0f} ms added): {line}")
    print("\n".join(report))
    assert not problems, "\n".join([*problems, "all measurements:", *report])


def assert_clean(topology: Topology, device: str = TARGET_DEVICE) -> None:
    qdisc = netns.root_qdisc(topology.target, device)
    assert qdisc["handle"] == "0:", f"expected the default root qdisc back on {device}, got {qdisc}"


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, e.g. a sleep the script left behind."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{entry} {stat.split(' ', 2)[1]}")
    return members


# --- the delay itself ----------------------------------------------------------------------------


def test_added_delay_matches_the_configured_delay_and_goes_away(
    topology: Topology, start_injector: StartInjector
) -> None:
    probes: list[Probe] = [("ping", NEAR_V4, 0), ("udp", NEAR_V4, 7001), ("udp", FAR_V6, 7002)]
    before = baseline(topology, probes)

    injector = inject(start_injector, topology.target)
    added = injector.wait_for_line("added:")
    assert f"root qdisc {ROOT_HANDLE} netem delay 100ms on {TARGET_DEVICE}" in added
    qdisc = topology.qdisc()
    assert (qdisc["kind"], qdisc["handle"]) == ("netem", ROOT_HANDLE), qdisc
    assert qdisc["options"]["delay"]["delay"] == pytest.approx(DELAY_S), qdisc  # type: ignore[index]
    check_delays(topology, before, delayed=probes)

    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(20) == 143, injector.output()
    assert_clean(topology)
    check_delays(topology, before, undelayed=probes)


def test_jitter_and_correlation_reach_netem_and_spread_the_delay(
    topology: Topology, start_injector: StartInjector
) -> None:
    probe: Probe = ("udp", NEAR_V4, 7001)
    before = min(sample(topology, probe))
    inject(start_injector, topology.target, jitter="40ms", correlation=25)

    delay = topology.qdisc()["options"]["delay"]  # type: ignore[index]
    assert delay["delay"] == pytest.approx(0.100), delay
    assert delay["jitter"] == pytest.approx(0.040), delay
    assert delay["correlation"] == pytest.approx(0.25), delay

    added = sorted(rtt - before for rtt in sample(topology, probe, count=20))
    described = netns.describe(added)
    # netem draws each packet's delay from 100 ms +- 40 ms. A loaded guest only adds time, so the
    # upper bound holds the fastest quarter of the packets to it, not the slowest packet.
    assert added[0] >= 0.060 - 0.003, f"a packet was delayed less than delay - jitter: {described}"
    assert added[len(added) // 4] <= 0.140 + 0.025, f"a quarter of the packets beyond delay + jitter: {described}"
    assert added[-1] - added[0] >= 0.040, f"20 delays spread less than the jitter: {described}"


# --- narrowing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "delayed", "undelayed"),
    [
        pytest.param(
            "10.200.9.0/24",
            [("udp", FAR_V4, 7001), ("ping", FAR_V4, 0)],
            [("udp", NEAR_V4, 7001), ("ping", NEAR_V4, 0), ("udp", FAR_V6, 7001)],
            id="ipv4",
        ),
        pytest.param(
            "fd00:209::/64",
            [("udp", FAR_V6, 7001)],
            [("udp", NEAR_V6, 7001), ("udp", FAR_V4, 7001)],
            id="ipv6",
        ),
    ],
)
def test_cidr_narrowing_delays_only_traffic_to_that_cidr(
    topology: Topology,
    start_injector: StartInjector,
    cidr: str,
    delayed: list[Probe],
    undelayed: list[Probe],
) -> None:
    before = baseline(topology, delayed + undelayed)
    injector = inject(start_injector, topology.target, cidrs=[cidr])
    assert "other traffic unaffected" in injector.wait_for_line("added:")
    check_delays(topology, before, delayed=delayed, undelayed=undelayed)


def test_port_narrowing_delays_only_traffic_to_that_port(topology: Topology, start_injector: StartInjector) -> None:
    delayed: list[Probe] = [("udp", NEAR_V4, 7001), ("tcp", NEAR_V4, 7001), ("udp", FAR_V6, 7001)]
    undelayed: list[Probe] = [("udp", NEAR_V4, 7002), ("tcp", FAR_V4, 7002), ("ping", NEAR_V4, 0)]
    before = baseline(topology, delayed + undelayed)
    inject(start_injector, topology.target, ports=[7001])
    check_delays(topology, before, delayed=delayed, undelayed=undelayed)


def test_cidr_and_port_together_must_both_match(topology: Topology, start_injector: StartInjector) -> None:
    delayed: list[Probe] = [("udp", FAR_V4, 7001), ("tcp", FAR_V4, 7001)]
    undelayed: list[Probe] = [("udp", FAR_V4, 7002), ("udp", NEAR_V4, 7001), ("ping", FAR_V4, 0)]
    before = baseline(topology, delayed + undelayed)
    inject(start_injector, topology.target, cidrs=["10.200.9.0/24"], ports=[7001])
    check_delays(topology, before, delayed=delayed, undelayed=undelayed)


def test_several_cidrs_and_ports_of_both_families(topology: Topology, start_injector: StartInjector) -> None:
    delayed: list[Probe] = [("udp", FAR_V4, 7001), ("udp", FAR_V4, 7002), ("udp", FAR_V6, 7002)]
    undelayed: list[Probe] = [("udp", NEAR_V4, 7001), ("udp", NEAR_V6, 7002)]
    before = baseline(topology, delayed + undelayed)
    inject(start_injector, topology.target, cidrs=[f"{FAR_V4}/32", "fd00:209::/64"], ports=[7001, 7002])
    check_delays(topology, before, delayed=delayed, undelayed=undelayed)


def test_default_traffic_of_every_priority_stays_out_of_the_netem_band(
    topology: Topology, start_injector: StartInjector
) -> None:
    inject(start_injector, topology.target, cidrs=["10.200.9.0/24"])
    options = topology.qdisc()["options"]
    assert options["bands"] == 4, options  # type: ignore[index]
    assert 3 not in options["priomap"], f"the priomap sends some priorities to the netem band: {options}"  # type: ignore[index]

    # Whatever skb priority (SO_PRIORITY 0-15) unmatched traffic has, it is not delayed.
    baseline_ms = netns.median_ms(netns.udp_rtts(topology.target, FAR_V4, 7001, count=5))
    assert baseline_ms >= (DELAY_S - 0.005) * 1000, f"matched traffic is not delayed ({baseline_ms:.1f} ms)"
    slow = {}
    for priority in range(16):
        rtts = netns.udp_rtts(topology.target, NEAR_V4, 7001, count=3, priority=priority)
        if min(rtts) > 0.25 * DELAY_S:
            slow[priority] = netns.describe(rtts)
    assert not slow, f"unmatched traffic was delayed at these priorities: {slow}"


# --- ending the fault ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_deadline_removes_the_qdisc(
    topology: Topology, start_injector: StartInjector, shell: str, tmp_path: Path
) -> None:
    probe: Probe = ("udp", NEAR_V4, 7001)
    before = baseline(topology, [probe])
    status = tmp_path / "termination-log"
    # Times and reads taken here after "holding:" race the 3 s deadline on a busy machine (the
    # injector may take most of it to start). What holds however slow the machine: the deadline is
    # no earlier than 3 s from now, the injector's exit is seen no earlier than it happens, and
    # "removed:" follows only a successful delete of its own qdisc, so it was in place until then.
    earliest_deadline = math.ceil(time.time()) + 3
    injector = inject(start_injector, topology.target, shell, deadline=3, status_file=str(status))

    assert injector.wait_exit(30) == 0, injector.output()
    seen_exit = time.time()
    assert seen_exit >= earliest_deadline, (
        f"removed {earliest_deadline - seen_exit:.1f}s before the deadline:\n{injector.output()}"
    )
    removed = injector.wait_for_line("removed:")
    assert f"qdisc {ROOT_HANDLE} from {TARGET_DEVICE} (reason: deadline)" in removed
    assert status.read_text().strip() == removed.split(": ", 1)[1]
    assert_clean(topology)
    check_delays(topology, before, undelayed=[probe])


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_an_injector_started_after_its_deadline_adds_nothing(
    topology: Topology, start_injector: StartInjector, shell: str, tmp_path: Path
) -> None:
    # A kubelet that starts the injector late (image pull back-off, slow node) must not put the
    # fault in after the run's end: the operator's argv carries the run's end, here already passed.
    status = tmp_path / "termination-log"
    argv = inject_argv(status_file=str(status))
    argv[argv.index("--deadline-at") + 1] = str(int(time.time()) - 5)
    injector = start_injector(topology.target, argv, shell)
    assert injector.wait_exit(30) == 0, injector.output()
    line = injector.wait_for_line("not injected:")
    assert "the deadline" in line and "nothing added" in line, injector.output()
    assert "holding:" not in injector.output()
    assert status.read_text().strip() == line.split(": ", 1)[1]
    assert_clean(topology)


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_the_hold_ends_at_the_absolute_deadline_however_late_the_injector_starts(
    topology: Topology, start_injector: StartInjector, shell: str
) -> None:
    # The operator built this argv for a 600 s run that began 597 s ago; the kubelet starts the
    # injector only now (a late start). It holds what is left of the run (about 3 s), not 600 s.
    built = time.time() - 597
    deadline_at = math.ceil(built) + 600
    argv = injector_command(DELAY, "0ms", 0, deadline_at, [], [], TARGET_DEVICE, now=built, script=str(SCRIPT))
    injector = start_injector(topology.target, argv, shell)
    assert f"until the deadline {deadline_at}," in injector.wait_for_line("holding:"), injector.output()
    # Held for what was left of the run, not for the 600 s the run lasts: a hold measured from the
    # injector's own start would still be waiting. (How late the guest's sleep wakes is not the
    # script's to promise: under a benchmark it woke 2.6 s late.)
    assert injector.wait_exit(30) == 0, injector.output()
    assert "(reason: deadline)" in injector.wait_for_line("removed:")
    assert_clean(topology)


@pytest.mark.parametrize("shell", ["dash", "busybox"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_removes_the_qdisc_at_once(
    topology: Topology, start_injector: StartInjector, shell: str, signum: int, code: int
) -> None:
    injector = inject(start_injector, topology.target, shell)
    assert netns.is_ours(topology.qdisc())
    sent = time.monotonic()
    injector.signal(signum)
    # The deadline is 600 s away: only an interruptible hold exits within the bound.
    assert injector.wait_exit(20) == code, injector.output()
    took = time.monotonic() - sent
    name = signal.Signals(signum).name.removeprefix("SIG")
    assert f"(reason: signal {name})" in injector.wait_for_line("removed:")
    assert_clean(topology)
    netns.wait_for(lambda: not group_members(injector.process.pid), 10, "the injector's sleep to go away with it")
    print(f"{shell} {name}: exited {took * 1000:.0f} ms after the signal")


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_a_signal_at_any_moment_leaves_nothing_behind(
    topology: Topology, start_injector: StartInjector, shell: str
) -> None:
    # SIGTERM right after start lands anywhere from argument parsing to the hold: whether the
    # shell dies of it before its traps are set (nothing added yet) or a trap removes what was
    # added, nothing of the injector may remain.
    injector = start_injector(topology.target, inject_argv(), shell)
    injector.signal(signal.SIGTERM)
    code = injector.wait_exit(20)
    assert code in (143, -signal.SIGTERM), injector.output()
    assert_clean(topology)
    netns.wait_for(lambda: not group_members(injector.process.pid), 10, "the injector's processes to go")


def test_a_killed_sleep_ends_the_fault_early_rather_than_never(
    topology: Topology, start_injector: StartInjector
) -> None:
    injector = inject(start_injector, topology.target)

    def sleeps() -> list[str]:  # the script prints `holding:` just before it starts the sleep
        return [member for member in group_members(injector.process.pid) if "(sleep)" in member]

    netns.wait_for(sleeps, 10, "the injector's sleep to start")
    (sleep,) = sleeps()
    os.kill(int(sleep.split()[0]), signal.SIGKILL)  # e.g. the OOM killer picking the sleep

    assert injector.wait_exit(20) == 0, injector.output()
    assert "(reason: hold ended early: its sleep exited with status 137)" in injector.wait_for_line("removed:")
    assert_clean(topology)


def test_sigkilled_injector_leaves_the_qdisc_and_clear_restores(
    topology: Topology, start_injector: StartInjector
) -> None:
    probe: Probe = ("udp", NEAR_V4, 7001)
    before = baseline(topology, [probe])
    injector = inject(start_injector, topology.target)
    injector.kill_group()  # like the container being SIGKILLed: no trap runs

    assert netns.is_ours(topology.qdisc()), "a SIGKILLed injector cannot have removed its qdisc"
    check_delays(topology, before, delayed=[probe])

    first = clear(topology.target)
    assert first.returncode == 0, first
    assert f"removed: qdisc {ROOT_HANDLE} from {TARGET_DEVICE} (reason: clear)" in first.stdout
    assert_clean(topology)
    check_delays(topology, before, undelayed=[probe])

    second = clear(topology.target)
    assert second.returncode == 0, second
    assert "nothing to clear" in second.stdout, second.stdout
    assert_clean(topology)


def test_clearing_a_clean_device_twice_is_harmless(topology: Topology) -> None:
    for _ in range(2):
        result = clear(topology.target)
        assert result.returncode == 0, result
        assert result.stdout.strip() == (
            f"chaosguard-netem: nothing to clear: no chaosguard qdisc on {TARGET_DEVICE}, "
            "root qdisc is the default noqueue"
        )
        assert_clean(topology)


def test_applying_twice_replaces_rather_than_stacks(topology: Topology, start_injector: StartInjector) -> None:
    probes: list[Probe] = [("udp", NEAR_V4, 7001), ("udp", NEAR_V4, 7002)]
    before = baseline(topology, probes)
    first = inject(start_injector, topology.target)
    check_delays(topology, before, delayed=probes)

    # A second injector (say, sent again after an operator restart) with a narrower fault.
    second = inject(start_injector, topology.target, ports=[7001])
    assert "replacing:" in second.wait_for_line("replacing:")
    qdisc = topology.qdisc()
    assert (qdisc["kind"], qdisc["handle"]) == ("prio", ROOT_HANDLE), qdisc
    # 7001 once delayed (not twice), 7002 no longer.
    check_delays(topology, before, delayed=probes[:1], undelayed=probes[1:])

    second.signal(signal.SIGTERM)
    assert second.wait_exit(20) == 143, second.output()
    assert_clean(topology)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(20) == 143, first.output()
    assert "nothing to remove: no chaosguard qdisc" in first.wait_for_line("nothing to remove")
    assert_clean(topology)


# --- other people's qdiscs -------------------------------------------------------------------------


def identity(qdisc: dict[str, object]) -> tuple[object, ...]:
    """What makes a root qdisc the same one (its statistics change as packets pass)."""
    options = dict(qdisc.get("options", {}))  # type: ignore[call-overload]
    options.pop("direct_packets_stat", None)
    return qdisc["kind"], qdisc["handle"], sorted(options.items())


def add_foreign_qdisc(topology: Topology) -> tuple[object, ...]:
    netns.run(["tc", "-n", topology.target, "qdisc", "add", "dev", TARGET_DEVICE, "root", "handle", "1:", "htb"])
    foreign = identity(topology.qdisc())
    assert foreign[:2] == ("htb", "1:"), foreign
    return foreign


def test_a_foreign_root_qdisc_is_left_alone(topology: Topology, start_injector: StartInjector) -> None:
    foreign = add_foreign_qdisc(topology)

    injector = start_injector(topology.target, inject_argv())
    assert injector.wait_exit(30) == 3, injector.output()
    assert "already has a root qdisc htb 1: that is not chaosguard's" in injector.output()
    assert identity(topology.qdisc()) == foreign

    result = clear(topology.target)
    assert result.returncode == 0, result
    assert "root qdisc on cg-tgt0 is htb 1:, not chaosguard's ca05:; left alone" in result.stdout
    assert identity(topology.qdisc()) == foreign


def test_a_qdisc_swapped_in_during_the_hold_is_not_removed(topology: Topology, start_injector: StartInjector) -> None:
    injector = inject(start_injector, topology.target)
    netns.run(["tc", "-n", topology.target, "qdisc", "del", "dev", TARGET_DEVICE, "root"])
    foreign = add_foreign_qdisc(topology)

    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(20) == 143, injector.output()
    assert "is htb 1:, not chaosguard's ca05:; left alone" in injector.wait_for_line("nothing to remove")
    assert identity(topology.qdisc()) == foreign


# --- device choice and failures ------------------------------------------------------------------


def test_default_device_is_the_default_route_interface(topology: Topology, start_injector: StartInjector) -> None:
    injector = inject(start_injector, topology.target, device=None)
    assert f"on {TARGET_DEVICE} (device from the default route)" in injector.wait_for_line("added:")
    assert netns.is_ours(topology.qdisc())
    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(20) == 143, injector.output()
    assert_clean(topology)


@pytest.fixture
def routeless_namespace_with_eth0() -> Iterator[str]:
    name = netns.unique_name("cgeth")
    netns.run(["ip", "netns", "add", name])
    try:
        netns.run(["ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", "cg-other0",
                   "netns", name])  # fmt: skip
        netns.run(["ip", "-n", name, "link", "set", "eth0", "up"])
        yield name
    finally:
        netns.delete_namespaces(name)


def test_default_device_falls_back_to_eth0_without_a_default_route(
    routeless_namespace_with_eth0: str, start_injector: StartInjector
) -> None:
    namespace = routeless_namespace_with_eth0
    injector = inject(start_injector, namespace, device=None)
    assert "on eth0 (device from fallback: no default route)" in injector.wait_for_line("added:")
    assert netns.is_ours(netns.root_qdisc(namespace, "eth0"))
    injector.signal(signal.SIGTERM)
    assert injector.wait_exit(20) == 143, injector.output()
    assert netns.root_qdisc(namespace, "eth0")["handle"] == "0:"


def test_a_failed_apply_leaves_nothing_behind(topology: Topology, start_injector: StartInjector) -> None:
    # tc refuses the third line of the batch (a filter whose address it cannot read, in a line of the
    # shape the script accepts), after the prio and netem qdiscs went in: the script takes them out.
    argv = inject_argv(cidrs=["fd00::/64"])
    filters = [i for i, word in enumerate(argv) if word.startswith("filter add parent ")]
    argv[filters[0]] = argv[filters[0]].replace("fd00::/64", "fd00::1::2")
    injector = start_injector(topology.target, argv)
    assert injector.wait_exit(30) == 4, injector.output()
    assert "adding root qdisc ca05: prio with netem delay 100ms on band ca05:4 on cg-tgt0 failed" in injector.output()
    assert_clean(topology)


def test_a_missing_device_is_refused_naming_the_flag(topology: Topology, start_injector: StartInjector) -> None:
    injector = start_injector(topology.target, inject_argv(device="nosuch0"))
    assert injector.wait_exit(30) == 2, injector.output()
    assert "--device nosuch0" in injector.output()
    assert_clean(topology)
