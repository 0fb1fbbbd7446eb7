"""The public API of chaosguard (group chaosguard.dev, version v1alpha1) as pydantic models.

These models are the single source of truth: the CRDs in crds/ are generated from them
(`chaosguard crds`), the operator validates every object with them, and `chaosguard validate`
uses them offline. Field names and shapes follow DESIGN.md and are a public contract. Every
field carries a description because it becomes `kubectl explain` text. Rules that span several
fields are written once, as `validation_rules` (api/rules.py): each renders the CEL rule in the CRD
(so the API server refuses it even with the operator down) and the Python check here, with one
message. Pydantic validators remain only for what CEL cannot say (cron, time zones, URL prefixes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from chaosguard.api import rules
from chaosguard.api.actions import ACTIONS
from chaosguard.api.actions import Action as Action  # re-exported: the model's field type, and the public API
from chaosguard.api.durations import DURATION_PATTERN, to_seconds
from chaosguard.api.urls import url_parts

GROUP = "chaosguard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/rollback"
OPT_IN_LABEL = f"{GROUP}/chaos"
OPT_IN_VALUE = "allowed"
ABORT_ANNOTATION = f"{GROUP}/abort"  # set by `chaosguard abort`: its value is the reason


Duration = Annotated[
    str,
    # maxLength bounds the cost the API server estimates for the CEL rules that read durations
    Field(pattern=DURATION_PATTERN, max_length=32, json_schema_extra={"x-chaosguard-duration": True}),
]


def _check_cel(rules: list[dict[str, str]]) -> dict[str, Any]:
    return {"x-kubernetes-validations": rules}


def _rules_into_schema(schema: dict[str, Any], model: type[Any]) -> None:
    """Puts a model's `validation_rules` into its JSON Schema as CEL, for the CRD."""
    model_rules: tuple[rules.Rule, ...] = getattr(model, "validation_rules", ())
    if model_rules:
        schema["x-kubernetes-validations"] = rules.rendered(model_rules)


