"""Blast-radius policy, pure: which policies apply, their strictest combination, and refusals.

Every ChaosPolicy whose namespaceSelector matches one of an experiment's namespaces (or that has
no selector) applies, and for every setting the strictest value wins. Some exclusions hold with
no policy at all. Every refusal is a `Refusal` value naming the rule, the field and what would
satisfy it, so the same text reaches `chaosguard validate`, the admission webhook, status
conditions and Events. The same functions serve offline checks (namespace labels unknown:
policies with a selector are assumed to apply) and the operator (labels known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_address, ip_network

from chaosguard.api.durations import format_seconds, to_seconds
from chaosguard.api.models import (
    OPT_IN_LABEL,
    OPT_IN_VALUE,
    Action,
    ApprovalPolicy,
    Blackout,
    ChaosExperimentSpec,
    ChaosPolicy,
    LabelSelector,
    TargetMode,
)
from chaosguard.decisions.windows import WindowGroup, active_blackout, allowed_until, next_allowed_start

BUILTIN_EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
PSA_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


@dataclass(frozen=True)
class Refusal:
    """Why something may not happen: the rule, the field it concerns, and what would satisfy it."""

    rule: str
    message: str
    field: str = ""

    def __str__(self) -> str:
        return f"REFUSED {self.rule}: {self.message}"

    @property
    def reason(self) -> str:
        """The rule as a CamelCase reason, for Events and status conditions (max-duration -> MaxDuration)."""
        return "".join(part.capitalize() for part in self.rule.split("-"))


@dataclass(frozen=True)
class EffectivePolicy:
    """The strictest combination of every policy that applies."""

    sources: tuple[str, ...] = ()
    excluded_namespaces: Mapping[str, str] = field(default_factory=dict)  # namespace -> where it comes from
    require_opt_in: tuple[str, ...] = ()  # names of policies requiring it
    protected_selectors: tuple[tuple[str, LabelSelector], ...] = ()
    max_percentage: tuple[int, str] = (100, "")
    max_concurrent: tuple[int, str] | None = None
    max_duration: tuple[float, str] | None = None
    max_latency: tuple[float, str] | None = None
    max_guard_interval: tuple[float, str] | None = None
    allowed_actions: tuple[frozenset[Action], str] | None = None
    window_groups: tuple[WindowGroup, ...] = ()
    blackouts: tuple[tuple[Blackout, str], ...] = ()
    approvals: tuple[tuple[ApprovalPolicy, str], ...] = ()
    require_steady_state: tuple[str, ...] = ()
    cross_namespace_allowed: bool = False
    suspended_by: tuple[str, ...] = ()
    # Limits of the network faults.
    max_loss: tuple[float, str] | None = None
    operator_destinations_allowed: bool = False
    # (ChaosPolicy/name, its allowedPrometheusURLs) of each policy that sets them: every one must allow a URL.
    allowed_prometheus_urls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Limits of node-drain (judged by decisions.nodes).
    max_node_percentage: tuple[int, str] | None = None
    protected_node_selectors: tuple[tuple[str, LabelSelector], ...] = ()

    def protection_of(self, labels: Mapping[str, str]) -> str | None:
        """The policy that protects a pod with these labels, if any."""
        for source, selector in self.protected_selectors:
            if selector.matches(labels):
                return source
        return None

    def blackout_list(self) -> list[Blackout]:
        return [blackout for blackout, _ in self.blackouts]


def applicable_policies(
    policies: Iterable[ChaosPolicy],
    namespaces: Iterable[str],
    namespace_labels: Mapping[str, Mapping[str, str]] | None,
) -> list[ChaosPolicy]:
    """Policies that apply to any of these namespaces. Labels unknown (None): selectors match."""
    chosen = []
    wanted = list(namespaces)
    for policy in policies:
        selector = policy.spec.namespace_selector
        if (
            selector is None
            or namespace_labels is None
            or any(selector.matches(dict(namespace_labels.get(name, {}))) for name in wanted)
        ):
            chosen.append(policy)
    return sorted(chosen, key=lambda policy: policy.metadata.name)


def _tightest(current: tuple[float, str] | None, value: float | None, source: str) -> tuple[float, str] | None:
    if value is None:
        return current
    if current is None or value < current[0]:
        return (value, source)
    return current


def combine(policies: Iterable[ChaosPolicy], operator_namespace: str | None = None) -> EffectivePolicy:
    """Folds policies into one, the strictest value of each setting winning."""
    excluded: dict[str, str] = {name: "built-in" for name in BUILTIN_EXCLUDED_NAMESPACES}
    if operator_namespace:
        excluded[operator_namespace] = "built-in (the operator's own namespace)"
    sources: list[str] = []
    opt_in: list[str] = []
    protected: list[tuple[str, LabelSelector]] = []
    max_percentage: tuple[int, str] = (100, "")
    max_concurrent: tuple[float, str] | None = None
    max_duration: tuple[float, str] | None = None
    max_latency: tuple[float, str] | None = None
    max_guard: tuple[float, str] | None = None
    allowed: tuple[frozenset[Action], str] | None = None
    groups: list[WindowGroup] = []
    blackouts: list[tuple[Blackout, str]] = []
    approvals: list[tuple[ApprovalPolicy, str]] = []
    steady: list[str] = []
    cross_namespace = True
    suspended: list[str] = []
    max_loss: tuple[float, str] | None = None
    operator_destinations = True
    prometheus_urls: list[tuple[str, tuple[str, ...]]] = []
    max_node_percentage: tuple[float, str] | None = None
    protected_nodes: list[tuple[str, LabelSelector]] = []
    any_policy = False

    for policy in policies:
        any_policy = True
        source = f"ChaosPolicy/{policy.metadata.name}"
        spec = policy.spec
        sources.append(source)
        for namespace in spec.excluded_namespaces:
            excluded.setdefault(namespace, source)
        if spec.require_namespace_opt_in:
            opt_in.append(source)
        if spec.protected_selector is not None:
            protected.append((source, spec.protected_selector))
        if spec.max_percentage < max_percentage[0]:
            max_percentage = (spec.max_percentage, source)
        max_concurrent = _tightest(max_concurrent, spec.max_concurrent_experiments, source)
        max_duration = _tightest(max_duration, _seconds(spec.max_duration), source)
        max_latency = _tightest(max_latency, _seconds(spec.max_latency), source)
        max_guard = _tightest(max_guard, _seconds(spec.max_guard_interval), source)
        if spec.allowed_actions is not None:
            actions = frozenset(spec.allowed_actions)
            allowed = (actions, source) if allowed is None else (allowed[0] & actions, f"{allowed[1]}, {source}")
        if spec.windows:
            groups.append(WindowGroup(source, tuple(spec.windows)))
        blackouts.extend((blackout, source) for blackout in spec.blackouts)
        if spec.approval is not None and spec.approval.required:
            approvals.append((spec.approval, source))
        if spec.require_steady_state:
            steady.append(source)
        cross_namespace = cross_namespace and spec.allow_cross_namespace
        if spec.suspend:
            suspended.append(source)
        max_loss = _tightest(max_loss, spec.max_loss, source)
        operator_destinations = operator_destinations and spec.allow_operator_namespace_destinations
        if spec.allowed_prometheus_urls is not None:
            prometheus_urls.append((source, tuple(spec.allowed_prometheus_urls)))
        max_node_percentage = _tightest(max_node_percentage, spec.max_node_percentage, source)
        if spec.protected_node_selector is not None:
            protected_nodes.append((source, spec.protected_node_selector))

    return EffectivePolicy(
        sources=tuple(sources),
        excluded_namespaces=excluded,
        require_opt_in=tuple(opt_in),
        protected_selectors=tuple(protected),
        max_percentage=max_percentage,
        max_concurrent=None if max_concurrent is None else (int(max_concurrent[0]), max_concurrent[1]),
        max_duration=max_duration,
        max_latency=max_latency,
        max_guard_interval=max_guard,
        allowed_actions=allowed,
        window_groups=tuple(groups),
        blackouts=tuple(blackouts),
        approvals=tuple(approvals),
        require_steady_state=tuple(steady),
        cross_namespace_allowed=cross_namespace and any_policy,
        suspended_by=tuple(suspended),
        max_loss=max_loss,
        operator_destinations_allowed=operator_destinations and any_policy,
        allowed_prometheus_urls=tuple(prometheus_urls),
        max_node_percentage=None
        if max_node_percentage is None
        else (int(max_node_percentage[0]), max_node_percentage[1]),
        protected_node_selectors=tuple(protected_nodes),
    )


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else to_seconds(duration)


def target_namespaces(spec: ChaosExperimentSpec, own_namespace: str) -> list[str]:
    return list(dict.fromkeys(spec.target.namespaces or [own_namespace]))


def namespace_refusal(namespace: str, effective: EffectivePolicy, labels: Mapping[str, str] | None) -> Refusal | None:
    """Whether a namespace may be targeted at all. Labels None: opt-in cannot be judged (offline)."""
    source = effective.excluded_namespaces.get(namespace)
    if source is not None:
        rule = "builtin-excluded-namespace" if source.startswith("built-in") else "excluded-namespace"
        return Refusal(
            rule,
            f"namespace {namespace!r} is excluded from chaos ({source}); target another namespace",
            "spec.target.namespaces",
        )
    if effective.require_opt_in and labels is not None and labels.get(OPT_IN_LABEL) != OPT_IN_VALUE:
        return Refusal(
            "namespace-opt-in",
            f"namespace {namespace!r} has not opted in to chaos ({', '.join(effective.require_opt_in)} requires it); "
            f"label it with `kubectl label namespace {namespace} {OPT_IN_LABEL}={OPT_IN_VALUE}`",
            "spec.target.namespaces",
        )
    return None


def static_refusals(
    spec: ChaosExperimentSpec,
    own_namespace: str,
    effective: EffectivePolicy,
    namespace_labels: Mapping[str, Mapping[str, str]] | None,
) -> list[Refusal]:
    """Every rule that can be judged from the spec and policy alone (no pods, no clock)."""
    refusals: list[Refusal] = []
    namespaces = target_namespaces(spec, own_namespace)
    for namespace in namespaces:
        labels = None if namespace_labels is None else namespace_labels.get(namespace, {})
        refusal = namespace_refusal(namespace, effective, labels)
        if refusal is not None:
            refusals.append(refusal)
    foreign = [name for name in namespaces if name != own_namespace]
    if foreign and not effective.cross_namespace_allowed:
        refusals.append(
            Refusal(
                "cross-namespace",
                f"the experiment lives in {own_namespace!r} but targets {', '.join(repr(n) for n in foreign)}; "
                "create it in the target namespace, or set allowCrossNamespace: true in every applicable ChaosPolicy",
                "spec.target.namespaces",
            )
        )
    cut_field = full_cut_field(spec)
    if effective.allowed_actions is not None:
        actions, source = effective.allowed_actions
        allowed = ", ".join(sorted(action.value for action in actions)) or "none"
        if spec.action not in actions:
            refusals.append(
                Refusal(
                    "allowed-actions",
                    f"action {spec.action.value!r} is not allowed by {source} (allowed: {allowed}); "
                    "use an allowed action",
                    "spec.action",
                )
            )
        elif cut_field is not None and Action.PARTITION not in actions:
            refusals.append(
                Refusal(
                    "allowed-actions",
                    f"{cut_field} 100% drops every packet, which is a partition, and partition is not allowed by "
                    f"{source} (allowed: {allowed}); set {cut_field} below 100, or allow "
                    "partition in every applicable ChaosPolicy",
                    cut_field,
                )
            )
    if effective.max_duration is not None and spec.duration_seconds > effective.max_duration[0]:
        limit = format_seconds(effective.max_duration[0])
        refusals.append(
            Refusal(
                "max-duration",
                f"duration {spec.duration} is longer than the {limit} allowed by {effective.max_duration[1]}; "
                f"set spec.duration to {limit} or less",
                "spec.duration",
            )
        )
    latency_cap = effective.max_latency
    delay, delay_field = _delay_of(spec)
    if delay is not None and latency_cap is not None and to_seconds(delay) > latency_cap[0]:
        limit = format_seconds(latency_cap[0])
        refusals.append(
            Refusal(
                "max-latency",
                f"delay {delay} is more than the {limit} allowed by {latency_cap[1]}; "
                f"set {delay_field} to {limit} or less",
                delay_field,
            )
        )
    loss_cap = effective.max_loss
    for name in ("loss", "corrupt"):
        value = getattr(spec.network, name) if spec.network is not None else None
        if value is not None and loss_cap is not None and value > loss_cap[0]:
            refusals.append(
                Refusal(
                    "max-loss",
                    f"{name} {value:g}% is more than the {loss_cap[0]:g}% allowed by {loss_cap[1]} (maxLoss caps "
                    f"loss and corrupt); set spec.network.{name} to {loss_cap[0]:g} or less",
                    f"spec.network.{name}",
                )
            )
    if effective.require_steady_state and spec.steady_state is None:
        refusals.append(
            Refusal(
                "require-steady-state",
                f"{', '.join(effective.require_steady_state)} requires an SLI guard; add spec.steadyState "
                "with at least one condition",
                "spec.steadyState",
            )
        )
    guard_cap = effective.max_guard_interval
    if (
        spec.steady_state is not None
        and guard_cap is not None
        and to_seconds(spec.steady_state.interval) > guard_cap[0]
    ):
        limit = format_seconds(guard_cap[0])
        refusals.append(
            Refusal(
                "max-guard-interval",
                f"steadyState.interval {spec.steady_state.interval} is longer than the {limit} allowed by "
                f"{guard_cap[1]}; set it to {limit} or less",
                "spec.steadyState.interval",
            )
        )
    facts = spec.action.facts
    if facts.forbidden_by_pod_security and namespace_labels is not None:
        capabilities = " and ".join(facts.capabilities) or "privileges"
        for namespace in namespaces:
            level = namespace_labels.get(namespace, {}).get(PSA_ENFORCE_LABEL, "privileged")
            if level in facts.forbidden_by_pod_security:
                refusals.append(
                    Refusal(
                        "pod-security",
                        f"namespace {namespace!r} enforces Pod Security level {level!r}, which forbids the "
                        f"{capabilities} capability the {spec.action.value} injector needs; target a namespace at "
                        "level privileged, or use pod-kill",
                        "spec.target.namespaces",
                    )
                )
    refusals.extend(_cap_on_face(spec, effective))
    refusals.extend(node_drain_refusals_on_face(spec, effective))
    if effective.suspended_by:
        refusals.append(suspension_refusal(effective))
    return refusals


def full_cut_field(spec: ChaosExperimentSpec) -> str | None:
    """The field of a network fault that drops every packet it reaches (loss or corrupt 100: a
    corrupted packet fails its checksum and is dropped too), or None. Such a fault is a partition
    and is judged as one: it needs partition allowed, and never reaches a node or the API server."""
    if spec.network is None:
        return None
    for name in ("loss", "corrupt"):
        value = getattr(spec.network, name)
        if value is not None and value >= 100:
            return f"spec.network.{name}"
    return None


def _delay_of(spec: ChaosExperimentSpec) -> tuple[str | None, str]:
    """The delay a spec adds, and its field (latency.delay or network.delay)."""
    if spec.latency is not None:
        return spec.latency.delay, "spec.latency.delay"
    if spec.network is not None:
        return spec.network.delay, "spec.network.delay"
    return None, ""


def _cap_on_face(spec: ChaosExperimentSpec, effective: EffectivePolicy) -> list[Refusal]:
    cap, source = effective.max_percentage
    if cap >= 100:
        return []
    target = spec.target
    if target.mode is TargetMode.FIXED_PERCENT and target.value is not None and target.value > cap:
        return [
            Refusal(
                "max-percentage",
                f"target.value {target.value}% is above the {cap}% of each workload allowed by {source}; "
                f"set target.value to {cap} or less",
                "spec.target.value",
            )
        ]
    if target.mode is TargetMode.ALL:
        return [
            Refusal(
                "max-percentage",
                f"mode 'all' would take down every pod, but {source} allows at most {cap}% of each workload; "
                f"use mode fixed-percent with value {cap} or less",
                "spec.target.mode",
            )
        ]
    return []


def suspension_refusal(effective: EffectivePolicy) -> Refusal:
    return Refusal(
        "suspended",
        f"chaos is suspended by {', '.join(effective.suspended_by)}; "
        "nothing starts until spec.suspend is set back to false",
        "ChaosPolicy.spec.suspend",
    )


def concurrency_refusal(effective: EffectivePolicy, running_elsewhere: int) -> Refusal | None:
    if effective.max_concurrent is None:
        return None
    limit, source = effective.max_concurrent
    if running_elsewhere < limit:
        return None
    return Refusal(
        "max-concurrent-experiments",
        f"{running_elsewhere} experiments are already running and {source} allows {limit} at once; "
        "wait for one to finish",
        "ChaosPolicy.spec.maxConcurrentExperiments",
    )


def time_refusal(effective: EffectivePolicy, now: datetime) -> Refusal | None:
    """Blackouts and windows at `now`; the message says when running becomes possible."""
    blackout_pairs = list(effective.blackouts)
    for blackout, source in blackout_pairs:
        if blackout.start <= now < blackout.end:
            why = f" ({blackout.reason})" if blackout.reason else ""
            return Refusal(
                "blackout",
                f"{now.isoformat()} is inside the blackout{why} from {blackout.start.isoformat()} "
                f"to {blackout.end.isoformat()} set by {source}; run after it ends",
                "ChaosPolicy.spec.blackouts",
            )
    groups = list(effective.window_groups)
    closed = [group for group in groups if not group.is_open(now)]
    if closed:
        opens = next_allowed_start(groups, effective.blackout_list(), now)
        when = f"the next allowed start is {opens.isoformat()}" if opens else "no allowed start within a year"
        names = "; ".join(f"{group.policy} allows {group.describe()}" for group in closed)
        return Refusal(
            "window",
            f"{now.isoformat()} is outside the allowed windows ({names}); {when}",
            "ChaosPolicy.spec.windows",
        )
    return None


def run_may_continue_until(effective: EffectivePolicy, now: datetime) -> datetime | None:
    """When the time rules will stop a run that is allowed now (window close or blackout start)."""
    return allowed_until(list(effective.window_groups), effective.blackout_list(), now)


def active_blackout_of(effective: EffectivePolicy, now: datetime) -> Blackout | None:
    return active_blackout(effective.blackout_list(), now)


@dataclass(frozen=True)
class GuardedAddress:
    """An address a network fault must not name as its destination, and whose it is."""

    address: str
    owner: str  # e.g. "node worker-1", "the API server (Service default/kubernetes)"
    operator: bool = False  # the operator's own pods and Services (a policy may allow them)


def destination_refusals(
    spec: ChaosExperimentSpec, guarded: Iterable[GuardedAddress], effective: EffectivePolicy
) -> list[Refusal]:
    """Whether the destinationCIDRs of a network fault or partition reach addresses they must not:
    a partition never cuts a pod off from a node (its kubelet) or the API server, and neither kind
    of fault targets the operator's own pods or Services unless every applicable policy allows it.
    A network fault that drops every packet (full_cut_field) is judged as a partition; with no CIDRs
    it reaches every address. (Any other network fault with no CIDRs names none: not refused here.)"""
    cut_field = full_cut_field(spec)
    cuts = spec.partition is not None or cut_field is not None
    if spec.partition is not None:
        cidrs, block = spec.partition.destination_cidrs, "spec.partition"
    elif spec.network is not None:
        cidrs, block = spec.network.destination_cidrs, "spec.network"
    else:
        return []
    every = cut_field is not None and not cidrs
    if every:
        cidrs = ["0.0.0.0/0", "::/0"]
    refusals = []
    addresses = [(ip_address(item.address), item) for item in guarded]
    for index, cidr in enumerate(cidrs):
        network = ip_network(cidr, strict=False)
        field = f"{block}.destinationCIDRs[{index}]"
        named = f"{field} {cidr}"
        if every:
            field = cut_field or field
            named = f"{field} 100% with no {block}.destinationCIDRs reaches every address, and"
        for address, item in addresses:
            if address.version != network.version or address not in network:
                continue
            if item.operator and not effective.operator_destinations_allowed:
                refusals.append(
                    Refusal(
                        "operator-namespace-destination",
                        f"{named} contains {address}, of {item.owner}: chaosguard's own namespace is never "
                        "a destination of a network fault; narrow the CIDR to leave it out, or set "
                        "allowOperatorNamespaceDestinations: true in every applicable ChaosPolicy",
                        field,
                    )
                )
                break
            if not item.operator and cuts:
                fix = (
                    f"set {field} below 100, or set spec.network.destinationCIDRs to the addresses to cut off"
                    if every
                    else "narrow the CIDR to leave it out"
                )
                kind = "a partition" if spec.partition is not None else f"a {field} of 100% (a partition)"
                refusals.append(
                    Refusal(
                        "partition-protected-address",
                        f"{named} contains {address}, of {item.owner}: {kind} never cuts pods off "
                        f"from their node (kubelet probes) or the API server; {fix}",
                        field,
                    )
                )
                break
    return refusals


CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def node_drain_refusals_on_face(spec: ChaosExperimentSpec, effective: EffectivePolicy) -> list[Refusal]:
    """node-drain's rules that the spec alone breaks (the nodes themselves are judged live, decisions.nodes):
    a nodeSelector that asks for control-plane nodes, and a share of nodes above maxNodePercentage."""
    drain = spec.node_drain
    if spec.action is not Action.NODE_DRAIN or drain is None:
        return []
    refusals: list[Refusal] = []
    selector = drain.node_selector
    asks_control_plane = CONTROL_PLANE_LABEL in selector.match_labels or any(
        requirement.key == CONTROL_PLANE_LABEL and requirement.operator.value in ("In", "Exists")
        for requirement in selector.match_expressions
    )
    if asks_control_plane:
        refusals.append(
            Refusal(
                "control-plane-node",
                f"spec.nodeDrain.nodeSelector asks for control-plane nodes ({CONTROL_PLANE_LABEL}), which are never "
                "drained; select worker nodes",
                "spec.nodeDrain.nodeSelector",
            )
        )
    cap = effective.max_node_percentage
    if cap is not None and drain.mode is TargetMode.FIXED_PERCENT and (drain.value or 0) > cap[0]:
        refusals.append(
            Refusal(
                "max-node-percentage",
                f"spec.nodeDrain.value {drain.value}% is above the {cap[0]}% of the cluster's nodes that may be "
                f"cordoned at once ({cap[1]}); set spec.nodeDrain.value to {cap[0]} or less",
                "spec.nodeDrain.value",
            )
        )
    if cap is not None and drain.mode is TargetMode.ALL and cap[0] < 100:
        refusals.append(
            Refusal(
                "max-node-percentage",
                f"mode 'all' would cordon every node the selector picks, but {cap[1]} allows at most {cap[0]}% of "
                f"the cluster's nodes; use mode fixed-percent with value {cap[0]} or less, or mode one",
                "spec.nodeDrain.mode",
            )
        )
    return refusals
