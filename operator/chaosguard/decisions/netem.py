"""The network injector's whole `tc` batch and its argv (`injector/netem.sh`): pure, no I/O.

The operator puts `injector_command(...)` (latency), `network_command(...)` (any netem impairment:
delay, loss, corruption, duplication, reordering, a rate cap) or `partition_command(...)` (drop
filters) into the command of the ephemeral container it adds to a target pod. Everything the fault
is made of is decided here: the qdiscs and u32 filters, egress and ingress, narrowed to destination
CIDRs and ports, rendered as `tc -batch` lines (one `--tc` argument each, without the device) and
checked against the shapes the script accepts (netem_contract.Line). The script is only a holder:
it refuses a passed deadline, checks that what it would replace is chaosguard's, inserts the
device, applies the batch, holds it until the absolute deadline `deadline_at` (unix seconds) and
removes it (a signal removes it at once). `clear_command()` removes what chaosguard left (its root
qdisc, a partition's ingress qdisc), and only that. A bad spec fails here, with a message naming
the field, rather than in a container log.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaosguard.api.durations import DurationError, to_seconds
from chaosguard.api.models import RATE_PATTERN
from chaosguard.decisions.netem_contract import BAND_CLASS, EGRESS_PREFS, INGRESS_HANDLE, INGRESS_PREFS, PRIOMAP, Line

# Re-exported: callers, tests and the benchmark have always read them here.
from chaosguard.decisions.netem_contract import MAX_DEADLINE_SECONDS as MAX_DEADLINE_SECONDS
from chaosguard.decisions.netem_contract import ROOT_HANDLE as ROOT_HANDLE

# Where the injector image installs injector/netem.sh (executable).
INJECTOR_SCRIPT = "/usr/local/bin/chaosguard-netem"
# The batch travels in the container's command, which stays in the pod's spec for good (ephemeral
# containers are never removed, one more per run) and the pod object is capped at about 1.5 MiB:
# a few hundred filters at most. A typical fault's batch is under 1 KiB.
MAX_BATCH_BYTES = 32 * 1024
# tc -batch splits a line into at most 100 words.
MAX_LINE_WORDS = 90

_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_RATE = re.compile(RATE_PATTERN)
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
# What tc -batch reads specially (comments, quotes, continuations) or the script inserts itself.
_UNSAFE_IN_LINE = re.compile(r"[#'\"\\\n\r\t]|\bdev\b")
PARTITION_DIRECTIONS = ("both", "egress", "ingress")


class NetemArgumentError(ValueError):
    """A fault setting the injector cannot be given; the message names the field and the fix."""


def script_path() -> Path:
    """The script in this source tree or installed package (for tests and image builds); it ships with the
    runtime that injects it (a path, not an import: this module stays pure)."""
    return Path(__file__).parents[1] / "runtime" / "injector" / "netem.sh"


def tc_time(duration: str, field: str) -> str:
    """Converts a duration such as `200ms`, `1s` or `1m30s` into tc's form (`200ms`, `1s`, `90s`).

    tc reads us, ms and s only; the result is exact to the microsecond, in the largest unit
    that keeps it whole.
    """
    try:
        seconds = to_seconds(duration)
    except DurationError as error:
        raise NetemArgumentError(f"{field}: {error}") from None
    micros = round(seconds * 1_000_000)
    if micros and micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    if micros % 1000 == 0:
        return f"{micros // 1000}ms"
    return f"{micros}us"


def _is_zero(tc_duration: str) -> bool:
    return tc_duration in ("0ms", "0us", "0s")


@dataclass(frozen=True)
class Impairment:
    """What netem does to matching egress. Percentages are 0-100; None (or a zero delay) = not applied."""

    delay: str = "0ms"
    jitter: str = "0ms"
    correlation: int = 0
    loss: float | None = None
    loss_correlation: float | None = None
    corrupt: float | None = None
    duplicate: float | None = None
    reorder: float | None = None
    reorder_correlation: float | None = None
    rate: str | None = None


@dataclass(frozen=True)
class Batch:
    """A fault as the script applies it: its `tc -batch` lines (without `dev`), and what it is and
    does in words, for the script's `added:` line (`added: <fault> on <dev> (...), <effect>`)."""

    lines: tuple[str, ...]
    fault: str
    effect: str


