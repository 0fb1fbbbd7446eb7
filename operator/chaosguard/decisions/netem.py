"""The argv of the network injector (`injector/netem.sh`): pure, no I/O.

The operator puts `injector_command(...)` (latency), `network_command(...)` (any netem impairment:
delay, loss, corruption, duplication, reordering, a rate cap) or `partition_command(...)` (drop
filters) into the command of the ephemeral container it adds to a target pod; the script applies
the fault in the pod's network namespace, holds it until the absolute deadline `deadline_at` (unix
seconds; an injector the kubelet starts after it injects nothing) and removes it (SIGTERM removes it
at once). `clear_command()` removes what chaosguard left (its root
qdisc, a partition's ingress qdisc), and only that. Everything that could make the script refuse
its arguments is checked here first, so that a bad spec fails in the operator with a message naming
the field rather than in a container log.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from chaosguard.api.durations import DurationError, to_seconds
from chaosguard.api.models import RATE_PATTERN

# Where the injector image installs injector/netem.sh (executable).
INJECTOR_SCRIPT = "/usr/local/bin/chaosguard-netem"
# The root qdisc handle that marks a qdisc as chaosguard's (see netem.sh).
ROOT_HANDLE = "ca05:"
# The longest hold the script accepts (from now to the deadline).
MAX_DEADLINE_SECONDS = 86400

_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_RATE = re.compile(RATE_PATTERN)
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}
PARTITION_DIRECTIONS = ("both", "egress", "ingress")


class NetemArgumentError(ValueError):
    """A latency setting the injector cannot be given; the message names the field and the fix."""


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


def _device_args(device: str | None) -> list[str]:
    if device is None:
        return []
    if not _IFNAME.match(device):
        raise NetemArgumentError(
            f"device {device!r} is not a network interface name: 1 to 15 letters, digits, '.', '_', '-' or '@'"
        )
    return ["--device", device]


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
    tc_delay = tc_time(impairment.delay, f"{field}.delay")
    tc_jitter = tc_time(impairment.jitter, f"{field}.jitter")
    correlation = impairment.correlation
    if isinstance(correlation, bool) or not isinstance(correlation, int) or not 0 <= correlation <= 100:
        raise NetemArgumentError(f"{field}.correlation {correlation!r} is not a whole percentage: give 0 to 100")
    _check_deadline(deadline_at, now)
    argv = [script, "inject"]
    if not _is_zero(tc_delay):
        argv += ["--delay", tc_delay]
        if not _is_zero(tc_jitter):
            argv += ["--jitter", tc_jitter]
            if correlation:
                argv += ["--correlation", str(correlation)]
    elif field == "latency":
        raise NetemArgumentError(f"latency.delay {impairment.delay!r} adds no delay: give a delay above 0, e.g. 200ms")
    percentages = [
        ("loss", impairment.loss, "--loss"),
        ("lossCorrelation", impairment.loss_correlation if impairment.loss else None, "--loss-correlation"),
        ("corrupt", impairment.corrupt, "--corrupt"),
        ("duplicate", impairment.duplicate, "--duplicate"),
        ("reorder", impairment.reorder, "--reorder"),
        ("reorderCorrelation", impairment.reorder_correlation if impairment.reorder else None, "--reorder-correlation"),
    ]
    for name, value, flag in percentages:
        if value is not None and (percent := tc_percent(value, f"{field}.{name}")) != "0":
            argv += [flag, percent]
    if impairment.reorder and _is_zero(tc_delay):
        raise NetemArgumentError(
            f"{field}.reorder needs {field}.delay: netem reorders by sending some packets without the delay; "
            "set a delay such as 10ms"
        )
    if impairment.rate is not None:
        argv += ["--rate", tc_rate(impairment.rate, f"{field}.rate")]
    if len(argv) == 2:  # nothing after `inject`
        raise NetemArgumentError(
            f"{field} impairs nothing: give at least one of delay, loss, corrupt, duplicate, reorder or rate"
        )
    argv += ["--deadline-at", str(deadline_at)]
    argv += _device_args(device)
    argv += _match_args(cidrs, ports, field)
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


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
    if not cidrs:
        raise NetemArgumentError(
            "partition.destinationCIDRs is empty: a partition names the addresses it cuts off, e.g. [10.1.0.0/16]"
        )
    if direction not in PARTITION_DIRECTIONS:
        raise NetemArgumentError(f"partition.direction {direction!r} is not one of {', '.join(PARTITION_DIRECTIONS)}")
    _check_deadline(deadline_at, now)
    argv = [script, "inject", "--drop", "--direction", direction, "--deadline-at", str(deadline_at)]
    argv += _device_args(device)
    argv += _match_args(cidrs, ports, "partition")
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


def tc_percent(value: float, field: str) -> str:
    """A percentage as the script reads it: 30, 0.5, 100 (no exponent, no trailing zeros)."""
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


def _match_args(cidrs: list[str], ports: list[int], field: str) -> list[str]:
    argv = []
    # Duplicates would only add duplicate filters.
    for cidr in dict.fromkeys(_normalise_cidr(cidr, index, field) for index, cidr in enumerate(cidrs)):
        argv += ["--cidr", cidr]
    for port in dict.fromkeys(_check_port(port, index, field) for index, port in enumerate(ports)):
        argv += ["--port", str(port)]
    return argv


def clear_command(
    device: str | None = None, *, script: str = INJECTOR_SCRIPT, status_file: str | None = None
) -> list[str]:
    """The argv that removes chaosguard's qdisc from the device if, and only if, it is there."""
    argv = [script, "clear", *_device_args(device)]
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


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
