"""The table of actions: every fact about a fault kind that more than one part of chaosguard reads.

One row per `Action`: the spec block that configures it, the permission its author must hold in every
target namespace (checked with a SubjectAccessReview at admission and before each run), the Linux
capabilities its carrier needs and the Pod Security levels that therefore forbid it, whether it
repeats on `spec.interval` or happens once per run, whether its destinations are checked against the
nodes, the API server and the operator's own pods, the kind its status records carry ("Latency",
"Network", ...), its Event reasons, and how an injector failure of its kind is explained.

The model (`Action.is_network_fault`), admission (`admission.judge`), the policy (`decisions.policy`),
`chaosguard validate`/`plan`, the engine and the report read it from here. An `Action` without a row is
an error when this module is imported, never a silent default: adding a kind means adding its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    POD_KILL = "pod-kill"
    LATENCY = "latency"
    NETWORK = "network"
    PARTITION = "partition"
    NODE_DRAIN = "node-drain"
    STRESS = "stress"
    CONTAINER_RESTART = "container-restart"

    @property
    def facts(self) -> ActionFacts:
        return facts_of(self)

    @property
    def is_network_fault(self) -> bool:
        """Carried by the network injector (an ephemeral container with NET_ADMIN in the pod)."""
        return facts_of(self).injector

    @property
    def repeats(self) -> bool:
        """Acts again every spec.interval until the run's deadline (else once per run)."""
        return facts_of(self).repeats


@dataclass(frozen=True)
class Permission:
    """What the author must be allowed in every target namespace (a SubjectAccessReview's attributes)."""

    verb: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {what}"


@dataclass(frozen=True)
class EventReasons:
    skipped: str  # a target refused right before acting (live policy, cap, gone)
    would: str  # dry run
    done: str  # the fault is in (or the pod was killed)
    failed: str  # the fault could not be put in, or its carrier failed


@dataclass(frozen=True)
class ActionFacts:
    action: str  # an Action's value (a test may register a kind of its own under any other name)
    spec_block: str  # the field of ChaosExperimentSpec that configures it (camelCase, as in YAML)
    spec_block_required: bool  # the block must be set with this action (else its defaults apply)
    permission: Permission
    record_kind: str  # the kind of its status records and the stem of its Event reasons
    counts: str  # what its status counter counts: "kills" or "injections"
    reasons: EventReasons
    capabilities: tuple[str, ...] = ()  # added to its carrier container
    forbidden_by_pod_security: tuple[str, ...] = ()  # enforce levels under which the carrier cannot run
    repeats: bool = False  # a round every spec.interval until the deadline
    destination_checks: bool = False  # spec.<block>.destinationCIDRs checked against guarded addresses
    injector: bool = False  # carried by the network injector (runtime/injector/netem.sh)
    # Why an injector of this kind exits 4 with "qdisc kind is unknown": the kernel modules it needs.
    missing_kernel_module: str = ""
    # What the author must also be allowed cluster-wide (a SubjectAccessReview without a namespace), for
    # kinds that act on cluster-scoped objects; `permission` is still checked in every target namespace.
    cluster_permissions: tuple[Permission, ...] = ()
    # Its faults sit on cluster-scoped objects (nodes), not in pods of the target namespaces: they are
    # taken out wherever the kind's own mark says chaosguard put them (see runtime.faults.nodedrain).
    cluster_scoped: bool = False

    def describe_permission(self) -> str:
        cluster_wide = "".join(f", {permission} (cluster-wide)" for permission in self.cluster_permissions)
        return f"{self.permission}{cluster_wide}"


def _injector_reasons(kind: str) -> EventReasons:
    return EventReasons(skipped=f"{kind}Skipped", would="WouldInject", done=f"{kind}Injected", failed=f"{kind}Failed")


_NET_ADMIN = ("NET_ADMIN",)
_NO_NET_ADMIN = ("baseline", "restricted")  # Pod Security levels that refuse NET_ADMIN
_EPHEMERAL = Permission("patch", "pods", "ephemeralcontainers")
_NETEM = "the node's kernel has no sch_netem, so no {kind} fault can be added there"