class ApiModel(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields refused, not silently dropped, and
    JSON types as the API server checks them.

    `validation_rules` (api/rules.py) are the model's cross-field rules: the CRD carries them as CEL
    and this base class checks them in Python, with the same messages."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_rules_into_schema,
        # The API server takes no "30" for a number nor 1 for true; neither does `validate`. Enum and time
        # fields opt out with `strict=False` (LAX), as strict pydantic wants enum instances, not YAML text.
        strict=True,
    )
    validation_rules: ClassVar[tuple[rules.Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> ApiModel:
        problems = rules.broken(type(self).validation_rules, rules.served_view(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(BaseModel):
    """Base for status models: written by the operator, tolerant of fields added by newer versions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- selectors


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    key: str = Field(min_length=1, description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(strict=False, description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn (must be non-empty); empty for Exists and DoesNotExist.",
    )

    validation_rules = rules.SELECTOR_REQUIREMENT


class LabelSelector(ApiModel):
    """A Kubernetes metav1.LabelSelector. An empty selector matches everything."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based requirements; all must hold."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, wanted in self.match_labels.items():
            if labels.get(key) != wanted:
                return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator is SelectorOperator.IN and value not in requirement.values:
                return False
            if requirement.operator is SelectorOperator.NOT_IN and present and value in requirement.values:
                return False
            if requirement.operator is SelectorOperator.EXISTS and not present:
                return False
            if requirement.operator is SelectorOperator.DOES_NOT_EXIST and present:
                return False
        return True

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def to_label_selector_string(self) -> str:
        """The `-l` form, for a server-side pre-filter; `matches` stays the authority."""
        parts = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for requirement in self.match_expressions:
            values = ",".join(requirement.values)
            parts.append(
                {
                    SelectorOperator.IN: f"{requirement.key} in ({values})",
                    SelectorOperator.NOT_IN: f"{requirement.key} notin ({values})",
                    SelectorOperator.EXISTS: requirement.key,
                    SelectorOperator.DOES_NOT_EXIST: f"!{requirement.key}",
                }[requirement.operator]
            )
        return ",".join(parts)


# --------------------------------------------------------------------------- experiment spec


class TargetMode(StrEnum):
    ONE = "one"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"
    ALL = "all"


class PodKillSpec(ApiModel):
    grace_period_seconds: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Grace period for the kill, at least 1: chaosguard never force-deletes. "
            "Default: the pod's own terminationGracePeriodSeconds."
        ),
    )
    respect_disruption_budgets: bool = Field(
        default=True,
        description=(
            "Kill through the Eviction API so PodDisruptionBudgets hold (a refusal is recorded as a skip). "
            "false uses a plain delete with the grace period."
        ),
    )
    min_available: int | str | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description=(
            "Pods of each workload that must stay Ready, as a count (2) or a percentage ('50%'), "
            "checked against the live workload right before every kill."
        ),
    )

    validation_rules = rules.POD_KILL


class NarrowedEgress(ApiModel):
    """Egress faults narrowed to destinations: latency and network."""

    destination_cidrs: list[Annotated[str, Field(max_length=49)]] = Field(
        default_factory=list,
        max_length=64,  # bounds the CEL rules' cost
        alias="destinationCIDRs",
        description="Affect only traffic to these CIDRs. Empty: all destinations.",
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, description="Affect only traffic to these destination ports. Empty: all ports."
    )

    validation_rules: ClassVar[tuple[rules.Rule, ...]] = (rules.CIDRS_PARSE,)


class LatencySpec(NarrowedEgress):
    delay: Duration = Field(description="Added one-way delay on egress, e.g. 200ms.")
    jitter: Duration = Field(default="0ms", description="Random variation around delay, e.g. 20ms.")
    correlation: int = Field(default=0, ge=0, le=100, description="Jitter correlation in percent (0-100).")

    validation_rules = rules.LATENCY


# A bandwidth for tc: a number and a bit unit; netem.py and the injector script (is_rate) read this form.
RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$"
Percentage = Annotated[float, Field(ge=0, le=100)]
SMALLEST_TC_PERCENT = rules.SMALLEST_TC_PERCENT


class NetworkSpec(NarrowedEgress):
    """Network impairments on the target pods' egress, by tc netem (any combination)."""

    validation_rules = rules.NETWORK

    delay: Duration | None = Field(default=None, description="Added one-way delay on egress, e.g. 200ms.")
    jitter: Duration | None = Field(default=None, description="Random variation around delay, e.g. 20ms.")
    correlation: int | None = Field(default=None, ge=0, le=100, description="Jitter correlation in percent (0-100).")
    loss: Percentage | None = Field(default=None, description="Packets dropped at random, in percent (0-100), e.g. 30.")
    loss_correlation: Percentage | None = Field(
        default=None,
        description="How much each loss depends on the previous one, in percent (0-100). netem's correlated "
        "draw also lowers the share dropped: loss 30 with lossCorrelation 25 dropped 17 % of packets.",
    )
    corrupt: Percentage | None = Field(
        default=None, description="Packets with one bit flipped at random, in percent (0-100)."
    )
    duplicate: Percentage | None = Field(default=None, description="Packets sent twice, in percent (0-100).")
    reorder: Percentage | None = Field(
        default=None,
        description="Packets sent at once, ahead of the delayed ones, in percent (0-100). Needs delay.",
    )
    reorder_correlation: Percentage | None = Field(
        default=None, description="How much each reordering depends on the previous one, in percent (0-100)."
    )
    rate: str | None = Field(
        default=None,
        pattern=RATE_PATTERN,
        description="Bandwidth cap on egress: a number and a unit bit, kbit, mbit or gbit, e.g. 1mbit.",
    )

    def summary(self) -> str:
        """The impairment in a few words, for status, Events and the report: 'loss 30%, rate 1mbit'."""
        parts = []
        if self.delay is not None and to_seconds(self.delay) > 0:
            jitter = f" ± {self.jitter}" if self.jitter and to_seconds(self.jitter) > 0 else ""
            parts.append(f"delay {self.delay}{jitter}")
        for name in ("loss", "corrupt", "duplicate", "reorder"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value:g}%")
        if self.rate:
            parts.append(f"rate {self.rate}")
        return ", ".join(parts)


class PartitionDirection(StrEnum):
    BOTH = "both"
    EGRESS = "egress"
    INGRESS = "ingress"


class PartitionSpec(ApiModel):
    """Drops all traffic between the target pods and the destinations (tc filters with a drop action)."""

    validation_rules = rules.PARTITION

    destination_cidrs: list[Annotated[str, Field(max_length=49)]] = Field(
        min_length=1,
        max_length=64,  # bounds the CEL rule's cost
        alias="destinationCIDRs",
        description="Cut off these CIDRs (at least one; never the node's or the API server's addresses).",
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, description="Cut off only these ports of the destinations. Empty: all ports."
    )
    direction: PartitionDirection = Field(
        default=PartitionDirection.BOTH,
        strict=False,
        description="both (default); egress: only packets to the destinations; ingress: only packets from them.",
    )

    def summary(self) -> str:
        ports = f" ports {', '.join(map(str, self.ports))}" if self.ports else ""
        return f"partition ({self.direction.value}) from {', '.join(self.destination_cidrs)}{ports}"


class NodeDrainSpec(ApiModel):
    """Which nodes to drain: each chosen node is cordoned (marked as chaosguard's), its pods in the target
    namespaces are evicted through the Eviction API, and it is uncordoned at the run's end."""

    validation_rules = rules.NODE_DRAIN

    node_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Which nodes may be drained (a metav1 LabelSelector over node labels). Empty: every node. "
        "Control-plane nodes, protected nodes and nodes already cordoned are never chosen.",
    )
    mode: TargetMode = Field(
        default=TargetMode.ONE,
        strict=False,
        description="How many of the eligible nodes: one | fixed | fixed-percent | all.",
    )
    value: int | None = Field(
        default=None, ge=1, description="Node count for fixed; percentage (1-100) for fixed-percent."
    )
    grace_period_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Grace period of each eviction, at least 1. Default: each pod's own terminationGracePeriodSeconds.",
    )


