"""Target selection and the per-workload cap, pure: plain pod data in, decisions out.

Only pods that are Running, Ready, not terminating, controller-owned, not protected and in a
namespace that may be targeted are eligible; every pod left out carries the rule that left it
out, for `chaosguard plan`. The mode picks how many; a seeded `random.Random` picks which, so a
run is reproducible from its seed. The cap is judged per workload against the live population
right before each kill: pods already down (not Ready, terminating, or missing against the
desired replica count), whoever took them down, count against it, so two experiments on one
workload can never add up past it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from chaosguard.api.models import LabelSelector, TargetMode, TargetSpec
from chaosguard.decisions.policy import EffectivePolicy, Refusal, namespace_refusal


@dataclass(frozen=True)
class PodView:
    """What selection needs to know about a pod; built from the API object by the kube layer."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    phase: str
    ready: bool
    terminating: bool
    workload: str | None  # controlling workload as "Kind/name", e.g. "Deployment/checkout"
    ready_since: datetime | None = None  # the Ready condition's lastTransitionTime, while Ready
    ready_seen_at: datetime | None = None  # when a watch first saw it Ready (finer than ready_since's seconds)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_key(self) -> str | None:
        return None if self.workload is None else f"{self.namespace}/{self.workload}"


@dataclass(frozen=True)
class Exclusion:
    pod: PodView
    refusal: Refusal


@dataclass(frozen=True)
class Eligibility:
    eligible: tuple[PodView, ...]
    excluded: tuple[Exclusion, ...]


def pod_refusal(
    pod: PodView,
    effective: EffectivePolicy,
    namespace_labels: Mapping[str, Mapping[str, str]],
    namespace_verdicts: dict[str, Refusal | None] | None = None,
) -> Refusal | None:
    """Why this pod may not be a target right now, or None if it may."""
    verdicts = {} if namespace_verdicts is None else namespace_verdicts
    if pod.namespace not in verdicts:
        verdicts[pod.namespace] = namespace_refusal(pod.namespace, effective, namespace_labels.get(pod.namespace, {}))
    refusal = verdicts[pod.namespace]
    if refusal is not None:
        return refusal
    protector = effective.protection_of(pod.labels)
    if protector is not None:
        return Refusal("protected-pod", f"pod {pod.key} matches the protectedSelector of {protector}")
    if pod.workload is None:
        return Refusal(
            "not-controller-owned",
            f"pod {pod.key} has no controlling workload, so nothing would replace it",
        )
    if pod.terminating:
        return Refusal("terminating", f"pod {pod.key} is already terminating")
    if pod.phase != "Running":
        return Refusal("not-running", f"pod {pod.key} is {pod.phase}, not Running")
    if not pod.ready:
        return Refusal("not-ready", f"pod {pod.key} is not Ready")
    return None