@dataclass(frozen=True)
class _Match:
    """Which packets a fault applies to: destination (or, on ingress, source) CIDRs and ports."""

    cidrs: tuple[str, ...]
    ports: tuple[int, ...]

    def words(self) -> str:
        text = f" destinations {', '.join(self.cidrs)}" if self.cidrs else " any destination"
        return f"{text}, TCP/UDP ports {', '.join(map(str, self.ports))}" if self.ports else text


def injector_command(
    delay: str,
    jitter: str,
    correlation: int,
    deadline_at: int,
    cidrs: list[str],
    ports: list[int],
    device: str | None = None,
    *,
    now: float,
    script: str = INJECTOR_SCRIPT,
    status_file: str | None = None,
) -> list[str]:
    """The argv that injects `delay` (± `jitter`, `correlation` %) until `deadline_at` (unix
    seconds, at most MAX_DEADLINE_SECONDS after `now`).

    With no `cidrs` and no `ports` all egress of the device is delayed; otherwise only egress to
    one of the CIDRs (IPv4 or IPv6) and, if ports are given, to one of the TCP/UDP destination ports.
    `device` defaults (in the script) to the interface of the default route, else eth0.
    A zero jitter is left out, and so is the correlation then: it only correlates the jitter.
    """
    impairment = Impairment(delay=delay, jitter=jitter, correlation=correlation)
    return network_command(
        impairment, deadline_at, cidrs, ports, device, now=now, script=script, status_file=status_file, field="latency"
    )


def network_command(
    impairment: Impairment,
    deadline_at: int,
    cidrs: list[str],
    ports: list[int],
    device: str | None = None,
    *,
    now: float,
    script: str = INJECTOR_SCRIPT,
    status_file: str | None = None,
    field: str = "network",
) -> list[str]:
    """The argv that applies `impairment` to egress (narrowed as in `injector_command`) until
    `deadline_at`. `field` names the spec block in error messages (latency or network)."""
    batch = impairment_batch(impairment, cidrs, ports, field)
    return _inject_argv(batch, deadline_at, device, now=now, script=script, status_file=status_file, field=field)


def partition_command(
    cidrs: list[str],
    ports: list[int],
    direction: str,
    deadline_at: int,
    device: str | None = None,
    *,
    now: float,
    script: str = INJECTOR_SCRIPT,
    status_file: str | None = None,
) -> list[str]:
    """The argv that drops all traffic to (egress) and/or from (ingress) the CIDRs, narrowed to the
    ports if given, until `deadline_at`. A partition always names its CIDRs: one that cut a pod
    off from every address would cut it off from its node and the API server too."""
    batch = partition_batch(cidrs, ports, direction)
    return _inject_argv(batch, deadline_at, device, now=now, script=script, status_file=status_file, field="partition")


def clear_command(
    device: str | None = None, *, script: str = INJECTOR_SCRIPT, status_file: str | None = None
) -> list[str]:
    """The argv that removes chaosguard's qdiscs from the device if, and only if, they are there."""
    argv = [script, "clear", *_device_args(device)]
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


def _inject_argv(
    batch: Batch, deadline_at: int, device: str | None, *, now: float, script: str, status_file: str | None, field: str
) -> list[str]:
    _check_deadline(deadline_at, now)
    check_batch(batch.lines, field)
    argv = [script, "inject", "--deadline-at", str(deadline_at), *_device_args(device)]
    if status_file is not None:
        argv += ["--status-file", status_file]
    argv += ["--fault", batch.fault, "--effect", batch.effect]
    for line in batch.lines:
        argv += ["--tc", line]
    return argv


# --- the batch ----------------------------------------------------------------------------------


