"""The Fault protocol and the registry of fault kinds, by action.

A fault kind is one module that implements `Fault` and registers itself here; its facts (spec block,
permission, capabilities, repeating or once, destination checks, record kind, Event reasons) are its
row in the table of actions (`api.actions`). The generic round loop (`runtime.rounds`) does the rest
for every kind: pick the targets, judge each one live right before acting, record before acting,
dry run, the leader-only call, save, Event, deadline.

A kind answers only what differs between kinds:
- `preflight`: a refusal of the whole round before any target is touched (e.g. destinations);
- `record` / `refuse` / `would` / `prepare` / `fail` / `begin` / `apply` / `after` / `interrupted`: one
  target's attempt;
- `resume`: attempts a restart interrupted between the record and the call;
- `settle`: after each step, what became of what was applied (an injector that exited early);
- `recover`: take one of its faults out (an abort, the run's end, a deletion);
- `describe`: what the fault does, in a few words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from chaosguard.api.actions import ActionFacts, facts_of
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, KillRecord, Phase, RunStatus
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.selection import PodView, WorkloadState
from chaosguard.runtime.context import OperatorContext, World

Record = KillRecord | FaultRecord
Call = Callable[[], Awaitable[None]]  # the leader-only API call of one attempt, ready to make


class CannotPrepare(Exception):
    """The attempt cannot even be formed (e.g. settings the injector refuses): the target fails with this."""


@dataclass(frozen=True)
class Notice:
    """An Event to emit once the workload's lock is released."""

    kind: str  # Normal | Warning
    reason: str
    message: str


class Host(Protocol):
    """What a fault kind may use of the experiment's driver."""

    context: OperatorContext
    body: Mapping[str, Any]

    @property
    def key(self) -> str: ...

    @property
    def halted(self) -> bool:
        """No fault may start (aborting, its breach decided by the guard, paused, stopping)."""
        ...

    def now(self) -> datetime: ...

    def emit(self, kind: str, reason: str, message: str) -> None: ...

    async def save(self) -> None: ...

    async def end_run(self, result: Phase, reason: str, message: str) -> None: ...

    async def fresh_world(self, spec: ChaosExperimentSpec) -> World: ...

    async def live_workload(self, victim: PodView) -> tuple[list[PodView], WorkloadState]: ...


class Fault(Protocol):
    """One fault kind (see the module docstring)."""

    action: str

    @property
    def facts(self) -> ActionFacts: ...

    def records(self, run: RunStatus) -> list[Any]:
        """The run's records of this kind (kills or faults), in the order they were written."""
        ...

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None: ...

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        """This run's own faults in the victim's workload that the API cannot see as pods down."""
        ...

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None: ...

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        """The attempt's record, not yet in the run."""
        ...

    def refuse(self, run: RunStatus, record: Any, refusal: Refusal) -> str:
        """Records a live refusal in the run; returns the Event's message."""
        ...

    def would(self, run: RunStatus, record: Any, victim: PodView) -> str:
        """Records a dry run's attempt; returns the Event's message."""
        ...

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        """What `apply` needs, formed before anything is written; raises CannotPrepare."""
        ...

    def fail(self, run: RunStatus, record: Any, message: str) -> None:
        """Records an attempt that could not be formed (CannotPrepare) as failed."""
        ...

    def begin(self, run: RunStatus, record: Any) -> None:
        """Puts the record in the run as begun (written before the call: a restart must know of it)."""
        ...

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        """The leader-only API call; fills in the record and the run's count. Returns the Events to emit."""
        ...

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        """Anything more once the attempt is recorded and the workload's lock released (an Event elsewhere)."""
        ...

    def interrupted(self, record: Any) -> None:
        """This replica stopped leading before the call: the record says it was not done."""
        ...

    async def resume(self, host: Host, run: RunStatus) -> bool:
        """Resolves attempts recorded as begun but never finished (a restart); True if any changed."""
        ...

    async def settle(self, host: Host, run: RunStatus) -> bool:
        """After each step: what became of the applied faults; True when it ended the run."""
        ...

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        """Takes one of this kind's faults out, or records that its own deadline did; never raises."""
        ...

    def describe(self, spec: ChaosExperimentSpec) -> str: ...


