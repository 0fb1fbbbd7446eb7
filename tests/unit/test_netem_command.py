"""The latency injector's argv (chaosguard.decisions.netem): pure logic, no network.

What the script does with this argv is tested for real in tests/netns (inside a guest kernel with
netem, through tests/integration/test_netem_in_guest.py).
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosguard.api.durations import to_seconds
from chaosguard.decisions.netem import (
    INJECTOR_SCRIPT,
    MAX_DEADLINE_SECONDS,
    NetemArgumentError,
    clear_command,
    injector_command,
    script_path,
    tc_time,
)

NOW = 1_800_000_000.4  # the operator's clock, unix seconds
AT = 1_800_000_300  # an absolute deadline 300 s later


def command(**overrides: object) -> list[str]:
    arguments: dict[str, object] = {
        "delay": "200ms",
        "jitter": "0ms",
        "correlation": 0,
        "deadline_at": AT,
        "now": NOW,
        "cidrs": [],
        "ports": [],
    }
    arguments.update(overrides)
    return injector_command(**arguments)  # type: ignore[arg-type]


def test_minimal_command_delays_everything_on_the_default_device() -> None:
    assert command() == [INJECTOR_SCRIPT, "inject", "--delay", "200ms", "--deadline-at", "1800000300"]


def test_the_deadline_is_absolute_so_a_late_start_cannot_stretch_it() -> None:
    # The same run's deadline gives the same argv whenever it is built: the script computes the hold
    # from its own clock when the fault goes in, not from when the operator built the argv.
    assert command(now=NOW) == command(now=NOW + 250)
    assert "--deadline-seconds" not in command()


def test_full_command_carries_every_setting_in_order() -> None:
    argv = command(
        jitter="20ms",
        correlation=25,
        cidrs=["10.1.0.0/16", "fd00:1::/64"],
        ports=[8080, 53],
        device="eth0",
        status_file="/dev/termination-log",
        script="/opt/netem.sh",
    )
    assert argv == [
        "/opt/netem.sh",
        "inject",
        "--delay",
        "200ms",
        "--jitter",
        "20ms",
        "--correlation",
        "25",
        "--deadline-at",
        "1800000300",
        "--device",
        "eth0",
        "--cidr",
        "10.1.0.0/16",
        "--cidr",
        "fd00:1::/64",
        "--port",
        "8080",
        "--port",
        "53",
        "--status-file",
        "/dev/termination-log",
    ]


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("200ms", "200ms"),
        ("1s", "1s"),
        ("1000ms", "1s"),
        ("1.5s", "1500ms"),
        ("0.25s", "250ms"),
        ("1.5ms", "1500us"),
        ("1m", "60s"),
        ("1m30s", "90s"),
        ("1h", "3600s"),
        ("0", "0ms"),
        ("0ms", "0ms"),
    ],
)
def test_durations_become_tc_times(duration: str, expected: str) -> None:
    assert tc_time(duration, "latency.delay") == expected


@given(
    st.integers(min_value=0, max_value=7200 * 1000).map(lambda ms: f"{ms}ms")
    | st.integers(min_value=0, max_value=7200).map(lambda s: f"{s}s")
    | st.tuples(st.integers(0, 59), st.integers(0, 59)).map(lambda t: f"{t[0]}m{t[1]}s")
)
def test_tc_time_keeps_the_duration_exactly(duration: str) -> None:
    text = tc_time(duration, "latency.delay")
    number, unit = re.fullmatch(r"([0-9]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
    assert int(number) * scale == pytest.approx(to_seconds(duration), abs=1e-9)


def test_zero_jitter_leaves_out_jitter_and_correlation() -> None:
    argv = command(jitter="0", correlation=25)
    assert "--jitter" not in argv
    assert "--correlation" not in argv


def test_zero_correlation_is_left_out() -> None:
    argv = command(jitter="10ms", correlation=0)
    assert argv[argv.index("--jitter") + 1] == "10ms"
    assert "--correlation" not in argv


def test_cidrs_are_normalised_and_deduplicated_and_ports_deduplicated() -> None:
    argv = command(cidrs=["10.1.2.3/16", "10.1.0.0/16", "10.9.9.9", "fd00::1/64"], ports=[80, 80, 443])
    cidrs = [argv[i + 1] for i, word in enumerate(argv) if word == "--cidr"]
    ports = [argv[i + 1] for i, word in enumerate(argv) if word == "--port"]
    assert cidrs == ["10.1.0.0/16", "10.9.9.9/32", "fd00::/64"]
    assert ports == ["80", "443"]


def test_clear_command() -> None:
    assert clear_command() == [INJECTOR_SCRIPT, "clear"]
    assert clear_command("eth1", script="/x.sh", status_file="/s") == [
        "/x.sh",
        "clear",
        "--device",
        "eth1",
        "--status-file",
        "/s",
    ]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"delay": "200"}, "latency.delay"),
        ({"delay": "fast"}, "latency.delay"),
        ({"delay": "0ms"}, "latency.delay"),
        ({"delay": "0.0000001s"}, "latency.delay"),
        ({"jitter": "-1ms"}, "latency.jitter"),
        ({"correlation": 101}, "latency.correlation"),
        ({"correlation": -1}, "latency.correlation"),
        ({"correlation": True}, "latency.correlation"),
        ({"deadline_at": int(NOW)}, "deadline_at"),  # already passed: never inject after the run's end
        ({"deadline_at": int(NOW) - 60}, "deadline_at"),
        ({"deadline_at": int(NOW) + MAX_DEADLINE_SECONDS + 1}, "deadline_at"),  # the 24 h cap, from now
        ({"deadline_at": AT + 0.5}, "deadline_at"),
        ({"deadline_at": True}, "deadline_at"),
        ({"cidrs": ["10.0.0.0/8", "10.0.0.0/33"]}, "latency.destinationCIDRs[1]"),
        ({"cidrs": ["example.com"]}, "latency.destinationCIDRs[0]"),
        ({"ports": [0]}, "latency.ports[0]"),
        ({"ports": [80, 65536]}, "latency.ports[1]"),
        ({"ports": [True]}, "latency.ports[0]"),
        ({"device": "eth0; reboot"}, "device"),
        ({"device": "a-name-far-too-long"}, "device"),
        ({"device": ""}, "device"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(NetemArgumentError) as raised:
        command(**overrides)
    assert str(raised.value).startswith(field), str(raised.value)


def test_bad_device_is_refused_by_clear_too() -> None:
    with pytest.raises(NetemArgumentError, match="device"):
        clear_command("no/slash")


def test_the_script_ships_beside_the_module_and_is_executable() -> None:
    path = script_path()
    assert path.is_file(), path
    assert os.access(path, os.X_OK), f"{path} must be executable: the injector image runs it directly"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    # Every flag the builder emits is one the script parses.
    argv = command(jitter="1ms", correlation=1, cidrs=["10.0.0.0/8"], ports=[1], device="eth0", status_file="/s")
    for flag in (word for word in argv if word.startswith("--")):
        assert f"\t\t{flag})" in text, f"netem.sh does not parse {flag}"