def classify(
    pods: Iterable[PodView],
    selector: LabelSelector,
    effective: EffectivePolicy,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> Eligibility:
    """Splits the pods the selector matches into eligible ones and exclusions with their rule."""
    eligible: list[PodView] = []
    excluded: list[Exclusion] = []
    namespace_verdicts: dict[str, Refusal | None] = {}
    for pod in sorted(pods, key=_pod_order):
        if not selector.matches(pod.labels):
            continue
        refusal = pod_refusal(pod, effective, namespace_labels, namespace_verdicts)
        if refusal is None:
            eligible.append(pod)
        else:
            excluded.append(Exclusion(pod, refusal))
    return Eligibility(tuple(eligible), tuple(excluded))


def _pod_order(pod: PodView) -> tuple[str, str, str]:
    return (pod.namespace, pod.name, pod.uid)


def requested_count(target: TargetSpec, eligible_count: int) -> int:
    """How many pods the mode asks for out of `eligible_count` (never more than there are)."""
    return count_for_mode(target.mode, target.value, eligible_count)


def count_for_mode(mode: TargetMode, value: int | None, eligible_count: int) -> int:
    """How many of `eligible_count` targets (pods, or nodes for node-drain) a mode asks for, never more
    than there are."""
    if eligible_count == 0:
        return 0
    if mode is TargetMode.ONE:
        wanted = 1
    elif mode is TargetMode.ALL:
        wanted = eligible_count
    elif mode is TargetMode.FIXED:
        wanted = value or 0
    else:
        wanted = max(1, math.floor(eligible_count * (value or 0) / 100))
    return min(wanted, eligible_count)


def choose(eligible: Sequence[PodView], count: int, rng: random.Random) -> list[PodView]:
    """A reproducible random choice of `count` pods (the seed decides)."""
    ordered = sorted(eligible, key=_pod_order)
    return rng.sample(ordered, min(count, len(ordered)))


@dataclass(frozen=True)
class WorkloadState:
    """The live population of one workload, for the cap and the minimum-available guard."""

    key: str
    desired: int  # replicas the controller wants
    ready: int  # pods Ready and not terminating

    @property
    def down(self) -> int:
        return max(0, self.desired - self.ready)


def serving(pod: PodView) -> bool:
    """Counts toward its workload's strength: Running, Ready and not on its way out."""
    return pod.ready and not pod.terminating and pod.phase == "Running"


def workload_states(pods: Iterable[PodView], desired_by_workload: Mapping[str, int]) -> dict[str, WorkloadState]:
    """Live state of each workload from all its pods (not only the selected ones)."""
    ready: dict[str, int] = {}
    existing: dict[str, int] = {}
    for pod in pods:
        key = pod.workload_key
        if key is None:
            continue
        existing[key] = existing.get(key, 0) + (0 if pod.terminating else 1)
        if serving(pod):
            ready[key] = ready.get(key, 0) + 1
    keys = set(existing) | set(desired_by_workload)
    return {
        key: WorkloadState(
            key=key,
            desired=max(desired_by_workload.get(key, 0), existing.get(key, 0)),
            ready=ready.get(key, 0),
        )
        for key in keys
    }


def allowed_down(desired: int, max_percentage: int) -> int:
    return math.floor(desired * max_percentage / 100)


def min_available_count(min_available: int | str | None, desired: int) -> int:
    if min_available is None:
        return 0
    if isinstance(min_available, str):
        return math.ceil(desired * int(min_available.removesuffix("%")) / 100)
    return min_available


def kill_refusal(
    pod: PodView,
    state: WorkloadState,
    effective: EffectivePolicy,
    min_available: int | str | None,
) -> Refusal | None:
    """Whether killing `pod` now would cross the cap or the minimum-available floor."""
    cap, source = effective.max_percentage
    limit = allowed_down(state.desired, cap)
    if state.down + 1 > limit:
        return Refusal(
            "max-percentage",
            f"killing {pod.key} would take {state.down + 1} of {state.desired} pods of {pod.workload} down, "
            f"above the {cap}% ({limit} pods) allowed{' by ' + source if source else ''}; "
            "wait for the workload to recover or add replicas",
        )
    floor = min_available_count(min_available, state.desired)
    if state.ready - 1 < floor:
        return Refusal(
            "min-available",
            f"killing {pod.key} would leave {state.ready - 1} Ready pods of {pod.workload}, "
            f"below podKill.minAvailable {min_available} ({floor} pods); wait for the workload to recover",
        )
    return None


def after_kill(state: WorkloadState) -> WorkloadState:
    """The workload as it stands once one more of its pods is down."""
    return WorkloadState(key=state.key, desired=state.desired, ready=max(0, state.ready - 1))


def ready_moment(pod: PodView) -> datetime | None:
    """When the pod became Ready, as well as the API lets us know it. The Ready condition's
    lastTransitionTime is the kubelet's own clock but whole seconds; a watch's first sight of the
    pod Ready is finer but late when the watch is. The truth is in [since, since + 1 s) and not
    after the sighting, so the sighting is taken, held inside that second."""
    since, seen = pod.ready_since, pod.ready_seen_at
    if since is None:
        return seen
    if seen is None:
        return since
    return min(max(seen, since), since + timedelta(seconds=1))


def recovered_at(pods: Iterable[PodView], workload_key: str, desired: int, killed_at: datetime) -> datetime | None:
    """When the workload was back at full Ready strength after a kill at `killed_at`, judged from
    the pods' own Ready transitions (not from when the operator got round to looking), or None
    while fewer than `desired` of its pods are Ready. Counting the Ready pods by when each became
    Ready, strength reached `desired` at the desired-th earliest of those moments; never before
    the kill."""
    wanted = max(desired, 1)
    moments = sorted(
        max(ready_moment(pod) or killed_at, killed_at)
        for pod in pods
        if pod.workload_key == workload_key and serving(pod)
    )
    return moments[wanted - 1] if len(moments) >= wanted else None