def impairment_batch(impairment: Impairment, cidrs: Sequence[str], ports: Sequence[int], field: str) -> Batch:
    """One netem qdisc: the root qdisc when nothing narrows it, else a band of a root prio that only
    the u32 filters of the CIDRs and ports lead to (both given: both must match). Only egress is shaped
    (tc cannot delay ingress without an ifb device)."""
    netem, delay_only = _netem(impairment, field)
    match = _match(cidrs, ports, field)
    verb = "delaying" if delay_only else "impairing"
    if not match.cidrs and not match.ports:
        return Batch((f"{Line.ROOT_QDISC}{netem}",), f"root qdisc {ROOT_HANDLE} {netem}", f"{verb} all egress traffic")
    lines = (
        f"{Line.ROOT_QDISC}prio bands 4 priomap {PRIOMAP}",
        f"{Line.NETEM_BAND}{netem.removeprefix('netem ')}",
        *_filters(match, ROOT_HANDLE, EGRESS_PREFS, "dst", f"flowid {BAND_CLASS}"),
    )
    return Batch(
        lines,
        f"root qdisc {ROOT_HANDLE} prio with {netem} on band {BAND_CLASS}",
        f"{verb} only egress to{match.words()}; other traffic unaffected",
    )


def partition_batch(cidrs: Sequence[str], ports: Sequence[int], direction: str) -> Batch:
    """Drop filters: on egress, on a root prio, for packets TO the CIDRs (and ports); on ingress, on
    an ingress qdisc, for packets FROM them (and their source ports). Other traffic passes."""
    if not cidrs:
        raise NetemArgumentError(
            "partition.destinationCIDRs is empty: a partition names the addresses it cuts off, e.g. [10.1.0.0/16]"
        )
    if direction not in PARTITION_DIRECTIONS:
        raise NetemArgumentError(f"partition.direction {direction!r} is not one of {', '.join(PARTITION_DIRECTIONS)}")
    match = _match(cidrs, ports, "partition")
    lines: list[str] = []
    if direction in ("both", "egress"):
        lines += [f"{Line.ROOT_QDISC}prio bands 4 priomap {PRIOMAP}"]
        lines += _filters(match, ROOT_HANDLE, EGRESS_PREFS, "dst", "action drop")
    if direction in ("both", "ingress"):
        lines += [str(Line.INGRESS_QDISC)]
        lines += _filters(match, INGRESS_HANDLE, INGRESS_PREFS, "src", "action drop")
    traffic = "egress and ingress" if direction == "both" else direction
    return Batch(tuple(lines), "partition", f"dropping {traffic} traffic of{match.words()}; other traffic unaffected")


def _netem(impairment: Impairment, field: str) -> tuple[str, bool]:
    """The netem qdisc's words, and whether it only delays."""
    tc_delay = tc_time(impairment.delay, f"{field}.delay")
    tc_jitter = tc_time(impairment.jitter, f"{field}.jitter")
    correlation = impairment.correlation
    if isinstance(correlation, bool) or not isinstance(correlation, int) or not 0 <= correlation <= 100:
        raise NetemArgumentError(f"{field}.correlation {correlation!r} is not a whole percentage: give 0 to 100")
    words = ["netem"]
    if not _is_zero(tc_delay):
        words += ["delay", tc_delay]
        if not _is_zero(tc_jitter):
            words += [tc_jitter]
            if correlation:
                words += [f"{correlation}%"]
    elif field == "latency":
        raise NetemArgumentError(f"latency.delay {impairment.delay!r} adds no delay: give a delay above 0, e.g. 200ms")

    def percent(name: str, value: float | None) -> str | None:
        if value is None:
            return None
        text = tc_percent(value, f"{field}.{name}")
        return None if text == "0" else f"{text}%"

    loss = percent("loss", impairment.loss)
    loss_correlation = percent("lossCorrelation", impairment.loss_correlation) if loss else None
    corrupt = percent("corrupt", impairment.corrupt)
    duplicate = percent("duplicate", impairment.duplicate)
    reorder = percent("reorder", impairment.reorder)
    reorder_correlation = percent("reorderCorrelation", impairment.reorder_correlation) if reorder else None
    if impairment.reorder and _is_zero(tc_delay):
        raise NetemArgumentError(
            f"{field}.reorder needs {field}.delay: netem reorders by sending some packets without the delay; "
            "set a delay such as 10ms"
        )
    rate = tc_rate(impairment.rate, f"{field}.rate") if impairment.rate is not None else None
    # netem's own order (as `tc qdisc show` prints it): delay, reorder, loss, corrupt, duplicate, rate.
    if reorder:
        words += ["reorder", reorder, *([reorder_correlation] if reorder_correlation else [])]
    if loss:
        words += ["loss", "random", loss, *([loss_correlation] if loss_correlation else [])]
    if corrupt:
        words += ["corrupt", corrupt]
    if duplicate:
        words += ["duplicate", duplicate]
    if rate:
        words += ["rate", rate]
    if len(words) == 1:
        raise NetemArgumentError(
            f"{field} impairs nothing: give at least one of delay, loss, corrupt, duplicate, reorder or rate"
        )
    delay_only = words[1] == "delay" and not (reorder or loss or corrupt or duplicate or rate)
    return " ".join(words), delay_only


