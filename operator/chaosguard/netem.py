"""The argv of the latency injector (`injector/netem.sh`): pure, no I/O.

The operator puts `injector_command(...)` into the command of the ephemeral container it adds to
a target pod; the script adds a tc netem delay in the pod's network namespace, holds it until
`deadline_seconds` have passed and removes it (SIGTERM removes it at once). `clear_command()`
removes a left-over chaosguard qdisc, and only that. Everything that could make the script refuse
its arguments is checked here first, so that a bad spec fails in the operator with a message naming
the field rather than in a container log.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from chaosguard.durations import DurationError, to_seconds

# Where the injector image installs injector/netem.sh (executable).
INJECTOR_SCRIPT = "/usr/local/bin/chaosguard-netem"
# The root qdisc handle that marks a qdisc as chaosguard's (see netem.sh).
ROOT_HANDLE = "ca05:"
# The longest hold the script accepts.
MAX_DEADLINE_SECONDS = 86400

_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class NetemArgumentError(ValueError):
    """A latency setting the injector cannot be given; the message names the field and the fix."""


def script_path() -> Path:
    """The script in this source tree or installed package (for tests and image builds)."""
    return Path(__file__).with_name("injector") / "netem.sh"


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
    deadline_seconds: int,
    cidrs: list[str],
    ports: list[int],
    device: str | None = None,
    *,
    script: str = INJECTOR_SCRIPT,
    status_file: str | None = None,
) -> list[str]:
    """The argv that injects `delay` (± `jitter`, `correlation` %) for `deadline_seconds`.

    With no `cidrs` and no `ports` all egress of the device is delayed; otherwise only egress to
    one of the CIDRs (IPv4 or IPv6) and, if ports are given, to one of the TCP/UDP destination ports.
    `device` defaults (in the script) to the interface of the default route, else eth0.
    A zero jitter is left out, and so is the correlation then: it only correlates the jitter.
    """
    tc_delay = tc_time(delay, "latency.delay")
    if _is_zero(tc_delay):
        raise NetemArgumentError(f"latency.delay {delay!r} adds no delay: give a delay above 0, e.g. 200ms")
    tc_jitter = tc_time(jitter, "latency.jitter")
    if isinstance(correlation, bool) or not isinstance(correlation, int) or not 0 <= correlation <= 100:
        raise NetemArgumentError(f"latency.correlation {correlation!r} is not a whole percentage: give 0 to 100")
    if (
        isinstance(deadline_seconds, bool)
        or not isinstance(deadline_seconds, int)
        or not 1 <= deadline_seconds <= MAX_DEADLINE_SECONDS
    ):
        raise NetemArgumentError(
            f"deadline_seconds {deadline_seconds!r} is out of range: the injector holds a fault "
            f"for 1 to {MAX_DEADLINE_SECONDS} whole seconds"
        )

    argv = [script, "inject", "--delay", tc_delay]
    if not _is_zero(tc_jitter):
        argv += ["--jitter", tc_jitter]
        if correlation:
            argv += ["--correlation", str(correlation)]
    argv += ["--deadline-seconds", str(deadline_seconds)]
    argv += _device_args(device)
    # Duplicates would only add duplicate filters.
    for cidr in dict.fromkeys(_normalise_cidr(cidr, index) for index, cidr in enumerate(cidrs)):
        argv += ["--cidr", cidr]
    for port in dict.fromkeys(_check_port(port, index) for index, port in enumerate(ports)):
        argv += ["--port", str(port)]
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


def clear_command(
    device: str | None = None, *, script: str = INJECTOR_SCRIPT, status_file: str | None = None
) -> list[str]:
    """The argv that removes chaosguard's qdisc from the device if, and only if, it is there."""
    argv = [script, "clear", *_device_args(device)]
    if status_file is not None:
        argv += ["--status-file", status_file]
    return argv


def _normalise_cidr(cidr: str, index: int) -> str:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except (ValueError, TypeError) as error:
        raise NetemArgumentError(
            f"latency.destinationCIDRs[{index}] {cidr!r} is not a CIDR such as 10.1.0.0/16 or fd00::/64: {error}"
        ) from None


def _check_port(port: int, index: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise NetemArgumentError(f"latency.ports[{index}] {port!r} is not a port: give 1 to 65535")
    return port