# A memory size for the stressor: a Kubernetes quantity in bytes (256Mi, 1G, 500000000), or a
# percentage of the target pod's memory limit (1% to 100%); decisions/stress.py reads this form.
STRESS_SIZE_PATTERN = r"^([0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?|0*([1-9]|[1-9][0-9]|100)%)$"


class StressCpu(ApiModel):
    workers: int = Field(default=1, ge=1, le=64, description="CPU stressors (stress-ng --cpu), each one process.")
    load: int = Field(
        default=100,
        ge=1,
        le=100,
        description="Busy share of each worker, in percent of one CPU (stress-ng --cpu-load).",
    )


class StressMemory(ApiModel):
    size: str = Field(
        pattern=STRESS_SIZE_PATTERN,
        max_length=32,
        description="Memory held (allocated, touched and kept) by one stressor: a quantity such as 256Mi, or a "
        "percentage of the target pod's memory limit such as 50% (refused for pods without a memory limit).",
    )

    validation_rules = rules.STRESS_MEMORY


class StressSpec(ApiModel):
    """CPU and memory pressure inside the target pods, by stress-ng in an ephemeral container (it counts
    against the pod's own cgroup, as a noisy neighbour inside the pod would)."""

    validation_rules = rules.STRESS

    cpu: StressCpu | None = Field(default=None, description="CPU pressure: workers busy at load percent each.")
    memory: StressMemory | None = Field(default=None, description="Memory pressure: size held until the end.")

    def summary(self) -> str:
        """The stress in a few words, for status, Events and the report: 'cpu 2 x 80%, memory 256Mi'."""
        parts = []
        if self.cpu is not None:
            parts.append(f"cpu {self.cpu.workers} x {self.cpu.load}%")
        if self.memory is not None:
            parts.append(f"memory {self.memory.size}")
        return ", ".join(parts)


class ContainerRestartSpec(ApiModel):
    """Restarts one named container of each target pod, the pod kept: its PID 1 gets SIGTERM from an
    ephemeral container in its process namespace, and the kubelet starts the container again."""

    validation_rules = rules.CONTAINER_RESTART

    container: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The container to restart, by name (one of the pod's spec.containers).",
    )
    min_available: int | str | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description=(
            "Pods of each workload that must stay Ready, as a count (2) or a percentage ('50%'), checked against "
            "the live workload right before every restart (a restarting container's pod is not Ready)."
        ),
    )


class TargetSpec(ApiModel):
    validation_rules = rules.TARGET

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to target. Default: the experiment's own namespace."
    )
    selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Which pods to target (a metav1 LabelSelector)."
    )
    mode: TargetMode = Field(default=TargetMode.ONE, strict=False, description="one | fixed | fixed-percent | all.")
    value: int | None = Field(
        default=None, ge=1, description="Pod count for fixed; percentage (1-100) for fixed-percent."
    )


def _validate_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone such as Europe/Berlin or UTC") from None
    return name


def _validate_cron(expression: str) -> str:
    if not croniter.is_valid(expression) or len(expression.split()) != 5:
        raise ValueError(
            f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week), "
            "for example '0 14 * * TUE'"
        )
    return expression


CronExpression = Annotated[str, AfterValidator(_validate_cron)]
TimeZoneName = Annotated[str, AfterValidator(_validate_time_zone)]


class ScheduleSpec(ApiModel):
    cron: CronExpression = Field(description="When runs start, as a 5-field cron expression, e.g. '0 14 * * TUE'.")
    time_zone: TimeZoneName = Field(default="UTC", description="IANA time zone the cron expression is read in.")
    history_limit: int = Field(default=10, ge=1, le=50, description="How many past runs status keeps.")


class ComparisonOperator(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="


class OnUnavailable(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"


class SecretKeyRef(ApiModel):
    name: str = Field(
        description="Secret name: in the experiment's namespace for a ChaosExperiment's endpoint, in the "
        "operator's namespace (never the experiment's) for a ChaosPolicy's."
    )
    key: str = Field(description="Key inside the Secret.")


class PrometheusEndpoint(ApiModel):
    url: str = Field(pattern=r"^https?://", description="Base URL of the Prometheus HTTP API.")
    bearer_token_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token sent as Authorization."
    )
    ca_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a PEM CA bundle to verify the server."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    timeout: Duration = Field(
        default="2s",
        description=(
            "Per-query timeout; a slower answer is unavailable. While ChaosPolicy guards apply to a run, "
            "an experiment's queries are cut off after the run's guard interval at the latest, so a "
            "policy's verdict is never held back by more than one interval."
        ),
    )


