"""The table of good and bad objects that `chaosguard validate` and the API server must judge alike.

Each case is a whole object built from a valid base by one change, so a refusal is owed to that change
alone. Every rule of the CRD schema (OpenAPI constraints and CEL) and of the models appears here, with
its edge values on both sides, and a few combinations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    id: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


def experiment(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": "pod-kill",
        "target": {"selector": {"matchLabels": {"app": "checkout"}}, "mode": "one"},
        "duration": "5m",
    }
    base.update(spec)
    return {"apiVersion": "chaosguard.dev/v1alpha1", "kind": "ChaosExperiment", "metadata": {}, "spec": base}


def latency(**block: Any) -> dict[str, Any]:
    return experiment(action="latency", latency={"delay": "200ms", **block})


def network(**block: Any) -> dict[str, Any]:
    return experiment(action="network", network=block)


def partition(**block: Any) -> dict[str, Any]:
    return experiment(action="partition", partition={"destinationCIDRs": ["10.1.0.0/16"], **block})


def node_drain(**block: Any) -> dict[str, Any]:
    return experiment(action="node-drain", nodeDrain=block)


def stress(**block: Any) -> dict[str, Any]:
    return experiment(action="stress", stress=block)


def container_restart(**block: Any) -> dict[str, Any]:
    return experiment(action="container-restart", containerRestart={"container": "app", **block})


def target(**fields: Any) -> dict[str, Any]:
    return experiment(target={"selector": {"matchLabels": {"app": "checkout"}}, **fields})


def selector_expression(**requirement: Any) -> dict[str, Any]:
    return experiment(target={"selector": {"matchExpressions": [requirement]}})


def guarded(**condition: Any) -> dict[str, Any]:
    base = {"name": "errors", "query": "sum(rate(x[1m]))", "operator": "<", "threshold": 0.01, **condition}
    return experiment(steadyState={"prometheus": {"url": "http://prometheus:9090"}, "conditions": [base]})


def policy(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "chaosguard.dev/v1alpha1", "kind": "ChaosPolicy", "metadata": {}, "spec": spec}


def budget(**gate: Any) -> dict[str, Any]:
    base = {
        "name": "checkout",
        "errorQuery": "sum(rate(errors[{{.window}}]))",
        "totalQuery": "sum(rate(requests[{{.window}}]))",
        "objective": 99.9,
        "minBudgetRemaining": 10,
    }
    base.update(gate)
    base = {key: value for key, value in base.items() if value is not None}
    return policy(steadyState={"prometheus": {"url": "http://prometheus:9090"}, "errorBudgets": [base]})


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    node = changed
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return changed


SLOTH = {"service": "checkout", "slo": "availability"}

_TABLE: list[tuple[str, dict[str, Any]]] = [
    # ---- the experiment's own blocks and durations
    ("pod-kill", experiment()),
    ("duration-0", experiment(duration="0")),
    ("duration-0s", experiment(duration="0s")),
    ("duration-0.0m", experiment(duration="0.0m")),
    ("duration-1ms", experiment(duration="1ms")),
    ("duration-0.5s", experiment(duration="0.5s")),
    ("duration-1h30m", experiment(duration="1h30m")),
    ("duration-unitless", experiment(duration="5")),
    ("duration-words", experiment(duration="5 minutes")),
    ("duration-missing", without(experiment(), "spec", "duration")),
    ("interval-pod-kill", experiment(interval="1m")),
    ("interval-0s", experiment(interval="0s")),
    ("interval-latency", latency() | {"spec": latency()["spec"] | {"interval": "1m"}}),
    ("action-unknown", experiment(action="explode")),
    ("latency-block-missing", experiment(action="latency")),
    ("latency-block-on-pod-kill", experiment(latency={"delay": "1s"})),
    ("network-block-missing", experiment(action="network")),
    ("network-block-on-latency", latency() | {"spec": latency()["spec"] | {"network": {"loss": 5}}}),
    ("partition-block-missing", experiment(action="partition")),
    ("pod-kill-block-on-network", network(loss=5) | {"spec": network(loss=5)["spec"] | {"podKill": {}}}),
    ("unknown-field", experiment(targett={})),
    ("dry-run", experiment(dryRun=True)),
    # ---- pod-kill
    ("grace-1", experiment(podKill={"gracePeriodSeconds": 1})),
    ("grace-0", experiment(podKill={"gracePeriodSeconds": 0})),
    ("min-available-2", experiment(podKill={"minAvailable": 2})),
    ("min-available-0", experiment(podKill={"minAvailable": 0})),
    ("min-available-negative", experiment(podKill={"minAvailable": -1})),
    ("min-available-50%", experiment(podKill={"minAvailable": "50%"})),
    ("min-available-100%", experiment(podKill={"minAvailable": "100%"})),
    ("min-available-0%", experiment(podKill={"minAvailable": "0%"})),
    ("min-available-101%", experiment(podKill={"minAvailable": "101%"})),
    ("min-available-word", experiment(podKill={"minAvailable": "half"})),
    ("min-available-bare-string", experiment(podKill={"minAvailable": "2"})),
    ("min-available-050%", experiment(podKill={"minAvailable": "050%"})),
    ("min-available-negative-percent", experiment(podKill={"minAvailable": "-5%"})),
    ("min-available-fraction-percent", experiment(podKill={"minAvailable": "5.5%"})),
    ("pdb-off", experiment(podKill={"respectDisruptionBudgets": False})),
    # ---- target
    ("mode-all", target(mode="all")),
    ("mode-all-value", target(mode="all", value=3)),
    ("mode-one-value", target(mode="one", value=1)),
    ("mode-fixed", target(mode="fixed", value=3)),
    ("mode-fixed-no-value", target(mode="fixed")),
    ("mode-fixed-0", target(mode="fixed", value=0)),
    ("mode-fixed-1000", target(mode="fixed", value=1000)),
    ("percent-1", target(mode="fixed-percent", value=1)),
    ("percent-100", target(mode="fixed-percent", value=100)),
    ("percent-101", target(mode="fixed-percent", value=101)),
    ("mode-unknown", target(mode="some")),
    ("namespaces", target(namespaces=["a", "b"])),
    ("selector-in", selector_expression(key="app", operator="In", values=["a"])),
    ("selector-in-no-values", selector_expression(key="app", operator="In")),
    ("selector-in-empty-values", selector_expression(key="app", operator="In", values=[])),
    ("selector-notin-no-values", selector_expression(key="app", operator="NotIn")),
    ("selector-exists", selector_expression(key="app", operator="Exists")),
    ("selector-exists-values", selector_expression(key="app", operator="Exists", values=["a"])),
    ("selector-doesnotexist-values", selector_expression(key="app", operator="DoesNotExist", values=["a"])),
    ("selector-empty-key", selector_expression(key="", operator="Exists")),
    ("selector-operator-unknown", selector_expression(key="app", operator="Like", values=["a"])),
    # ---- latency
    ("latency", latency()),
    ("latency-delay-0ms", latency(delay="0ms")),
    ("latency-delay-0", latency(delay="0")),
    ("latency-delay-1ms", latency(delay="1ms")),
    ("latency-delay-missing", experiment(action="latency", latency={})),
    ("latency-jitter", latency(jitter="20ms")),
    ("latency-correlation-with-jitter", latency(jitter="20ms", correlation=50)),
    ("latency-correlation-without-jitter", latency(correlation=50)),
    ("latency-correlation-0-without-jitter", latency(correlation=0)),
    ("latency-correlation-jitter-0ms", latency(jitter="0ms", correlation=10)),
    ("latency-correlation-101", latency(jitter="20ms", correlation=101)),
    ("latency-correlation-negative", latency(jitter="20ms", correlation=-1)),
    ("latency-cidr", latency(destinationCIDRs=["10.1.0.0/16"])),
    ("latency-cidr-host-bits", latency(destinationCIDRs=["10.1.2.3/16"])),
    ("latency-cidr-/33", latency(destinationCIDRs=["10.1.0.0/33"])),
    ("latency-cidr-no-prefix", latency(destinationCIDRs=["10.1.0.0"])),
    ("latency-cidr-word", latency(destinationCIDRs=["checkout"])),
    ("latency-cidr-ipv6", latency(destinationCIDRs=["fd00::/64"])),
    ("latency-cidr-ipv6-/129", latency(destinationCIDRs=["fd00::/129"])),
    ("latency-cidr-/0", latency(destinationCIDRs=["0.0.0.0/0"])),
    ("latency-cidr-prefix-leading-zero", latency(destinationCIDRs=["10.0.0.0/016"])),
    ("latency-cidr-address-leading-zero", latency(destinationCIDRs=["010.0.0.0/8"])),
    ("latency-cidr-ipv4-mapped", latency(destinationCIDRs=["::ffff:10.0.0.0/104"])),
    ("latency-cidr-ipv4-embedded", latency(destinationCIDRs=["64:ff9b::10.0.0.0/96"])),
    ("latency-cidr-zone", latency(destinationCIDRs=["fe80::1%eth0/64"])),
    ("latency-cidr-space", latency(destinationCIDRs=[" 10.0.0.0/8"])),
    ("latency-cidr-negative", latency(destinationCIDRs=["10.0.0.0/-1"])),
    ("latency-cidr-plus", latency(destinationCIDRs=["10.0.0.0/+8"])),
    ("latency-cidr-ipv6-upper", latency(destinationCIDRs=["FD00::/8"])),
    ("latency-cidr-65", latency(destinationCIDRs=[f"10.0.{n}.0/24" for n in range(65)])),
    ("latency-port-1", latency(ports=[1])),
    ("latency-port-65535", latency(ports=[65535])),
    ("latency-port-0", latency(ports=[0])),
    ("latency-port-65536", latency(ports=[65536])),
    # ---- network
    ("network-loss", network(loss=30)),
    ("network-loss-0", network(loss=0)),
    ("network-loss-100", network(loss=100)),
    ("network-loss-130", network(loss=130)),
    ("network-loss-negative", network(loss=-1)),
    ("network-loss-below-tc", network(loss=0.0000001)),
    ("network-loss-smallest", network(loss=0.000001)),
    ("network-corrupt-0-loss-5", network(loss=5, corrupt=0)),
    ("network-nothing", network()),
    ("network-delay", network(delay="10ms")),
    ("network-delay-0s", network(delay="0s")),
    ("network-delay-0s-loss", network(delay="0s", loss=5)),
    ("network-rate", network(rate="1mbit")),
    ("network-rate-0mbit", network(rate="0mbit")),
    ("network-rate-0.0kbit", network(rate="0.0kbit")),
    ("network-rate-0.5kbit", network(rate="0.5kbit")),
    ("network-rate-mb", network(rate="1mb")),
    ("network-loss-just-below-tc", network(loss=0.00000099)),
    ("network-reorder-below-tc", network(delay="10ms", reorder=0.0000005)),
    ("network-reorder-0-delay-0ms", network(reorder=0, delay="0ms", loss=1)),
    ("network-rate-0.001gbit", network(rate="0.001gbit")),
    ("network-delay-0.0ms-jitter", network(delay="0.0ms", jitter="5ms")),
    ("network-jitter-only", network(jitter="5ms")),
    ("network-correlation-101", network(delay="10ms", jitter="5ms", correlation=101)),
    ("network-duplicate-100", network(duplicate=100)),
    ("network-corrupt-100.5", network(corrupt=100.5)),
    ("network-duplicate", network(duplicate=1)),
    ("network-corrupt", network(corrupt=1)),
    ("network-reorder-with-delay", network(reorder=25, delay="10ms")),
    ("network-reorder-without-delay", network(reorder=25)),
    ("network-reorder-0-without-delay", network(reorder=0, loss=5)),
    ("network-reorder-delay-0ms", network(reorder=25, delay="0ms")),
    ("network-correlation-with-jitter", network(delay="10ms", jitter="5ms", correlation=25)),
    ("network-correlation-without-jitter", network(delay="10ms", correlation=25)),
    ("network-correlation-0-without-jitter", network(delay="10ms", correlation=0)),
    ("network-correlation-jitter-0ms", network(delay="10ms", jitter="0ms", correlation=25)),
    ("network-loss-correlation", network(loss=5, lossCorrelation=25)),
    ("network-loss-correlation-without-loss", network(delay="10ms", lossCorrelation=25)),
    ("network-reorder-correlation", network(delay="10ms", reorder=5, reorderCorrelation=25)),
    ("network-reorder-correlation-without-reorder", network(delay="10ms", reorderCorrelation=25)),
    ("network-combination", network(delay="100ms", jitter="10ms", loss=1, corrupt=0.5, duplicate=0.1, rate="10mbit")),
    ("network-cidr-/33", network(loss=5, destinationCIDRs=["10.1.0.0/33"])),
    ("network-cidr-ok", network(loss=5, destinationCIDRs=["10.1.0.0/16", "fd00::/8"])),
    ("network-port-0", network(loss=5, ports=[0])),
    ("network-unknown-field", network(loss=5, drop=5)),
    # ---- partition
    ("partition", partition()),
    ("partition-egress", partition(direction="egress")),
    ("partition-sideways", partition(direction="sideways")),
    ("partition-no-cidrs", partition(destinationCIDRs=[])),
    ("partition-cidr-/0", partition(destinationCIDRs=["10.1.0.0/16", "0.0.0.0/0"])),
    ("partition-cidr-/00", partition(destinationCIDRs=["0.0.0.0/00"])),
    ("partition-cidr-ipv6-/0", partition(destinationCIDRs=["::/0"])),
    ("partition-cidr-/33", partition(destinationCIDRs=["10.1.0.0/33"])),
    ("partition-cidr-word", partition(destinationCIDRs=["db"])),
    ("partition-cidr-/32", partition(destinationCIDRs=["10.1.0.7/32"])),
    ("partition-ports", partition(ports=[5432])),
    ("partition-port-0", partition(ports=[0])),
    ("partition-cidr-too-long", partition(destinationCIDRs=["1" * 50])),
    # ---- node-drain
    ("node-drain", node_drain()),
    ("node-drain-selector", node_drain(nodeSelector={"matchLabels": {"pool": "workers"}}, gracePeriodSeconds=5)),
    ("node-drain-block-missing", experiment(action="node-drain")),
    ("node-drain-block-on-pod-kill", experiment(nodeDrain={})),
    ("node-drain-fixed-without-value", node_drain(mode="fixed")),
    ("node-drain-fixed-2", node_drain(mode="fixed", value=2)),
    ("node-drain-one-with-value", node_drain(mode="one", value=2)),
    ("node-drain-all", node_drain(mode="all")),
    ("node-drain-percent-100", node_drain(mode="fixed-percent", value=100)),
    ("node-drain-percent-101", node_drain(mode="fixed-percent", value=101)),
    ("node-drain-value-0", node_drain(mode="fixed", value=0)),
    ("node-drain-mode-unknown", node_drain(mode="half")),
    ("node-drain-grace-0", node_drain(gracePeriodSeconds=0)),
    ("node-drain-interval", node_drain() | {"spec": node_drain()["spec"] | {"interval": "1m"}}),
    (
        "node-drain-selector-bad-expression",
        node_drain(nodeSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
    ),
    ("policy-max-node-percentage-30", policy(maxNodePercentage=30)),
    ("policy-max-node-percentage-0", policy(maxNodePercentage=0)),
    ("policy-max-node-percentage-101", policy(maxNodePercentage=101)),
    ("policy-protected-node-selector", policy(protectedNodeSelector={"matchLabels": {"tier": "payments"}})),
    # ---- stress
    ("stress-cpu", stress(cpu={"workers": 2, "load": 50})),
    ("stress-cpu-defaults", stress(cpu={})),
    ("stress-memory", stress(memory={"size": "256Mi"})),
    ("stress-memory-bytes", stress(memory={"size": "500000000"})),
    ("stress-memory-percent", stress(memory={"size": "50%"})),
    ("stress-memory-100%", stress(memory={"size": "100%"})),
    ("stress-memory-007%", stress(memory={"size": "007%"})),
    ("stress-memory-101%", stress(memory={"size": "101%"})),
    ("stress-memory-0%", stress(memory={"size": "0%"})),
    ("stress-memory-0Mi", stress(memory={"size": "0Mi"})),
    ("stress-memory-000", stress(memory={"size": "000"})),
    ("stress-memory-10Mi", stress(memory={"size": "10Mi"})),
    ("stress-memory-fraction", stress(memory={"size": "0.5Gi"})),
    ("stress-memory-unit-mb", stress(memory={"size": "256MB"})),
    ("stress-memory-no-size", stress(memory={})),
    ("stress-both", stress(cpu={"workers": 1}, memory={"size": "64Mi"})),
    ("stress-nothing", stress()),
    ("stress-workers-0", stress(cpu={"workers": 0})),
    ("stress-workers-65", stress(cpu={"workers": 65})),
    ("stress-load-0", stress(cpu={"load": 0})),
    ("stress-load-101", stress(cpu={"load": 101})),
    ("stress-unknown-field", stress(cpu={"workers": 1}, io={"workers": 1})),
    ("stress-block-missing", experiment(action="stress")),
    ("stress-block-on-pod-kill", experiment(stress={"cpu": {"workers": 1}})),
    ("stress-interval", stress(cpu={}) | {"spec": stress(cpu={})["spec"] | {"interval": "1m"}}),
    # ---- container-restart
    ("container-restart", container_restart()),
    ("container-restart-block-missing", experiment(action="container-restart")),
    ("container-restart-block-on-pod-kill", experiment(containerRestart={"container": "app"})),
    ("container-restart-no-container", experiment(action="container-restart", containerRestart={})),
    ("container-restart-container-empty", container_restart(container="")),
    ("container-restart-container-upper", container_restart(container="App")),
    ("container-restart-container-too-long", container_restart(container="a" * 64)),
    ("container-restart-min-available-1", container_restart(minAvailable=1)),
    ("container-restart-min-available-50%", container_restart(minAvailable="50%")),
    ("container-restart-min-available-101%", container_restart(minAvailable="101%")),
    ("container-restart-min-available-word", container_restart(minAvailable="most")),
    ("container-restart-interval", container_restart() | {"spec": container_restart()["spec"] | {"interval": "1m"}}),
    (
        "container-restart-with-pod-kill-block",
        container_restart() | {"spec": container_restart()["spec"] | {"podKill": {}}},
    ),
    ("container-restart-unknown-field", container_restart(signal="KILL")),
    # ---- schedule and steady state
    ("latency-duration-long", latency() | {"spec": latency()["spec"] | {"duration": "1" * 40 + "s"}}),
    ("pod-kill-interval-0.001s", experiment(interval="0.001s")),
    ("schedule", experiment(schedule={"cron": "0 14 * * TUE"})),
    ("schedule-history-0", experiment(schedule={"cron": "0 14 * * TUE", "historyLimit": 0})),
    ("schedule-history-51", experiment(schedule={"cron": "0 14 * * TUE", "historyLimit": 51})),
    ("steady-state", guarded()),
    ("steady-state-for-10s", guarded(**{"for": "10s"})),
    ("steady-state-for-0-number", guarded(**{"for": 0})),
    ("steady-state-for-5-number", guarded(**{"for": 5})),
    ("steady-state-for-word", guarded(**{"for": "soon"})),
    ("steady-state-operator-unknown", guarded(operator="=~")),
    ("steady-state-name-upper", guarded(name="Errors")),
    ("steady-state-query-empty", guarded(query="")),
    (
        "steady-state-interval-0s",
        experiment(
            steadyState={
                "interval": "0s",
                "prometheus": {"url": "http://prometheus:9090"},
                "conditions": [{"name": "e", "query": "up", "operator": "<", "threshold": 1}],
            }
        ),
    ),
    ("steady-state-no-conditions", experiment(steadyState={"prometheus": {"url": "http://p:9090"}, "conditions": []})),
    (
        "steady-state-no-endpoint",
        experiment(steadyState={"conditions": [{"name": "e", "query": "up", "operator": "<", "threshold": 1}]}),
    ),
    (
        "steady-state-url-scheme",
        experiment(
            steadyState={
                "prometheus": {"url": "prometheus:9090"},
                "conditions": [{"name": "e", "query": "up", "operator": "<", "threshold": 1}],
            }
        ),
    ),
    (
        "steady-state-duplicate-names",
        experiment(
            steadyState={
                "prometheus": {"url": "http://prometheus:9090"},
                "conditions": [
                    {"name": "e", "query": "up", "operator": "<", "threshold": 1},
                    {"name": "e", "query": "up", "operator": ">", "threshold": 0},
                ],
            }
        ),
    ),
    (
        "steady-state-own-endpoints",
        experiment(
            steadyState={
                "conditions": [
                    {"name": "e", "query": "up", "operator": "<", "threshold": 1, "prometheus": {"url": "http://p"}},
                    {"name": "f", "query": "up", "operator": "<", "threshold": 1, "prometheus": {"url": "http://q"}},
                ],
            }
        ),
    ),
    ("steady-state-name-long", guarded(name="a" * 64)),
    # ---- types as YAML writes them
    ("type-loss-string", network(loss="30")),
    ("type-correlation-string", latency(jitter="5ms", correlation="5")),
    ("type-port-string", latency(ports=["80"])),
    ("type-dry-run-string", experiment(dryRun="true")),
    ("type-dry-run-number", experiment(dryRun=1)),
    ("type-value-fraction", target(mode="fixed", value=2.5)),
    ("type-grace-bool", experiment(podKill={"gracePeriodSeconds": True})),
    ("type-loss-bool", network(loss=True)),
    ("type-threshold-string", guarded(threshold="0.5")),
    ("type-delay-number", latency(delay=200)),
    ("type-namespaces-string", target(namespaces="shop")),
    # ---- policies
    ("policy-empty", policy()),
    ("policy-max-percentage-0", policy(maxPercentage=0)),
    ("policy-max-percentage-1", policy(maxPercentage=1)),
    ("policy-max-percentage-101", policy(maxPercentage=101)),
    ("policy-max-concurrent-0", policy(maxConcurrentExperiments=0)),
    ("policy-max-loss-100", policy(maxLoss=100)),
    ("policy-max-loss-101", policy(maxLoss=101)),
    ("policy-max-stress-load-100", policy(maxStressLoad=100)),
    ("policy-max-stress-load-0", policy(maxStressLoad=0)),
    ("policy-max-stress-memory-512Mi", policy(maxStressMemory="512Mi")),
    ("policy-max-stress-memory-50%", policy(maxStressMemory="50%")),
    ("policy-max-stress-memory-150%", policy(maxStressMemory="150%")),
    ("policy-max-stress-memory-word", policy(maxStressMemory="lots")),
    ("policy-max-latency", policy(maxLatency="1s")),
    ("policy-max-latency-word", policy(maxLatency="slow")),
    ("policy-allowed-actions", policy(allowedActions=["pod-kill", "latency"])),
    ("policy-allowed-actions-unknown", policy(allowedActions=["explode"])),
    ("policy-blackout", policy(blackouts=[{"start": "2026-12-20T00:00:00Z", "end": "2026-12-27T00:00:00Z"}])),
    (
        "policy-blackout-reversed",
        policy(blackouts=[{"start": "2026-12-27T00:00:00Z", "end": "2026-12-20T00:00:00Z"}]),
    ),
    ("policy-blackout-empty", policy(blackouts=[{"start": "2026-12-20T00:00:00Z", "end": "2026-12-20T00:00:00Z"}])),
    ("policy-min-approvals-0", policy(approval={"required": True, "minApprovals": 0})),
    ("policy-urls", policy(allowedPrometheusURLs=["http://prometheus.monitoring:9090"])),
    ("policy-urls-ftp", policy(allowedPrometheusURLs=["ftp://prometheus"])),
    ("policy-urls-user-info", policy(allowedPrometheusURLs=["http://user@prometheus"])),
    ("policy-budget", budget()),
    ("policy-budget-sloth", budget(errorQuery=None, totalQuery=None, objective=None, sloth=SLOTH)),
    ("policy-budget-error-without-total", budget(totalQuery=None)),
    ("policy-budget-two-sources", budget(sloth=SLOTH, objective=None)),
    ("policy-budget-no-source", budget(errorQuery=None, totalQuery=None)),
    ("policy-budget-no-objective", budget(objective=None)),
    ("policy-budget-objective-with-sloth", budget(errorQuery=None, totalQuery=None, sloth=SLOTH)),
    ("policy-budget-objective-100", budget(objective=100)),
    ("policy-budget-objective-0", budget(objective=0)),
    ("policy-budget-no-gate", budget(minBudgetRemaining=None)),
    ("policy-budget-burn-rate", budget(minBudgetRemaining=None, maxBurnRate=14.4)),
    ("policy-budget-burn-rate-0", budget(minBudgetRemaining=None, maxBurnRate=0)),
    ("policy-budget-remaining-101", budget(minBudgetRemaining=101)),
    ("policy-budget-ratio", budget(errorQuery=None, totalQuery=None, ratioQuery="x[{{.window}}]")),
    ("policy-budget-query-without-window", budget(errorQuery="sum(rate(errors[5m]))")),
    ("policy-budget-window-0d", budget(window="0d")),
    ("policy-budget-window-4w", budget(window="4w")),
    ("policy-budget-window-month", budget(window="1mo")),
    ("policy-budget-burn-window-0m", budget(burnRateWindow="0m")),
    ("policy-budget-ratio-and-error", budget(ratioQuery="x[{{.window}}]")),
    (
        "policy-budget-pyrra",
        budget(errorQuery=None, totalQuery=None, objective=None, pyrra={"slo": "a", "metric": "m"}),
    ),
    ("policy-budget-name-long", budget(name="a" * 64)),
    ("policy-budget-query-long", budget(ratioQuery="x[{{.window}}]" + " " * 5000, errorQuery=None, totalQuery=None)),
    ("policy-budget-name-upper", budget(name="Checkout")),
    ("policy-quiet-alerts", policy(steadyState={"prometheus": {"url": "http://p:9090"}, "quietAlerts": {}})),
    (
        "policy-quiet-alerts-bad-matcher",
        policy(
            steadyState={"prometheus": {"url": "http://p:9090"}, "quietAlerts": {"matchers": ["severity=critical"]}}
        ),
    ),
    (
        "policy-steady-state-conditions-no-endpoint",
        policy(steadyState={"conditions": [{"name": "e", "query": "up", "operator": "<", "threshold": 1}]}),
    ),
    (
        "policy-steady-state-condition-own-endpoint",
        policy(
            steadyState={
                "conditions": [
                    {"name": "e", "query": "up", "operator": "<", "threshold": 1, "prometheus": {"url": "http://p"}}
                ]
            }
        ),
    ),
    ("policy-steady-state-empty", policy(steadyState={"prometheus": {"url": "http://p:9090"}})),
    ("policy-quiet-alerts-no-endpoint", policy(steadyState={"quietAlerts": {}})),
    (
        "policy-steady-state-interval-0s",
        policy(steadyState={"prometheus": {"url": "http://p:9090"}, "quietAlerts": {}, "interval": "0s"}),
    ),
]


def cases() -> list[Case]:
    table = []
    for number, (name, body) in enumerate(_TABLE):
        body = copy.deepcopy(body)
        body["metadata"] = {"name": f"case-{number:03d}"}
        table.append(Case(name, body))
    assert len({case.id for case in table}) == len(table), "case ids must be unique"
    return table


# What CEL cannot say (api/rules.py lists it): the API server accepts these, `validate` and the operator
# refuse them. Kept apart, so that a rule that moves into CEL moves its case into the table above.
_PYTHON_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("cron-syntax", experiment(schedule={"cron": "every tuesday"}), "5-field cron"),
    ("time-zone", experiment(schedule={"cron": "0 14 * * TUE", "timeZone": "Mars/Olympus"}), "IANA time zone"),
    (
        "url-prefix-dot-segment",
        policy(allowedPrometheusURLs=["http://prometheus:9090/a/../b"]),
        "cannot be matched safely",
    ),
    (
        "sloth-window-not-recorded",
        budget(errorQuery=None, totalQuery=None, objective=None, sloth=SLOTH, burnRateWindow="7m"),
        "Sloth records no",
    ),
    (
        "names-across-conditions-and-budgets",
        policy(
            steadyState={
                "prometheus": {"url": "http://p:9090"},
                "conditions": [{"name": "checkout", "query": "up", "operator": "<", "threshold": 1}],
                "errorBudgets": [budget()["spec"]["steadyState"]["errorBudgets"][0]],
            }
        ),
        "names must be unique",
    ),
]


def python_only_cases() -> list[tuple[Case, str]]:
    """(case, what validate's refusal says)."""
    return [
        (Case(name, body | {"metadata": {"name": f"only-{number:03d}"}}), says)
        for number, (name, body, says) in enumerate(_PYTHON_ONLY)
    ]