def _filters(match: _Match, parent: str, prefs: dict[str, int], side: str, action: str) -> list[str]:
    """One u32 filter per (CIDR, port, protocol), matching the CIDR as the `side` (dst or src)
    address and the port as the `side` port. Port matches need a 20-byte IPv4 header and a first
    fragment, so that bytes 20-23 are the ports; other packets do not match (a delay fails safe; a
    partition given no ports drops all of a CIDR's packets)."""
    port_key = "dport" if side == "dst" else "sport"
    lines = []
    for cidr in match.cidrs or ("any-ip", "any-ipv6"):
        family = "ipv6" if cidr == "any-ipv6" or ":" in cidr else "ip"
        address = [] if cidr.startswith("any-") else ["match", "ip" if family == "ip" else "ip6", side, cidr]
        prefix = ["filter", "add", "parent", parent, "protocol", family, "pref", str(prefs[family]), "u32", *address]
        if not match.ports:
            lines.append(" ".join([*prefix, action]))
            continue
        for port in match.ports:
            for protocol in (6, 17):
                if family == "ip":
                    ports = f"match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip protocol {protocol} 0xff"
                    ports += f" match ip {port_key} {port} 0xffff"
                else:
                    ports = f"match ip6 protocol {protocol} 0xff match ip6 {port_key} {port} 0xffff"
                lines.append(" ".join([*prefix, ports, action]))
    return lines


def check_batch(lines: Sequence[str], field: str) -> None:
    """A batch the script will apply: each line one of the contract's shapes (only additions under
    chaosguard's handles), each filter after its parent qdisc, nothing tc -batch reads specially,
    and the whole within MAX_BATCH_BYTES. A renderer bug is refused here, not on a node."""
    if not lines:
        raise NetemArgumentError(f"{field}: the injector's tc batch is empty")
    size = sum(len(line.encode()) + 1 for line in lines)
    filters = sum(line.startswith("filter ") for line in lines)
    if size > MAX_BATCH_BYTES:
        raise NetemArgumentError(
            f"{field}.destinationCIDRs and {field}.ports make {filters} tc filters ({size} bytes), more than the "
            f"{MAX_BATCH_BYTES} bytes an injector's command may hold (it stays in the pod's spec): name fewer CIDRs "
            "or ports, e.g. one CIDR that covers several, or split the experiment"
        )
    added: set[Line] = set()
    for number, line in enumerate(lines, 1):
        shape = next((s for s in Line if line == s or (s is not Line.INGRESS_QDISC and line.startswith(s))), None)
        problem = _line_problem(line, shape, added)
        if problem:
            raise NetemArgumentError(f"{field}: line {number} of the injector's tc batch {problem}: {line!r}")
        if shape is not None:
            added.add(shape)