class SteadyStateCondition(ApiModel):
    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="A DNS-label name."
    )
    query: str = Field(min_length=1, description="A PromQL instant query.")
    operator: ComparisonOperator = Field(strict=False, description="Healthy while `value <operator> threshold` holds.")
    threshold: float = Field(description="The value compared against.")
    for_: str = Field(
        default="0",
        alias="for",
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={"x-kubernetes-int-or-string": True},
        description="How long a breach must persist before it counts, e.g. 10s (0: the first breach aborts).",
    )

    @field_validator("for_", mode="before")
    @classmethod
    def _zero_may_be_a_number(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            if value != 0:
                raise ValueError(f"write {value}s (with a unit) or 0; a bare number other than 0 is ambiguous")
            return "0"
        return value

    prometheus: PrometheusEndpoint | None = Field(
        default=None, description="Overrides steadyState.prometheus for this condition."
    )


class RecoverySpec(ApiModel):
    timeout: Duration = Field(
        default="5m", description="How long the steady state may take to come back after the run."
    )


class SteadyStateSpec(ApiModel):
    prometheus: PrometheusEndpoint | None = Field(default=None, description="Default Prometheus endpoint.")
    interval: Duration = Field(default="5s", description="How often every condition is checked.")
    conditions: list[SteadyStateCondition] = Field(min_length=1, max_length=20, description="All must hold.")
    on_unavailable: OnUnavailable = Field(
        default=OnUnavailable.ABORT,
        strict=False,
        description="Prometheus unreachable, erroring, empty or NaN: abort (default, fail-safe) or continue.",
    )
    recovery: RecoverySpec = Field(default_factory=RecoverySpec, description="The after-run check.")

    validation_rules = rules.STEADY_STATE


class ChaosExperimentSpec(ApiModel):
    validation_rules = rules.EXPERIMENT

    action: Action = Field(strict=False, description="The fault: " + ", ".join(a.value for a in Action) + ".")
    pod_kill: PodKillSpec | None = Field(default=None, description="Settings for action pod-kill.")
    latency: LatencySpec | None = Field(default=None, description="Settings for action latency.")
    network: NetworkSpec | None = Field(
        default=None, description="Settings for action network: loss, corrupt, duplicate, reorder, rate, delay."
    )
    partition: PartitionSpec | None = Field(default=None, description="Settings for action partition.")
    node_drain: NodeDrainSpec | None = Field(
        default=None,
        description="Settings for action node-drain: which nodes to cordon and drain of the target namespaces' pods.",
    )
    stress: StressSpec | None = Field(
        default=None, description="Settings for action stress: CPU workers and load, memory size."
    )
    container_restart: ContainerRestartSpec | None = Field(
        default=None, description="Settings for action container-restart: which container to restart."
    )
    target: TargetSpec = Field(description="Which pods, in which namespaces, and how many.")
    duration: Duration = Field(description="How long a run lasts, e.g. 5m.")
    interval: Duration | None = Field(
        default=None, description="pod-kill: kill again every interval until duration ends."
    )
    schedule: ScheduleSpec | None = Field(
        default=None, description="Makes the experiment recurring (a game day). Absent: one run now."
    )
    steady_state: SteadyStateSpec | None = Field(
        default=None, description="The SLI guard: the run aborts when a condition stops holding."
    )
    dry_run: bool = Field(
        default=False, description="Run every check and record which pods would be hit, touching nothing."
    )
    paused: bool = Field(
        default=False,
        description="Paused: the run's faults are taken out and no round plays until this is false again (the "
        "run's deadline still counts); a schedule skips its slots meanwhile. `chaosguard pause|resume NAME` sets it.",
    )

    @property
    def pod_kill_settings(self) -> PodKillSpec:
        return self.pod_kill or PodKillSpec()

    @property
    def duration_seconds(self) -> float:
        return to_seconds(self.duration)


# --------------------------------------------------------------------------- experiment status


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    FAILED = "Failed"
    REJECTED = "Rejected"
    SKIPPED = "Skipped"  # a scheduled slot that did not run (the schedule was paused): history only

    @property
    def is_terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.ABORTED, Phase.FAILED, Phase.REJECTED)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class KillResult(StrEnum):
    KILLED = "Killed"
    WOULD_KILL = "WouldKill"  # dry run
    SKIPPED_BUDGET = "SkippedDisruptionBudget"
    SKIPPED_MIN_AVAILABLE = "SkippedMinAvailable"
    CAPPED = "Capped"
    GONE = "Gone"
    FAILED = "Failed"


class TargetRecord(StatusModel):
    namespace: str
    name: str
    uid: str
    workload: str = Field(default="", description="Controlling owner as Kind/name.")


class KillRecord(StatusModel):
    namespace: str
    name: str
    uid: str
    workload: str = ""
    at: datetime
    result: KillResult
    method: str = ""
    message: str = ""
    round: int = 0
    recovered_after_seconds: float | None = None
    node: str = Field(default="", description="node-drain: the node the pod was evicted from.")


class SliAbort(StatusModel):
    """The SLI breach (or unavailability) that ended a run, as the guard saw it."""

    condition: str
    query: str = ""
    operator: str = ""
    threshold: float | None = None
    value: str = ""
    series: str = ""
    at: datetime
    since: datetime | None = None
    message: str = ""
    policy: str = Field(default="", description="The ChaosPolicy whose guard aborted the run; empty: the author's.")


class FaultState(StrEnum):
    INJECTING = "Injecting"
    ACTIVE = "Active"
    REMOVED = "Removed"
    FAILED = "Failed"
    WOULD_INJECT = "WouldInject"  # dry run


