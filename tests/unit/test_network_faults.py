"""The network faults beyond latency (action network and partition) as pure logic: the spec's
rules, the policy limits, the destinations they may not reach, and the injector argv and container
the operator builds from a spec. The injector itself is measured in tests/netns (netem guest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chaosguard.api.models import ChaosExperimentSpec, ChaosPolicy, FaultRecord, NetworkSpec, PartitionSpec
from chaosguard.cli.main import main
from chaosguard.decisions.netem import (
    INJECTOR_SCRIPT,
    Impairment,
    NetemArgumentError,
    network_command,
    partition_command,
    rate_bits_per_second,
)
from chaosguard.decisions.policy import GuardedAddress, combine, destination_refusals, static_refusals
from chaosguard.runtime.faults import describe_injector_exit, injector_container

NOW = 1_800_000_000.0  # the operator's clock, unix seconds
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TARGET = {"selector": {"matchLabels": {"app": "checkout"}}, "mode": "one"}


def spec(**fields: Any) -> ChaosExperimentSpec:
    return ChaosExperimentSpec.model_validate({"target": TARGET, "duration": "2m", **fields})


def policy(name: str, **fields: Any) -> ChaosPolicy:
    return ChaosPolicy.model_validate({"metadata": {"name": name}, "spec": fields})


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"action": "network", "network": {}}, "spec.network impairs nothing"),
        ({"action": "network", "network": {"delay": "0ms"}}, "spec.network impairs nothing"),
        ({"action": "network", "network": {"reorder": 25}}, "spec.network.reorder needs spec.network.delay"),
        ({"action": "network", "network": {"loss": 150}}, "less than or equal to 100"),
        ({"action": "network", "network": {"rate": "1mb"}}, "String should match pattern"),
        ({"action": "network", "network": {"rate": "0mbit"}}, "caps the bandwidth at 0"),
        ({"action": "network", "network": {"lossCorrelation": 5, "corrupt": 1}}, "lossCorrelation needs"),
        ({"action": "network", "network": {"loss": 1, "correlation": 5}}, "only correlates jitter"),
        ({"action": "network"}, "spec.network is required when action is network"),
        ({"action": "latency", "latency": {"delay": "1s"}, "network": {"loss": 1}}, "spec.network is only allowed"),
        ({"action": "partition", "partition": {"destinationCIDRs": []}}, "at least 1 item"),
        ({"action": "partition", "partition": {"destinationCIDRs": ["::/0"]}}, "covers every address"),
        ({"action": "partition", "partition": {"destinationCIDRs": ["10.1.0.0/16"], "direction": "up"}}, "both"),
        ({"action": "partition"}, "spec.partition is required when action is partition"),
        ({"action": "partition", "partition": {"destinationCIDRs": ["0.0.0.0/00"]}}, "covers every address"),
        ({"action": "network", "network": {"loss": 1e-7}}, r"spec.network.loss is below the smallest"),
        ({"action": "network", "network": {"corrupt": 5e-7}}, r"tc takes, 0.000001; give 0.000001 or more"),
    ],
)
def test_bad_network_specs_are_refused_naming_the_field(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**block)


def test_every_impairment_can_be_combined_and_is_summarised() -> None:
    network = NetworkSpec.model_validate(
        {"delay": "50ms", "jitter": "5ms", "loss": 30, "corrupt": 1, "duplicate": 0.5, "reorder": 25, "rate": "1mbit"}
    )
    assert network.summary() == "delay 50ms ± 5ms, loss 30%, corrupt 1%, duplicate 0.5%, reorder 25%, rate 1mbit"
    partition = PartitionSpec.model_validate({"destinationCIDRs": ["10.1.0.0/16"], "ports": [5432]})
    assert partition.summary() == "partition (both) from 10.1.0.0/16 ports 5432"


# --- policy limits -------------------------------------------------------------------------------


def test_max_loss_caps_loss_and_names_the_field() -> None:
    effective = combine([policy("loose", maxLoss=50), policy("tight", maxLoss=20)])
    (refusal,) = static_refusals(spec(action="network", network={"loss": 30}), "shop", effective, None)
    assert (refusal.rule, refusal.field) == ("max-loss", "spec.network.loss")
    assert "20% allowed by ChaosPolicy/tight" in refusal.message and "set spec.network.loss to 20" in refusal.message
    assert static_refusals(spec(action="network", network={"loss": 20}), "shop", effective, None) == []


def test_max_loss_caps_corrupt_too() -> None:
    effective = combine([policy("tight", maxLoss=20)])
    (refusal,) = static_refusals(spec(action="network", network={"corrupt": 30}), "shop", effective, None)
    assert (refusal.rule, refusal.field) == ("max-loss", "spec.network.corrupt")
    assert "set spec.network.corrupt to 20 or less" in refusal.message, refusal.message


def test_the_smallest_percentage_tc_takes_is_admitted_and_rendered() -> None:
    network = spec(action="network", network={"loss": 0.000001}).network
    assert network is not None
    argv = network_command(Impairment(loss=network.loss), 1_800_000_060, [], [], now=NOW)
    assert argv[-1] == "qdisc add root handle ca05: netem loss random 0.000001%"


@pytest.mark.parametrize("field", ["loss", "corrupt"])
def test_a_network_fault_that_drops_everything_needs_partitions_allowed(field: str) -> None:
    effective = combine([policy("no-partitions", allowedActions=["pod-kill", "latency", "network"])])
    (refusal,) = static_refusals(spec(action="network", network={field: 100}), "shop", effective, None)
    assert (refusal.rule, refusal.field) == ("allowed-actions", f"spec.network.{field}")
    assert "is a partition, and partition is not allowed by ChaosPolicy/no-partitions" in refusal.message
    assert f"set spec.network.{field} below 100, or allow partition" in refusal.message
    assert static_refusals(spec(action="network", network={field: 99.9}), "shop", effective, None) == []
    allowed = combine([policy("partitions", allowedActions=["network", "partition"])])
    assert static_refusals(spec(action="network", network={field: 100}), "shop", allowed, None) == []


def test_max_latency_caps_a_network_delay_too() -> None:
    effective = combine([policy("p", maxLatency="100ms")])
    (refusal,) = static_refusals(spec(action="network", network={"delay": "200ms"}), "shop", effective, None)
    assert (refusal.rule, refusal.field) == ("max-latency", "spec.network.delay")


def test_a_policy_forbids_partitions_by_leaving_them_out_of_allowed_actions() -> None:
    effective = combine([policy("no-partitions", allowedActions=["pod-kill", "latency", "network"])])
    partition = spec(action="partition", partition={"destinationCIDRs": ["10.1.0.0/16"]})
    (refusal,) = static_refusals(partition, "shop", effective, None)
    assert refusal.rule == "allowed-actions" and "'partition' is not allowed" in refusal.message
    assert static_refusals(spec(action="network", network={"loss": 1}), "shop", effective, None) == []


def test_a_namespace_that_forbids_net_admin_refuses_every_network_fault() -> None:
    labels = {"shop": {"pod-security.kubernetes.io/enforce": "baseline"}}
    for action, block in (("network", {"loss": 1}), ("partition", {"destinationCIDRs": ["10.1.0.0/16"]})):
        refusals = static_refusals(spec(action=action, **{action: block}), "shop", combine([]), labels)
        assert [r.rule for r in refusals] == ["pod-security"], refusals
        assert f"the {action} injector needs" in refusals[0].message


def test_validate_admits_the_examples_and_applies_the_limits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    examples = ["-f", str(EXAMPLES / "network-loss.yaml"), "-f", str(EXAMPLES / "partition.yaml")]
    code, out = validate(capsys, *examples)
    assert code == 0 and out.count("admitted") == 2, out
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "apiVersion: chaosguard.dev/v1alpha1\nkind: ChaosPolicy\nmetadata: {name: strict}\n"
        "spec: {maxLoss: 10, allowedActions: [pod-kill, latency, network]}\n"
    )
    code, out = validate(capsys, *examples, "--policy", str(strict))
    assert code == 1
    assert "REFUSED max-loss: loss 30% is more than the 10% allowed by ChaosPolicy/strict" in out, out
    assert "REFUSED allowed-actions: action 'partition' is not allowed" in out, out


def test_validate_refuses_a_reorder_without_delay_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    experiment = tmp_path / "reorder.yaml"
    experiment.write_text((EXAMPLES / "network-loss.yaml").read_text().replace("    loss: 30 ", "    reorder: 30 "))
    code, out = validate(capsys, "-f", str(experiment))
    assert code == 1 and "REFUSED schema: spec.network" in out and "reorder needs spec.network.delay" in out, out


# --- destinations --------------------------------------------------------------------------------

GUARDED = [
    GuardedAddress("10.96.0.1", "the API server (Service default/kubernetes)"),
    GuardedAddress("172.18.0.2", "node worker-1"),
    GuardedAddress("fd00::5", "node worker-2"),
    GuardedAddress("10.244.3.7", "pod chaosguard/chaosguard-0 (chaosguard's own namespace)", operator=True),
]


@pytest.mark.parametrize(
    ("cidr", "owner"),
    [("10.96.0.0/12", "the API server"), ("172.18.0.0/16", "node worker-1"), ("fd00::/64", "node worker-2")],
)
def test_a_partition_never_reaches_a_node_or_the_api_server(cidr: str, owner: str) -> None:
    partition = spec(action="partition", partition={"destinationCIDRs": ["10.1.0.0/16", cidr]})
    (refusal,) = destination_refusals(partition, GUARDED, combine([]))
    assert (refusal.rule, refusal.field) == ("partition-protected-address", "spec.partition.destinationCIDRs[1]")
    assert owner in refusal.message and "narrow the CIDR" in refusal.message


def test_network_impairments_may_reach_nodes_but_not_the_operator_unless_every_policy_allows() -> None:
    network = spec(action="network", network={"loss": 5, "destinationCIDRs": ["10.0.0.0/8", "172.16.0.0/12"]})
    (refusal,) = destination_refusals(network, GUARDED, combine([]))
    assert (refusal.rule, refusal.field) == ("operator-namespace-destination", "spec.network.destinationCIDRs[0]")
    assert "allowOperatorNamespaceDestinations: true" in refusal.message
    one_allows = combine([policy("a", allowOperatorNamespaceDestinations=True), policy("b")])
    assert len(destination_refusals(network, GUARDED, one_allows)) == 1
    all_allow = combine([policy("a", allowOperatorNamespaceDestinations=True)])
    assert destination_refusals(network, GUARDED, all_allow) == []
    everywhere = spec(action="network", network={"loss": 5})
    assert destination_refusals(everywhere, GUARDED, combine([])) == []


@pytest.mark.parametrize("field", ["loss", "corrupt"])
def test_a_network_fault_that_drops_everything_is_judged_as_a_partition(field: str) -> None:
    everywhere = spec(action="network", network={field: 100})
    refusals = destination_refusals(everywhere, GUARDED, combine([]))
    assert [(r.rule, r.field) for r in refusals] == [("partition-protected-address", f"spec.network.{field}")] * 2
    assert "with no spec.network.destinationCIDRs reaches every address" in refusals[0].message
    assert "the API server" in refusals[0].message and "node worker-2" in refusals[1].message
    narrowed = spec(action="network", network={field: 100, "destinationCIDRs": ["10.1.0.0/16", "10.96.0.1/32"]})
    (refusal,) = destination_refusals(narrowed, GUARDED, combine([]))
    assert (refusal.rule, refusal.field) == ("partition-protected-address", "spec.network.destinationCIDRs[1]")
    assert "the API server" in refusal.message and "narrow the CIDR" in refusal.message
    clear = spec(action="network", network={field: 100, "destinationCIDRs": ["10.1.0.0/16"]})
    assert destination_refusals(clear, GUARDED, combine([])) == []


def test_a_partition_clear_of_guarded_addresses_is_admitted() -> None:
    partition = spec(action="partition", partition={"destinationCIDRs": ["10.1.0.0/16", "fd01::/64"]})
    assert destination_refusals(partition, GUARDED, combine([])) == []


# --- the injector's argv and container -----------------------------------------------------------


def test_network_command_carries_every_impairment_in_the_scripts_form() -> None:
    impairment = Impairment(
        delay="50ms", jitter="5ms", correlation=10, loss=30, loss_correlation=25, corrupt=1.5,
        duplicate=0.25, reorder=25, reorder_correlation=50, rate="1mbit",
    )  # fmt: skip
    netem = "netem delay 50ms 5ms 10% reorder 25% 50% loss random 30% 25% corrupt 1.5% duplicate 0.25% rate 1mbit"
    v4 = "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.0.0/16"
    ports = "match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip protocol {} 0xff match ip dport 443 0xffff"
    assert network_command(impairment, 1_800_000_060, ["10.1.0.0/16"], [443], "eth0", now=NOW) == [
        INJECTOR_SCRIPT, "inject", "--deadline-at", "1800000060", "--device", "eth0",
        "--fault", f"root qdisc ca05: prio with {netem} on band ca05:4",
        "--effect", "impairing only egress to destinations 10.1.0.0/16, TCP/UDP ports 443; other traffic unaffected",
        "--tc", "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
        "--tc", f"qdisc add parent ca05:4 handle ca06: {netem}",
        "--tc", f"{v4} {ports.format(6)} flowid ca05:4",
        "--tc", f"{v4} {ports.format(17)} flowid ca05:4",
    ]  # fmt: skip
    assert network_command(Impairment(loss=30), 1_800_000_005, [], [], now=NOW) == [
        INJECTOR_SCRIPT, "inject", "--deadline-at", "1800000005",
        "--fault", "root qdisc ca05: netem loss random 30%", "--effect", "impairing all egress traffic",
        "--tc", "qdisc add root handle ca05: netem loss random 30%",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("impairment", "message"),
    [
        (Impairment(), "network impairs nothing"),
        (Impairment(loss=0), "network impairs nothing"),
        (Impairment(reorder=5), "network.reorder needs network.delay"),
        (Impairment(loss=101), "network.loss 101 is not a percentage"),
        (Impairment(rate="1 mbit"), "network.rate '1 mbit' is not a bandwidth"),
        (Impairment(rate="0kbit"), "network.rate '0kbit' is not a bandwidth"),
    ],
)
def test_network_command_refuses_what_the_script_would_refuse(impairment: Impairment, message: str) -> None:
    with pytest.raises(NetemArgumentError, match=message):
        network_command(impairment, 1_800_000_060, [], [], now=NOW)


def test_partition_command_always_names_cidrs_and_a_direction() -> None:
    v4 = "filter add parent ffff: protocol ip pref 51717 u32 match ip src 10.1.2.3/32"
    v4_ports = "match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip protocol {} 0xff match ip sport 5432 0xffff"
    v6 = "filter add parent ffff: protocol ipv6 pref 51718 u32 match ip6 src fd00::/64"
    assert partition_command(["10.1.2.3", "fd00::/64"], [5432], "ingress", 1_800_000_030, now=NOW) == [
        INJECTOR_SCRIPT, "inject", "--deadline-at", "1800000030", "--fault", "partition",
        "--effect",
        "dropping ingress traffic of destinations 10.1.2.3/32, fd00::/64, TCP/UDP ports 5432; other traffic unaffected",
        "--tc", "qdisc add handle ffff: ingress",
        "--tc", f"{v4} {v4_ports.format(6)} action drop",
        "--tc", f"{v4} {v4_ports.format(17)} action drop",
        "--tc", f"{v6} match ip6 protocol 6 0xff match ip6 sport 5432 0xffff action drop",
        "--tc", f"{v6} match ip6 protocol 17 0xff match ip6 sport 5432 0xffff action drop",
    ]  # fmt: skip
    with pytest.raises(NetemArgumentError, match=r"partition\.destinationCIDRs is empty"):
        partition_command([], [], "both", 1_800_000_030, now=NOW)
    with pytest.raises(NetemArgumentError, match=r"partition\.direction 'up'"):
        partition_command(["10.0.0.0/8"], [], "up", 1_800_000_030, now=NOW)
    with pytest.raises(NetemArgumentError, match=r"deadline_at 1800000000 is out of range"):
        partition_command(["10.0.0.0/8"], [], "both", 1_800_000_000, now=NOW)  # the run has ended


def test_rates_are_decimal_bits_per_second() -> None:
    assert rate_bits_per_second("1mbit") == 1_000_000
    assert rate_bits_per_second("512kbit") == 512_000
    assert rate_bits_per_second("1.5gbit") == 1_500_000_000


@pytest.mark.parametrize(
    ("action", "block", "name", "batch"),
    [
        (
            "network",
            {"loss": 30, "rate": "1mbit"},
            "chaosguard-network-run-1",
            ["qdisc add root handle ca05: netem loss random 30% rate 1mbit"],
        ),
        (
            "partition",
            {"destinationCIDRs": ["10.1.0.0/16"], "direction": "egress"},
            "chaosguard-partition-run-1",
            [
                "qdisc add root handle ca05: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
                "filter add parent ca05: protocol ip pref 1 u32 match ip dst 10.1.0.0/16 action drop",
            ],
        ),
    ],
)
def test_the_injector_container_carries_the_fault_and_nothing_more(
    action: str, block: dict[str, Any], name: str, batch: list[str]
) -> None:
    container = injector_container(
        spec(action=action, **{action: block}), "run-1", "shop/x", 1_800_000_120, "img:1", now=NOW
    )
    assert container["name"] == name and container["image"] == "img:1"
    assert container["command"][:2] == [INJECTOR_SCRIPT, "inject"]
    command = container["command"]
    assert [command[i + 1] for i, word in enumerate(command) if word == "--tc"] == batch
    assert container["command"][container["command"].index("--deadline-at") + 1] == "1800000120"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    kind = FaultRecord(namespace="shop", name="p", uid="u", container=name).kind
    assert kind == action.capitalize()


def test_a_kernel_without_the_tc_modules_is_named_for_the_fault_that_needs_them() -> None:
    terminated = {"exitCode": 4, "message": "error: adding ... failed: Error: Specified qdisc kind is unknown."}
    assert "lacks a tc module a partition needs (sch_prio" in describe_injector_exit(terminated, "Partition")
    network = describe_injector_exit(terminated, "Network")
    assert "the node's kernel has no sch_netem, so no network fault can be added there" in network
    assert "qdisc kind is unknown" in network