class KeepsFaultRecords:
    """`refuse`, `would`, `fail` and `begin` for a kind whose records are FaultRecords in run.faults: it
    says only how a refused attempt reads (`not_done`) and what a dry run would have done (`would_do`)."""

    not_done = "not injected"

    def would_do(self, record: Any, victim: PodView) -> str:
        raise NotImplementedError

    def refuse(self, run: RunStatus, record: Any, refusal: Refusal) -> str:
        record.state, record.message = FaultState.FAILED, f"{self.not_done}: {refusal}"
        run.faults.append(record)
        return str(record.message)

    def would(self, run: RunStatus, record: Any, victim: PodView) -> str:
        record.state, record.message = FaultState.WOULD_INJECT, f"dry run: {self.would_do(record, victim)}"
        run.faults.append(record)
        return str(record.message)

    def fail(self, run: RunStatus, record: Any, message: str) -> None:
        record.state, record.message = FaultState.FAILED, message
        run.faults.append(record)

    def begin(self, run: RunStatus, record: Any) -> None:
        run.faults.append(record)  # Injecting: a restart finds it (resume)

    async def end_if_none_in(self, host: Host, run: RunStatus, changed: bool, reason: str, none_in: str) -> bool:
        """The end of a `settle`: a run whose every fault failed ends Failed (`reason`; the message says
        `none_in` and the first fault's reason); otherwise what changed is saved. True when it ended the run."""
        if not run.faults or any(f.state is not FaultState.FAILED for f in run.faults):
            if changed:
                await host.save()
            return False
        await host.end_run(Phase.FAILED, reason, f"run {run.id}: {none_in}: {run.faults[0].message}")
        return True


@runtime_checkable
class TargetsNodes(Protocol):
    """A kind whose targets are nodes, not pods (node-drain). The round loop asks it for the round's nodes
    (as target views: namespace "", the node's name, UID and labels) and for each node's live refusal,
    after the loop's own checks (suspension, windows, invalid policies); the rest of the attempt (record
    before acting, dry run, the leader-only call, deadline) is the loop's, as for pods."""

    async def pick_nodes(self, host: Host, spec: ChaosExperimentSpec, world: World, run: RunStatus) -> list[PodView]:
        """The run's nodes, chosen reproducibly and recorded in run.targets."""
        ...

    async def node_refusal(self, host: Host, spec: ChaosExperimentSpec, world: World, node: PodView) -> Refusal | None:
        """Why this node may not be drained right now (read fresh), or None."""
        ...


_KINDS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    """Registers a fault kind under its action; its row in the table of actions must exist already."""
    facts_of(fault.action)  # raises for an action without a row
    if fault.action in _KINDS:
        raise ValueError(f"a fault kind is already registered for {fault.action!r}")
    _KINDS[fault.action] = fault
    return fault


def unregister(action: str) -> None:
    _KINDS.pop(action, None)


class UnknownFaultKind(LookupError):
    """An action with no fault kind registered: a programming error, never defaulted."""


def fault_for(action: str) -> Fault:
    fault = _KINDS.get(str(action))
    if fault is None:
        raise UnknownFaultKind(f"no fault kind is registered for action {str(action)!r}")
    return fault


def fault_for_record(fault: FaultRecord) -> Fault | None:
    """The kind that placed a fault record, by its record kind; None for a record no kind claims."""
    return next((kind for kind in _KINDS.values() if kind.facts.record_kind == fault.kind), None)


def registered() -> dict[str, Fault]:
    return dict(_KINDS)


def placed_by_run(run: RunStatus, fault: FaultRecord) -> bool:
    """Whether a clean-up may act on this record of the run: a fault in one of the run's target namespaces,
    or on a cluster-scoped object (a node), whose kind takes it out only where its own mark names the run.
    An entry someone else wrote into status must never send a clean-up container into their pod."""
    kind = fault_for_record(fault)
    return fault.namespace in run.target_namespaces or (kind is not None and kind.facts.cluster_scoped)