class FaultRecord(StatusModel):
    """One network fault (latency, impairment, partition) in one pod: what, when it went in, and when
    and how it came out."""

    namespace: str
    name: str
    uid: str
    workload: str = ""
    container: str = Field(default="", description="The ephemeral container that carries the fault.")
    impairment: str = Field(default="", description="What the fault does, e.g. 'loss 30%, rate 1mbit'.")
    state: FaultState = FaultState.INJECTING
    injected_at: datetime | None = None
    deadline: datetime | None = None
    removed_at: datetime | None = None
    removed_by: str = Field(default="", description="deadline | abort | deletion | window | suspension | ...")
    message: str = ""
    target_container: str = Field(
        default="", description="container-restart: the container restarted (the record's container is the signaller)."
    )
    restarts_before: int | None = Field(
        default=None, description="container-restart: the target container's restartCount before the signal."
    )

    @property
    def kind(self) -> str:
        """The record kind of its action in the table of actions ("Latency", "Partition", ...), read from
        the carrier's name (chaosguard-<action>-<run>); "Fault" for a name no row claims, never a guess."""
        for action, facts in ACTIONS.items():
            if self.container.startswith(f"chaosguard-{action}-"):
                return facts.record_kind
        return "Fault"


class PauseRecord(StatusModel):
    """One pause of a run: when and by whom it was paused and resumed (the deadline never moves for it)."""

    paused_at: datetime
    paused_by: str = ""
    resumed_at: datetime | None = None
    resumed_by: str = ""
    message: str = ""


class SliTrend(StatusModel):
    """One SLI over the whole run so far, downsampled to a few points for the report's chart: point i
    stands for the samples taken around `start + i*step`; when the points run out the step doubles and
    neighbours merge (the worse value, and the worse status), so the trend always spans the run."""

    start: datetime = Field(description="When the first sample was taken.")
    step: float = Field(description="Seconds between two points; it doubles as the run goes on.")
    statuses: str = Field(
        default="",
        max_length=256,
        description="One letter per point: H holding, P breaching within `for`, B breached, U unavailable, "
        "- no sample.",
    )
    values: str = Field(
        default="",
        max_length=4096,
        description="One value per point, space-separated (4 significant digits; NaN, +Inf, -Inf; - for none).",
    )


class SliSummary(StatusModel):
    """What the guard has seen of one SLI condition in this run: its latest sample, its worst, and counts."""

    name: str = Field(description="The steadyState condition (policy/NAME for a ChaosPolicy's guard).")
    operator: str = Field(default="", description="Healthy while `value <operator> threshold`.")
    threshold: float | None = None
    status: str = Field(
        default="", description="The latest sample's status: Holding, Pending, Breached or Unavailable."
    )
    value: str = Field(default="", description="The latest value (empty: nothing was measured).")
    at: datetime | None = Field(default=None, description="When the latest sample was taken.")
    worst: str = Field(default="", description="The value farthest on the wrong side of the threshold so far.")
    worst_at: datetime | None = Field(default=None, description="When the worst value was seen.")
    samples: int = Field(default=0, description="Samples taken in this run.")
    breaching: int = Field(default=0, description="Samples that did not hold (Pending or Breached).")
    unavailable: int = Field(default=0, description="Samples without a usable value.")
    trend: SliTrend | None = Field(
        default=None, description="The whole run, downsampled, for `chaosguard report` (left out of history)."
    )


class RunStatus(StatusModel):
    id: str
    trigger: str = "apply"
    phase: Phase = Phase.RUNNING
    started_at: datetime | None = None
    deadline: datetime | None = None
    finished_at: datetime | None = None
    rounds_done: int = 0
    next_round_at: datetime | None = None
    targets: list[TargetRecord] = Field(default_factory=list)
    kills: list[KillRecord] = Field(default_factory=list)
    kills_total: int = Field(default=0, description="Pods this run killed (pod-kill only).")
    injections_total: int = Field(default=0, description="Faults this run put into pods (the injected kinds).")
    reason: str = ""
    message: str = ""
    steady_state_before: str = ""
    steady_state_after: str = ""
    sli_state: dict[str, dict[str, str]] = Field(default_factory=dict)
    slis: list[SliSummary] = Field(
        default_factory=list,
        description="Each SLI condition the guard judged in this run: latest, worst, counts, trend.",
    )
    abort: SliAbort | None = None
    faults: list[FaultRecord] = Field(default_factory=list)
    spec_hash: str = Field(default="", description="sha256 of the spec the run started with.")
    target_namespaces: list[str] = Field(
        default_factory=list, description="The namespaces the run may act in: its faults are cleaned up only there."
    )
    seal: str = Field(
        default="",
        description="The operator's signature over this record (id, times, spec hash, namespaces, targets, faults, "
        "kills): a record that does not verify is never acted on.",
    )
    pauses: list[PauseRecord] = Field(
        default_factory=list, description="Each pause of the run (spec.paused), the last one open while paused."
    )


class ApprovalRecord(StatusModel):
    """How the operator judged one ChaosApproval of this experiment."""

    name: str
    approver: str = ""
    approved_at: datetime | None = None
    expires_at: datetime | None = None
    counted: bool = False
    reason: str = Field(default="", description="Why it does not count (empty when it counts).")