def _line_problem(line: str, shape: Line | None, added: set[Line]) -> str | None:
    if shape is None:
        return "is not one of the lines chaosguard adds (netem_contract.Line)"
    if _UNSAFE_IN_LINE.search(line):
        return "has a word tc -batch reads specially, or names a device (the script inserts it)"
    if len(line.split()) > MAX_LINE_WORDS:
        return f"has more than {MAX_LINE_WORDS} words"
    if shape in (Line.NETEM_BAND, Line.EGRESS_FILTER) and Line.ROOT_QDISC not in added:
        return "comes before the root qdisc it needs"
    if shape in (Line.INGRESS_FILTER_V4, Line.INGRESS_FILTER_V6) and Line.INGRESS_QDISC not in added:
        return "comes before the ingress qdisc it needs"
    if shape in (Line.ROOT_QDISC, Line.NETEM_BAND, Line.INGRESS_QDISC) and shape in added:
        return "adds a qdisc the batch already added"
    return None


# --- values ---------------------------------------------------------------------------------------


def tc_percent(value: float, field: str) -> str:
    """A percentage as tc reads it: 30, 0.5, 100 (no exponent, no trailing zeros)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise NetemArgumentError(f"{field} {value!r} is not a percentage: give 0 to 100, e.g. 30 or 0.5")
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def tc_rate(rate: str, field: str) -> str:
    """A bandwidth in tc's form, checked: a number above 0 and bit, kbit, mbit or gbit (e.g. 1mbit)."""
    if not isinstance(rate, str) or not _RATE.match(rate) or rate_bits_per_second(rate) <= 0:
        raise NetemArgumentError(
            f"{field} {rate!r} is not a bandwidth: write a number above 0 and a unit bit, kbit, mbit or gbit, "
            "e.g. 1mbit"
        )
    return rate


def rate_bits_per_second(rate: str) -> float:
    """1mbit -> 1e6 (tc's units are decimal: kbit = 1000 bit/s)."""
    match = _RATE.match(rate)
    if match is None:
        raise NetemArgumentError(f"{rate!r} is not a bandwidth such as 1mbit")
    unit = match.group(2)
    return float(rate.removesuffix(unit)) * _RATE_UNITS[unit]


def _check_deadline(deadline_at: int, now: float) -> None:
    """An absolute deadline in whole unix seconds, after `now` and at most MAX_DEADLINE_SECONDS away."""
    if (
        isinstance(deadline_at, bool)
        or not isinstance(deadline_at, int)
        or not 0 < deadline_at - now <= MAX_DEADLINE_SECONDS
    ):
        raise NetemArgumentError(
            f"deadline_at {deadline_at!r} is out of range: the injector holds a fault until a whole unix second "
            f"after now ({now:.0f}) and at most {MAX_DEADLINE_SECONDS} seconds away"
        )


def _device_args(device: str | None) -> list[str]:
    if device is None:
        return []
    if not isinstance(device, str) or not _IFNAME.match(device):
        raise NetemArgumentError(
            f"device {device!r} is not a network interface name: 1 to 15 letters, digits, '.', '_', '-' or '@'"
        )
    return ["--device", device]


def _match(cidrs: Sequence[str], ports: Sequence[int], field: str) -> _Match:
    # Duplicates would only add duplicate filters.
    normalised = dict.fromkeys(_normalise_cidr(cidr, index, field) for index, cidr in enumerate(cidrs))
    checked = dict.fromkeys(_check_port(port, index, field) for index, port in enumerate(ports))
    return _Match(tuple(normalised), tuple(checked))


def _normalise_cidr(cidr: str, index: int, field: str) -> str:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except (ValueError, TypeError) as error:
        raise NetemArgumentError(
            f"{field}.destinationCIDRs[{index}] {cidr!r} is not a CIDR such as 10.1.0.0/16 or fd00::/64: {error}"
        ) from None


def _check_port(port: int, index: int, field: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise NetemArgumentError(f"{field}.ports[{index}] {port!r} is not a port: give 1 to 65535")
    return port
