"""The network injector's tc batch and argv (chaosguard.decisions.netem), and its contract with the
script (chaosguard.decisions.netem_contract): pure logic, no network.

What the script does with this argv is tested for real in tests/netns (inside a guest kernel with
netem, through tests/integration/test_netem_in_guest.py), and without netem in
tests/integration/test_netem_script.py.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosguard.api.durations import to_seconds
from chaosguard.decisions import netem_contract
from chaosguard.decisions.netem import (
    INJECTOR_SCRIPT,
    MAX_BATCH_BYTES,
    MAX_DEADLINE_SECONDS,
    Impairment,
    NetemArgumentError,
    check_batch,
    clear_command,
    impairment_batch,
    injector_command,
    partition_batch,
    partition_command,
    script_path,
    tc_time,
)
from chaosguard.decisions.netem_contract import BLOCK_BEGIN, BLOCK_END, Line, contract_block

NOW = 1_800_000_000.4  # the operator's clock, unix seconds
AT = 1_800_000_300  # an absolute deadline 300 s later
PRIO = "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1"
PORT_MATCH_V4 = "match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6"


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


def tc_lines(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "--tc"]


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_minimal_command_delays_everything_on_the_default_device() -> None:
    assert command() == [
        INJECTOR_SCRIPT, "inject", "--deadline-at", "1800000300",
        "--fault", "root qdisc ca05: netem delay 200ms", "--effect", "delaying all egress traffic",
        "--tc", "qdisc add root handle ca05: netem delay 200ms",
    ]  # fmt: skip


def test_the_deadline_is_absolute_so_a_late_start_cannot_stretch_it() -> None:
    # The same run's deadline gives the same argv whenever it is built: the script computes the hold
    # from its own clock when the fault goes in, not from when the operator built the argv.
    assert command(now=NOW) == command(now=NOW + 250)
    assert "--deadline-seconds" not in command()


def test_a_narrowed_delay_is_a_prio_with_a_netem_band_and_one_filter_per_cidr_port_and_protocol() -> None:
    argv = command(
        jitter="20ms",
        correlation=25,
        cidrs=["10.1.0.0/16", "fd00:1::/64"],
        ports=[8080],
        device="eth0",
        status_file="/dev/termination-log",
        script="/opt/netem.sh",
    )
    assert argv[:8] == [
        "/opt/netem.sh", "inject", "--deadline-at", "1800000300", "--device", "eth0",
        "--status-file", "/dev/termination-log",
    ]  # fmt: skip
    assert values(argv, "--fault") == ["root qdisc ca05: prio with netem delay 200ms 20ms 25% on band ca05:4"]
    assert values(argv, "--effect") == [
        "delaying only egress to destinations 10.1.0.0/16, fd00:1::/64, TCP/UDP ports 8080; other traffic unaffected"
    ]
    v4 = "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.0.0/16"
    v6 = "filter add parent ca05: protocol ipv6 pref 2 u32 match ip6 dst fd00:1::/64"
    assert tc_lines(argv) == [
        PRIO,
        "qdisc add parent ca05:4 handle ca06: netem delay 200ms 20ms 25%",
        f"{v4} {PORT_MATCH_V4} match ip protocol 6 0xff match ip dport 8080 0xffff flowid ca05:4",
        f"{v4} {PORT_MATCH_V4} match ip protocol 17 0xff match ip dport 8080 0xffff flowid ca05:4",
        f"{v6} match ip6 protocol 6 0xff match ip6 dport 8080 0xffff flowid ca05:4",
        f"{v6} match ip6 protocol 17 0xff match ip6 dport 8080 0xffff flowid ca05:4",
    ]


def test_ports_alone_match_any_destination_of_both_families() -> None:
    lines = tc_lines(command(ports=[53]))
    assert lines[2] == (
        f"filter add parent ca05: protocol ip pref 1 u32 {PORT_MATCH_V4} match ip protocol 6 0xff "
        "match ip dport 53 0xffff flowid ca05:4"
    )
    assert lines[4] == (
        "filter add parent ca05: protocol ipv6 pref 2 u32 match ip6 protocol 6 0xff match ip6 dport 53 0xffff "
        "flowid ca05:4"
    )
    assert len(lines) == 6


def test_every_impairment_goes_into_one_netem_in_netems_order() -> None:
    impairment = Impairment(
        delay="50ms", jitter="5ms", correlation=10, loss=30, loss_correlation=25, corrupt=1.5,
        duplicate=0.25, reorder=25, reorder_correlation=50, rate="1mbit",
    )  # fmt: skip
    batch = impairment_batch(impairment, [], [], "network")
    netem = "netem delay 50ms 5ms 10% reorder 25% 50% loss random 30% 25% corrupt 1.5% duplicate 0.25% rate 1mbit"
    assert batch.lines == (f"qdisc add root handle ca05: {netem}",)
    assert (batch.fault, batch.effect) == (f"root qdisc ca05: {netem}", "impairing all egress traffic")


@pytest.mark.parametrize(
    ("direction", "shapes"),
    [
        ("egress", [Line.ROOT_QDISC, Line.EGRESS_FILTER]),
        ("ingress", [Line.INGRESS_QDISC, Line.INGRESS_FILTER_V4]),
        ("both", [Line.ROOT_QDISC, Line.EGRESS_FILTER, Line.INGRESS_QDISC, Line.INGRESS_FILTER_V4]),
    ],
)
def test_a_partition_drops_to_the_cidrs_on_egress_and_from_them_on_ingress(direction: str, shapes: list[Line]) -> None:
    batch = partition_batch(["10.1.2.3"], [], direction)
    assert [next(s for s in Line if line.startswith(s)) for line in batch.lines] == shapes
    if direction != "ingress":
        assert batch.lines[1] == "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.2.3/32 action drop"
    if direction != "egress":
        assert batch.lines[-1] == (
            "filter add parent ffff: protocol ip pref 51717 u32 match ip src 10.1.2.3/32 action drop"
        )
    traffic = {"both": "egress and ingress"}.get(direction, direction)
    assert batch.effect == f"dropping {traffic} traffic of destinations 10.1.2.3/32; other traffic unaffected"


def test_an_ingress_partition_with_ports_matches_source_ports() -> None:
    lines = partition_batch(["fd00::/64"], [5432], "ingress").lines
    assert lines[1] == (
        "filter add parent ffff: protocol ipv6 pref 51718 u32 match ip6 src fd00::/64 match ip6 protocol 6 0xff "
        "match ip6 sport 5432 0xffff action drop"
    )


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
    assert tc_lines(command(jitter="0", correlation=25)) == ["qdisc add root handle ca05: netem delay 200ms"]


def test_zero_correlation_is_left_out() -> None:
    assert tc_lines(command(jitter="10ms", correlation=0)) == ["qdisc add root handle ca05: netem delay 200ms 10ms"]


def test_cidrs_are_normalised_and_deduplicated_and_ports_deduplicated() -> None:
    argv = command(cidrs=["10.1.2.3/16", "10.1.0.0/16", "10.9.9.9", "fd00::1/64"], ports=[80, 80, 443])
    assert values(argv, "--effect") == [
        "delaying only egress to destinations 10.1.0.0/16, 10.9.9.9/32, fd00::/64, TCP/UDP ports 80, 443; "
        "other traffic unaffected"
    ]
    assert len(tc_lines(argv)) == 2 + 3 * 2 * 2


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
        ({"cidrs": [f"10.{i}.0.0/16" for i in range(12)], "ports": list(range(1, 11))}, "latency.destinationCIDRs"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(NetemArgumentError) as raised:
        command(**overrides)
    assert str(raised.value).startswith(field), str(raised.value)


def test_bad_device_is_refused_by_clear_too() -> None:
    with pytest.raises(NetemArgumentError, match="device"):
        clear_command("no/slash")


def test_a_batch_too_big_for_a_pod_spec_is_refused_with_the_count_and_the_fix() -> None:
    cidrs = [f"10.{i}.0.0/16" for i in range(16)]
    with pytest.raises(NetemArgumentError) as raised:
        partition_command(cidrs, [1, 2, 3, 4], "both", AT, now=NOW)
    message = str(raised.value)
    assert message.startswith("partition.destinationCIDRs and partition.ports make 256 tc filters"), message
    assert f"more than the {MAX_BATCH_BYTES} bytes" in message and "name fewer CIDRs or ports" in message
    # Well below the cap: what a real spec looks like.
    assert len(partition_command(cidrs[:4], [5432], "both", AT, now=NOW)) < 60


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "is empty"),
        (["qdisc del root handle ca05:"], "line 1 of the injector's tc batch is not one of the lines"),
        (["qdisc add root handle 1: htb"], "is not one of the lines"),
        (["qdisc add root handle ca05: netem delay 1ms", "qdisc replace root handle ca05: netem"], "line 2"),
        (["qdisc add root handle ca05: netem delay 1ms # comment"], "reads specially"),
        (["qdisc add root handle ca05: netem delay 1ms dev eth1"], "names a device"),
        (["qdisc add root handle ca05: netem delay 1ms\nqdisc del root"], "reads specially"),
        ([f"filter add parent ca05: protocol ip pref 1 u32 {'match ip dst 10.0.0.0/8 ' * 30}"], "more than 90 words"),
        (["filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.0.0.0/8 action drop"], "before the root"),
        ([Line.INGRESS_FILTER_V4 + "match ip src 10.0.0.0/8 action drop"], "before the ingress qdisc"),
        ([PRIO, PRIO], "already added"),
    ],
)
def test_a_batch_outside_the_contracts_shapes_is_refused(lines: list[str], problem: str) -> None:
    with pytest.raises(NetemArgumentError, match=re.escape(problem)):
        check_batch(lines, "network")


@given(
    st.lists(st.sampled_from(["10.1.0.0/16", "10.2.3.4", "fd00::/64", "fd01::1/128", "192.168.0.0/24"]), max_size=3),
    st.lists(st.integers(1, 65535), max_size=3),
    st.sampled_from(["both", "egress", "ingress", None]),
)
def test_every_rendered_batch_is_within_the_contract(cidrs: list[str], ports: list[int], direction: str | None) -> None:
    if direction is None:
        batch = impairment_batch(Impairment(delay="10ms", loss=1), cidrs, ports, "network")
    else:
        batch = partition_batch(cidrs or ["10.9.0.0/16"], ports, direction)
    check_batch(batch.lines, "network")  # raises on a line the script would refuse


# --- the contract, written once ------------------------------------------------------------------


def test_the_scripts_contract_block_is_the_generated_one() -> None:
    text = script_path().read_text()
    assert text.count(BLOCK_BEGIN) == 1 and text.count(BLOCK_END) == 1, "netem.sh must carry one contract block"
    block = text[text.index(BLOCK_BEGIN) : text.index(BLOCK_END) + len(BLOCK_END)]
    assert block == contract_block(), (
        "netem.sh's contract block differs from chaosguard.decisions.netem_contract; replace the block with:\n"
        + contract_block()
    )


def test_the_script_has_no_copies_of_the_contract_outside_its_block() -> None:
    # Numbers, handles and first words appear only in the generated block: everything else names them.
    text = script_path().read_text()
    rest = text[: text.index(BLOCK_BEGIN)] + text[text.index(BLOCK_END) :]
    body = "\n".join(line for line in rest.splitlines() if not line.lstrip().startswith("#"))
    for code in (2, 3, 4, 5, 129, 130, 143):
        assert not re.search(rf"(exit|die|return)\s+['\"]?{code}\b", body), f"netem.sh hard-codes exit code {code}"
    for value in ("ca05:", "ca06:", "ffff:", "51717", "51718", "86400"):
        assert value not in body, f"netem.sh hard-codes {value} outside the contract block"
    for said in netem_contract.Said:
        assert not re.search(rf"log \"?{said.value}:", body), f"netem.sh writes {said.value!r} without SAID_"


def test_the_operators_reading_of_the_report_matches_what_the_script_says() -> None:
    assert netem_contract.CLEARED.search("removed: qdisc ca05: from eth0 (reason: clear)")
    assert netem_contract.CLEARED.search("nothing to clear: no chaosguard qdisc on eth0, root qdisc is the default")
    assert netem_contract.INJECTOR_ENDED.search("not injected: the deadline 1800000000 passed 5s ago")
    assert not netem_contract.INJECTOR_ENDED.search("holding: until the deadline 1800000000, in 3s")
    assert set(netem_contract.INJECTOR_EXITS) == {code for code in netem_contract.InjectorExit if code}


def test_the_script_ships_beside_the_module_and_is_executable() -> None:
    path = script_path()
    assert path.is_file(), path
    assert os.access(path, os.X_OK), f"{path} must be executable: the injector image runs it directly"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    # Every flag the builder emits is one the script parses.
    argv = command(jitter="1ms", correlation=1, cidrs=["10.0.0.0/8"], ports=[1], device="eth0", status_file="/s")
    for flag in {word for word in argv if word.startswith("--")}:
        assert re.search(rf"\t\t(--[a-z-]+ \| )*{flag}( \| --[a-z-]+)*\)", text), f"netem.sh does not parse {flag}"