class ChaosExperimentStatus(StatusModel):
    phase: Phase | None = None
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    current_run: RunStatus | None = None
    last_run: RunStatus | None = None
    history: list[RunStatus] = Field(default_factory=list)
    next_run_at: datetime | None = None
    runs_total: int = 0
    hits: int = Field(default=0, description="Pods killed plus faults injected by the current run, else the last one.")
    approvals: list[ApprovalRecord] = Field(
        default_factory=list, description="The approvals of the current spec, as the operator last judged them."
    )


# --------------------------------------------------------------------------- policy


class TimeWindow(ApiModel):
    cron: CronExpression = Field(description="When the window opens, as a 5-field cron expression.")
    duration: Duration = Field(description="How long the window stays open, e.g. 6h.")
    time_zone: TimeZoneName = Field(default="UTC", description="IANA time zone the cron expression is read in.")


class Blackout(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=_check_cel(
            [
                {
                    "rule": "timestamp(self.end) > timestamp(self.start)",
                    "message": "blackout end must be after start",
                }
            ]
        )
    )

    start: datetime = Field(strict=False, description="RFC 3339 start, e.g. 2026-12-20T00:00:00Z.")
    end: datetime = Field(strict=False, description="RFC 3339 end, after start.")
    reason: str = Field(default="", description="Shown in every refusal, e.g. 'holiday freeze'.")

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("blackout start and end need a time zone offset, e.g. 2026-12-20T00:00:00Z")
        if self.end <= self.start:
            raise ValueError("blackout end must be after start")
        return self


class ApproverSet(ApiModel):
    users: list[str] = Field(default_factory=list, description="User names allowed to approve.")
    groups: list[str] = Field(default_factory=list, description="Groups whose members may approve.")


class ApprovalPolicy(ApiModel):
    required: bool = Field(default=False, description="Experiments wait for approvals before they run.")
    approvers: ApproverSet = Field(default_factory=ApproverSet, description="Who may approve.")
    min_approvals: int = Field(default=1, ge=1, description="Distinct approvers needed.")
    expires_after: Duration = Field(default="24h", description="An approval older than this no longer counts.")


# ------------------------------------------------------------- platform guards (ChaosPolicy.spec.steadyState)

# A Prometheus label matcher as in PromQL and Alertmanager: name, one of = != =~ !~, a quoted value.
LABEL_MATCHER_PATTERN = r'^[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"([^"\\]|\\.)*"$'
WINDOW_PLACEHOLDER = rules.WINDOW_PLACEHOLDER
# SLO windows are counted in days and weeks (30d, 4w), as Prometheus, Sloth and Pyrra write them.
SLO_WINDOW_PATTERN = r"^([0-9]+(w|d|h|m|s))+$"
_SLO_WINDOW_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
# The windows Sloth records slo:sli_error:ratio_rate<window> for: its multiwindow multi-burn-rate
# alert windows (page 5m/1h and 30m/6h, ticket 2h/1d and 6h/3d) and the SLO period.
SLOTH_SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
SloWindow = Annotated[str, Field(pattern=SLO_WINDOW_PATTERN, max_length=32)]


def slo_window_seconds(text: str) -> int:
    """`30d` -> 2592000; `1h30m` -> 5400 (the model has checked the form)."""
    return sum(int(number) * _SLO_WINDOW_UNITS[unit] for number, unit in re.findall(r"([0-9]+)(w|d|h|m|s)", text))


class SlothSlo(ApiModel):
    service: str = Field(min_length=1, description="The Sloth service (label sloth_service of its recording rules).")
    slo: str = Field(min_length=1, description="The Sloth SLO name (label sloth_slo of its recording rules).")


class PyrraSlo(ApiModel):
    slo: str = Field(min_length=1, description="The Pyrra SLO name (label slo of its recording rules).")
    metric: str = Field(
        min_length=1,
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description=(
            "The total metric's name without _total, as in Pyrra's <metric>:burnrate5m rules, e.g. http_requests. "
            "The budget needs Pyrra's generic rules (pyrra_availability, pyrra_objective: --generic-rules)."
        ),
    )


MAX_QUERY_LENGTH = 4096  # bounds the cost the API server estimates for the CEL rules that read queries


