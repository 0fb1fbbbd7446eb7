"""What the engine's parts share, apart from the engine itself: the one OperatorContext of an operator
process, the World one experiment sees, and `Driver`, the part of an experiment driver that the
identity and approval gates (`gates`) act on. Here so that `engine` imports `gates` and `gates`
never imports `engine`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from chaosguard.api.models import ChaosExperimentSpec, ChaosExperimentStatus, ConditionStatus
from chaosguard.clients.informers import ClusterCache
from chaosguard.clients.kube import Cluster
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.decisions.platform_guards import PlatformGuards
from chaosguard.decisions.policy import EffectivePolicy, Refusal
from chaosguard.decisions.stamps import unverified_authors_allowed
from chaosguard.decisions.standby import RunEnds, StandbyWait
from chaosguard.runtime.clock import Clock
from chaosguard.runtime.guard import GuardScheduler
from chaosguard.runtime.lanes import ApiLanes, StatusWriteOrder
from chaosguard.runtime.leadership import Leadership

Emit = Callable[[Mapping[str, Any], str, str, str], None]  # (object body, type, reason, message)


@dataclass
class OperatorContext:
    """What every experiment driver of one operator process shares: the API lanes, the
    watch-backed cache every step reads from, and the one guard scheduler for all runs."""

    api: ApiLanes
    cache: ClusterCache
    clock: Clock
    emit: Emit
    batcher: QueryBatcher
    guard: GuardScheduler
    operator_namespace: str | None = None
    signing_key: bytes | None = None  # for author and approver stamps (security.prepare loads it)
    webhooks: bool = False  # started with the admission webhooks: every experiment needs an author stamp
    # The owners' explicit opt-out (--allow-unverified-authors): an experiment without a valid author
    # stamp may run where no policy requires approval, with the operator's rights, not its author's.
    allow_unverified_authors: bool = field(default_factory=lambda: unverified_authors_allowed(os.environ))
    workload_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)  # this process's runs, including starts in progress
    # Set by every change of an experiment (handlers.wake_standby), so a standby's driver wakes at once.
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    # Whether this replica leads (starts runs, kills, injects); every replica guards and may abort.
    leadership: Leadership = field(default_factory=lambda: Leadership.sole(datetime.now(UTC)))
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held only to count and take a slot
    # Every driver's status writes, in order: an abort's before any routine write (lanes.StatusWriteOrder).
    status_writes: StatusWriteOrder = field(default_factory=StatusWriteOrder)
    # How long a standby leaves a breaching run to the leader: the leader's ends this replica has seen
    # (fed by handlers.wake_standby) say whether the leader is alive and working through a burst.
    run_ends: RunEnds = field(default_factory=RunEnds)
    # Set by every change of an experiment whose breaching run a standby leaves to the leader for now.
    abort_waits: dict[str, asyncio.Event] = field(default_factory=dict)
    standby_wait: StandbyWait = field(default_factory=StandbyWait)

    @property
    def cluster(self) -> Cluster:
        """The routine lane's client, for code that runs its own calls (start-up, admission)."""
        return self.api.cluster

    def workload_lock(self, key: str) -> asyncio.Lock:
        return self.workload_locks.setdefault(key, asyncio.Lock())


@dataclass(frozen=True)
class World:
    """What the cluster looks like to one experiment at one moment."""

    effective: EffectivePolicy
    namespace_labels: dict[str, dict[str, str]]
    guards: PlatformGuards = field(default_factory=PlatformGuards)  # the covering policies' steadyState
    # Policies that do not validate, by name, with the model's message: while there are any, no run
    # starts and nothing is injected (fail-safe: their guards, suspend and windows are unknown).
    invalid_policies: dict[str, str] = field(default_factory=dict)


class Driver(Protocol):
    """One experiment's driver as the gates see it (`engine.ExperimentDriver` is the one there is)."""

    context: OperatorContext
    body: Mapping[str, Any]
    status: ChaosExperimentStatus

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def generation(self) -> int: ...

    def now(self) -> datetime: ...

    def cache_is_live(self, *kinds: str) -> bool: ...

    async def world(self, spec: ChaosExperimentSpec) -> World: ...

    async def reject(self, reason: str, message: str, refusals: list[Refusal] | None = None) -> None: ...

    def schedule_next(self, spec: ChaosExperimentSpec) -> str: ...

    def set_condition(self, kind: str, value: ConditionStatus, reason: str, message: str) -> None: ...

    def save_before_waiting(self) -> None: ...

    async def save(self) -> None: ...

    def emit(self, kind: str, reason: str, message: str) -> None: ...