ACTIONS: dict[str, ActionFacts] = {
    Action.POD_KILL: ActionFacts(
        action=Action.POD_KILL,
        spec_block="podKill",
        spec_block_required=False,
        permission=Permission("delete", "pods"),
        record_kind="Kill",
        counts="kills",
        reasons=EventReasons(skipped="KillSkipped", would="WouldKill", done="PodKilled", failed="PodFailed"),
        repeats=True,
    ),
    Action.LATENCY: ActionFacts(
        action=Action.LATENCY,
        spec_block="latency",
        spec_block_required=True,
        permission=_EPHEMERAL,
        record_kind="Latency",
        counts="injections",
        reasons=_injector_reasons("Latency"),
        capabilities=_NET_ADMIN,
        forbidden_by_pod_security=_NO_NET_ADMIN,
        injector=True,
        missing_kernel_module=_NETEM.format(kind="latency"),
    ),
    Action.NETWORK: ActionFacts(
        action=Action.NETWORK,
        spec_block="network",
        spec_block_required=True,
        permission=_EPHEMERAL,
        record_kind="Network",
        counts="injections",
        reasons=_injector_reasons("Network"),
        capabilities=_NET_ADMIN,
        forbidden_by_pod_security=_NO_NET_ADMIN,
        destination_checks=True,
        injector=True,
        missing_kernel_module=_NETEM.format(kind="network"),
    ),
    Action.PARTITION: ActionFacts(
        action=Action.PARTITION,
        spec_block="partition",
        spec_block_required=True,
        permission=_EPHEMERAL,
        record_kind="Partition",
        counts="injections",
        reasons=_injector_reasons("Partition"),
        capabilities=_NET_ADMIN,
        forbidden_by_pod_security=_NO_NET_ADMIN,
        destination_checks=True,
        injector=True,
        missing_kernel_module=(
            "the node's kernel lacks a tc module a partition needs (sch_prio, sch_ingress, cls_u32, act_gact), "
            "so nothing can be dropped there"
        ),
    ),
    Action.NODE_DRAIN: ActionFacts(
        action=Action.NODE_DRAIN,
        spec_block="nodeDrain",
        spec_block_required=True,
        # Every pod it evicts is in a target namespace (the node's other pods stay where they are).
        permission=Permission("create", "pods", "eviction"),
        cluster_permissions=(Permission("patch", "nodes"),),
        record_kind="Drain",
        counts="kills",
        reasons=EventReasons(skipped="DrainSkipped", would="WouldDrain", done="NodeDrained", failed="DrainFailed"),
        cluster_scoped=True,
    ),
    # Held by stress-ng in an ephemeral container of the target pod, as uid 65534 with no capability
    # at all (Pod Security restricted admits it). Adding an ephemeral container is the author's own
    # right to run a process in the pod, the same bar as the network kinds.
    Action.STRESS: ActionFacts(
        action=Action.STRESS,
        spec_block="stress",
        spec_block_required=True,
        permission=_EPHEMERAL,
        record_kind="Stress",
        counts="injections",
        reasons=_injector_reasons("Stress"),
    ),
    # An ephemeral container (the signaller) in the target's process namespace sends its PID 1 SIGTERM,
    # as the target container's own uid: no capability, so Pod Security restricted admits it wherever
    # the target's uid is in the pod spec (else it runs as root with KILL, which baseline allows). The
    # author's permission is the one its mechanism uses: `kubectl debug --target` could do the same.
    Action.CONTAINER_RESTART: ActionFacts(
        action=Action.CONTAINER_RESTART,
        spec_block="containerRestart",
        spec_block_required=True,
        permission=_EPHEMERAL,
        record_kind="ContainerRestart",
        counts="injections",  # signallers put into pods (injections_total)
        reasons=EventReasons(
            skipped="ContainerRestartSkipped",
            would="WouldRestartContainer",
            done="ContainerRestartSignalled",
            failed="ContainerRestartFailed",
        ),
    ),
}


class UnknownAction(LookupError):
    """An action with no row in the table: a programming error, never defaulted."""


def facts_of(action: str) -> ActionFacts:
    facts = ACTIONS.get(str(action))
    if facts is None:
        raise UnknownAction(f"action {str(action)!r} has no row in chaosguard.api.actions.ACTIONS")
    return facts


def by_record_kind(kind: str) -> ActionFacts | None:
    """The row whose status records carry `kind` ("Latency", "Partition", ...), or None."""
    return next((facts for facts in ACTIONS.values() if facts.record_kind == kind), None)


def register(facts: ActionFacts) -> None:
    """Adds a row for a kind that is no Action member (a test registers a kind of its own this way)."""
    if facts.action in ACTIONS:
        raise ValueError(f"action {facts.action!r} already has a row")
    ACTIONS[facts.action] = facts


def unregister(action: str) -> None:
    if action in {member.value for member in Action}:
        raise ValueError(f"the row of {action!r} is part of the API and stays")
    ACTIONS.pop(action, None)


def _check_table() -> None:
    missing = [action.value for action in Action if action not in ACTIONS]
    if missing:
        raise UnknownAction(f"actions without a row in the table of actions: {', '.join(missing)}")
    for action, facts in ACTIONS.items():
        if facts.action != action:
            raise UnknownAction(f"the row of {action} describes {facts.action}")
    kinds = [facts.record_kind for facts in ACTIONS.values()]
    if len(set(kinds)) != len(kinds):
        raise UnknownAction(f"record kinds must be unique: {kinds}")


_check_table()