class ErrorBudgetGate(ApiModel):
    """An SLO in SRE terms, and the two gates on it: budget left before a run, burn rate during one."""

    validation_rules = rules.ERROR_BUDGET

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="A DNS-label name."
    )
    error_query: str | None = Field(
        default=None,
        max_length=MAX_QUERY_LENGTH,
        description="PromQL for the rate of bad events over {{.window}}, e.g. "
        'sum(rate(http_requests_total{code=~"5.."}[{{.window}}])) (Sloth\'s error_query as it is).',
    )
    total_query: str | None = Field(
        default=None,
        max_length=MAX_QUERY_LENGTH,
        description="PromQL for the rate of all events over {{.window}}, with errorQuery.",
    )
    ratio_query: str | None = Field(
        default=None,
        max_length=MAX_QUERY_LENGTH,
        description="Instead of errorQuery and totalQuery: PromQL for the error ratio over {{.window}}.",
    )
    sloth: SlothSlo | None = Field(default=None, description="Use the recording rules Sloth generated for this SLO.")
    pyrra: PyrraSlo | None = Field(default=None, description="Use the recording rules Pyrra generated for this SLO.")
    objective: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="The SLO target in percent, e.g. 99.9. Required with queries; Sloth and Pyrra record their own.",
    )
    window: SloWindow = Field(default="30d", description="The SLO period the budget is counted over, e.g. 30d or 4w.")
    min_budget_remaining: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Refuse to start a run while less than this percentage of the error budget is left.",
    )
    max_burn_rate: float | None = Field(
        default=None,
        gt=0,
        description="Abort a running run when the budget burns faster than this many times the sustainable rate.",
    )
    burn_rate_window: SloWindow = Field(default="5m", description="The short window the burn rate is measured over.")

    @model_validator(mode="after")
    def _sloth_records_the_window(self) -> ErrorBudgetGate:
        """What CEL cannot say: which windows Sloth records (the rules above have held)."""
        where = f"errorBudgets[{self.name}]"
        if self.sloth is not None:
            recorded = {slo_window_seconds(w) for w in (*SLOTH_SLI_WINDOWS, self.window)}
            if slo_window_seconds(self.burn_rate_window) not in recorded:
                raise ValueError(
                    f"{where}: Sloth records no slo:sli_error:ratio_rate{self.burn_rate_window}; set burnRateWindow "
                    f"to one it records: {', '.join(SLOTH_SLI_WINDOWS)} or the SLO period ({self.window})"
                )
        return self


class QuietAlerts(ApiModel):
    matchers: list[Annotated[str, Field(pattern=LABEL_MATCHER_PATTERN)]] = Field(
        default_factory=list,
        max_length=20,
        description='Label matchers over ALERTS{alertstate="firing"}, e.g. severity="critical". Empty: any alert.',
    )
    target_namespaces_only: bool = Field(
        default=False,
        description="Count only alerts whose namespace label is one of the experiment's target namespaces.",
    )


class PolicySteadyState(ApiModel):
    """The cluster owners' guards: they apply to every covered experiment, and its author cannot remove them."""

    prometheus: PrometheusEndpoint | None = Field(
        default=None,
        description="Default Prometheus endpoint. Its Secrets are read in the operator's own namespace.",
    )
    interval: Duration = Field(
        default="5s", description="Longest time between checks; a shorter steadyState.interval of the experiment wins."
    )
    conditions: list[SteadyStateCondition] = Field(
        default_factory=list, max_length=20, description="Checked before, during and after every run; all must hold."
    )
    error_budgets: list[ErrorBudgetGate] = Field(
        default_factory=list, max_length=20, description="Error-budget and burn-rate gates."
    )
    quiet_alerts: QuietAlerts | None = Field(
        default=None, description="No chaos while a matching alert fires: refuse to start, abort a running run."
    )

    validation_rules = rules.POLICY_STEADY_STATE

    @model_validator(mode="after")
    def _names_are_unique(self) -> PolicySteadyState:
        """What CEL cannot say cheaply: one name space over conditions and error budgets together."""
        names = [condition.name for condition in self.conditions] + [gate.name for gate in self.error_budgets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"names must be unique within steadyState; repeated: {', '.join(duplicates)}")
        return self


# scheme://host[:port][/path]: no user info, query or fragment (the model's check also refuses dot segments).
PROMETHEUS_PREFIX_PATTERN = r"^https?://[^\s/?#@\\]+(/[^\s?#\\]*)?$"
PrometheusPrefix = Annotated[str, Field(pattern=PROMETHEUS_PREFIX_PATTERN, max_length=2048)]


class ChaosPolicySpec(ApiModel):
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces this policy applies to (by their labels). Absent: all."
    )
    excluded_namespaces: list[str] = Field(default_factory=list, description="Never targeted.")
    require_namespace_opt_in: bool = Field(
        default=False,
        description=f"Targets' namespaces must carry the label {OPT_IN_LABEL}={OPT_IN_VALUE}.",
    )
    protected_selector: LabelSelector | None = Field(
        default=None, description="Pods matching this selector are never targeted."
    )
    max_percentage: int = Field(
        default=100, ge=1, le=100, description="Largest share of each workload's pods down at any moment."
    )
    max_concurrent_experiments: int | None = Field(
        default=None, ge=1, description="Largest number of experiments running at once."
    )
    max_duration: Duration | None = Field(default=None, description="Longest allowed spec.duration.")
    max_latency: Duration | None = Field(default=None, description="Largest allowed latency delay.")
    max_guard_interval: Duration | None = Field(default=None, description="Largest allowed steadyState.interval.")
    allowed_actions: list[Annotated[Action, Field(strict=False)]] | None = Field(
        default=None,
        description=f"Actions allowed ({', '.join(a.value for a in Action)}). Absent: all actions. "
        "Leave out partition to forbid partitions.",
    )
    # Limits of the network faults (action network and partition).
    max_loss: Percentage | None = Field(
        default=None,
        description="Largest allowed spec.network.loss and spec.network.corrupt, in percent (0-100). "
        "A loss or corrupt of 100 drops every packet and is also judged as a partition.",
    )
    # Limits of the stress fault.
    max_stress_load: int | None = Field(
        default=None,
        ge=1,
        description="Largest CPU load a stress may add to one pod, in percent of one CPU summed over its workers "
        "(spec.stress.cpu.workers x load): 100 allows one busy CPU.",
    )
    max_stress_memory: str | None = Field(
        default=None,
        pattern=STRESS_SIZE_PATTERN,
        max_length=32,
        description="Largest memory a stress may hold in one pod: a quantity such as 512Mi, or a percentage of the "
        "pod's memory limit such as 50% (a percentage cap refuses absolute sizes in pods without a limit).",
    )
    allow_operator_namespace_destinations: bool = Field(
        default=False,
        description="Allow network faults and partitions whose destinationCIDRs reach the operator's own pods "
        "or Services (every applicable policy must allow it).",
    )
    # Limits of node-drain.
    max_node_percentage: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Largest share of the cluster's nodes cordoned at any moment (by anyone), counting the node a "
        "node-drain is about to cordon. Absent: no cap beyond the built-in rules.",
    )
    protected_node_selector: LabelSelector | None = Field(
        default=None, description="Nodes matching this selector are never drained."
    )
    windows: list[TimeWindow] = Field(
        default_factory=list, description="Experiments run only inside one of these. Empty: any time."
    )
    blackouts: list[Blackout] = Field(default_factory=list, description="Experiments never run inside these.")
    approval: ApprovalPolicy | None = Field(default=None, description="Approval requirements.")
    require_steady_state: bool = Field(default=False, description="Refuse experiments without a steadyState.")
    allow_cross_namespace: bool = Field(
        default=False, description="Allow experiments to target namespaces other than their own."
    )
    suspend: bool = Field(
        default=False, description="The big red switch: aborts every running experiment and starts none."
    )
    steady_state: PolicySteadyState | None = Field(
        default=None,
        description="Platform guards held over every covered experiment: SLO conditions, error budgets, quiet alerts.",
    )
    allowed_prometheus_urls: list[PrometheusPrefix] | None = Field(
        default=None,
        alias="allowedPrometheusURLs",
        max_length=50,
        description="Prometheus URLs (or URL prefixes) that covered experiments' steadyState may query. Scheme, "
        "host and port must equal a prefix's, and the path must be the prefix's path or below it "
        "(http://prometheus.monitoring:9090/team-a allows .../team-a and .../team-a/x, not .../team-ab). Set: "
        "every covered experiment's URLs, with or without a bearerTokenSecret, must be allowed by every policy "
        "that sets it ([] allows none). Absent everywhere: any URL without credentials, and a bearerTokenSecret "
        "only to the operator's own Prometheus (chaosguard run --prometheus-url).",
    )

    @field_validator("allowed_prometheus_urls")
    @classmethod
    def _prefixes_are_safe(cls, prefixes: list[str] | None) -> list[str] | None:
        for index, prefix in enumerate(prefixes or []):
            problem = url_parts(prefix)
            if isinstance(problem, str):
                raise ValueError(
                    f"allowedPrometheusURLs[{index}] {prefix!r} cannot be matched safely: {problem}; "
                    "write scheme://host[:port][/path], e.g. http://prometheus.monitoring:9090"
                )
        return prefixes


class ChaosPolicyStatus(StatusModel):
    observed_generation: int | None = None
    message: str = ""


# --------------------------------------------------------------------------- objects


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ChaosExperiment(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=to_camel)

    api_version: Literal["chaosguard.dev/v1alpha1"] = "chaosguard.dev/v1alpha1"
    kind: Literal["ChaosExperiment"] = "ChaosExperiment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ChaosExperimentSpec
    status: ChaosExperimentStatus | None = None


class ChaosPolicy(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=to_camel)

    api_version: Literal["chaosguard.dev/v1alpha1"] = "chaosguard.dev/v1alpha1"
    kind: Literal["ChaosPolicy"] = "ChaosPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ChaosPolicySpec = Field(default_factory=ChaosPolicySpec)
    status: ChaosPolicyStatus | None = None


# --------------------------------------------------------------------------- approvals


class ChaosApprovalSpec(ApiModel):
    """An approval of one ChaosExperiment's exact spec; the approver is stamped by the admission webhook."""

    model_config = ConfigDict(
        json_schema_extra=_check_cel(
            [
                {
                    "rule": "self == oldSelf",
                    "message": "a ChaosApproval cannot be changed; delete it and approve again",
                }
            ]
        )
    )

    experiment: str = Field(
        min_length=1, max_length=253, description="Name of the ChaosExperiment, in this namespace, being approved."
    )
    spec_hash: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description=(
            "sha256 of the experiment's spec as approved (canonical JSON; `chaosguard approve` fills it in). "
            "Any edit of the spec voids the approval."
        ),
    )
    comment: str = Field(default="", max_length=1000, description="Why it was approved, for the record.")


class ChaosApproval(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=to_camel)

    api_version: Literal["chaosguard.dev/v1alpha1"] = "chaosguard.dev/v1alpha1"
    kind: Literal["ChaosApproval"] = "ChaosApproval"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ChaosApprovalSpec
