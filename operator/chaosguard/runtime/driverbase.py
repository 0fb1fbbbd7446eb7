"""What every part of an experiment driver shares: its state (the object, its status as last read and
written, the guard it is under, the flags of an abort in progress), its identity, and the signatures
of the methods the parts call on one another (each part is a mixin of `engine.ExperimentDriver`,
which combines them; a stub here is only ever reached if that combination lost a part)."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chaosguard.api.models import ChaosExperimentSpec, ChaosExperimentStatus, ConditionStatus, Phase, RunStatus
from chaosguard.decisions.platform_guards import PlatformGuards
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.run_record import run_seal_problem
from chaosguard.decisions.selection import PodView, WorkloadState
from chaosguard.decisions.slo import Verdict
from chaosguard.runtime.context import OperatorContext, World
from chaosguard.runtime.guard import BreachFlag, GuardedRun
from chaosguard.runtime.logs import ExperimentLogger

DEFAULT_RECOVERY_TIMEOUT = 300.0
IDLE_POLL_SECONDS = 5.0
ACTIVE_POLL_SECONDS = 1.0
SAMPLE_BATCH_SECONDS = 5.0  # SLI samples reach status at most this often per run (and always at the end)
DEFAULT_GUARD_INTERVAL = 5.0
# What an end writes first (status fields, wire names): the result, and the run moved from currentRun to
# lastRun, which is what `kubectl get`, `apply --wait` and the other replicas read as "the run ended".
# History, conditions and the count of hits follow in a second write.
VERDICT_FIELDS = frozenset({"phase", "message", "currentRun", "lastRun", "nextRunAt"})


class RunEndedElsewhere(Exception):
    """Another replica ended the run this replica was acting for (a standby's abort)."""


class DriverBase:
    def __init__(self, context: OperatorContext, body: Mapping[str, Any], logger: logging.Logger | Any) -> None:
        self.context = context
        self.body = body  # kopf keeps this view live: spec and metadata follow the API
        self.status = ChaosExperimentStatus.model_validate(dict(body.get("status") or {}))
        self._vouched: list[RunStatus] | None = None  # see `vouched`
        # Every line carries the experiment and the run (fields of their own with --log-format json).
        self.logger = ExperimentLogger(logger, self.key, self.log_run_id)
        self.save_lock = asyncio.Lock()
        # What the API holds of our status, as we last wrote it: each save sends only the difference.
        self.written: dict[str, Any] = copy.deepcopy(dict(body.get("status") or {}))
        self.last_write = 0.0  # loop time of the last status write
        self.abort_requested = asyncio.Event()
        self._breach: tuple[str, BreachFlag] | None = None  # (run id, its flag): see `breach_flag`
        self.guarded: GuardedRun | None = None
        self.guarded_by: PlatformGuards | None = None  # the policy guards self.guarded holds the run to
        self.guards_in_cache: PlatformGuards | None = None  # as the cache showed them when last looked at
        self.samples_write: asyncio.Task[None] | None = None  # the SLI-sample batch in flight, if any
        self.unsaved = False  # a transition awaits its write (see save_before_waiting)
        self.bypassed: set[tuple[str, ...]] = set()  # watch caches found down: their reads go to the API
        self._parsed: tuple[int, ChaosExperimentSpec] | None = None  # (generation, spec)
        self.stopped: Any = False  # kopf's stop flag once `run` starts: the object is being deleted, or we exit
        # A standby follows the leader's writes: the resourceVersion whose status it last took up.
        self.adopted_version: str | None = None
        self.following = False  # stood by since it last led: leading starts from a fresh read
        self.last_verdict_at: datetime | None = None  # when this replica's guard last judged the run

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    def now(self) -> datetime:
        return self.context.clock.now()

    def log_run_id(self) -> str | None:
        """The run a log line belongs to: the one in progress, else the last one."""
        run = self.status.current_run or self.status.last_run
        return run.id if run is not None else None

    @property
    def halted(self) -> bool:
        """No fault may start: the run is being aborted (or its guard has decided to, on its own thread,
        or has stopped ticking) or paused (the live spec: a round in progress stops at its next target),
        or the operator/daemon is stopping."""
        return (
            self.abort_requested.is_set()
            or self.breach_decided
            or self.guard_stalled
            or bool(self.stopped)
            or bool((self.body.get("spec") or {}).get("paused"))
        )

    def breach_flag(self, run_id: str) -> BreachFlag:
        """The flag the guard's thread raises when it judges run `run_id` in breach; one per run, so a
        verdict judged for a run that has since ended never halts the next one."""
        if self._breach is None or self._breach[0] != run_id:
            self._breach = (run_id, BreachFlag())
        return self._breach[1]

    @property
    def breach_decided(self) -> bool:
        """The guard has judged the current run in breach: its abort is on its way to this loop."""
        run = self.status.current_run
        return run is not None and self._breach is not None and self._breach[0] == run.id and self._breach[1].is_set()

    @property
    def guard_stalled(self) -> bool:
        """The run is guarded, but the guard's loop has stopped ticking: nothing would see a breach."""
        return self.guarded is not None and self.context.guard.stalled()

    def seal_problem(self, run: RunStatus) -> str | None:
        return run_seal_problem(self.context.signing_key, str(self.body["metadata"].get("uid") or ""), run)

    @property
    def vouched(self) -> list[RunStatus]:
        """The runs this driver may act on: the ones it starts, and those it loaded from status whose seal
        verifies. Status is a record, never an authority: whoever may write it must not hand the operator a run."""
        if self._vouched is None:
            loaded = (self.status.current_run, self.status.last_run)
            self._vouched = [run for run in loaded if run is not None and self.seal_problem(run) is None]
        return self._vouched

    def vouches_for(self, run: RunStatus) -> bool:
        return any(run is own for own in self.vouched)

    def parsed_spec(self) -> ChaosExperimentSpec:
        """The spec as a model, validated once per generation (a running experiment steps every
        second; the spec only changes with the generation). Raises ValidationError."""
        generation = self.generation
        if self._parsed is None or self._parsed[0] != generation:
            self._parsed = (generation, ChaosExperimentSpec.model_validate(dict(self.body["spec"])))
        return self._parsed[1]

    def emit(self, kind: str, reason: str, message: str) -> None:
        raise NotImplementedError

    def adopt_status(self, raw: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def run_record_problem(self, run: RunStatus) -> str | None:
        raise NotImplementedError

    def cache_is_live(self, *kinds: str) -> bool:
        raise NotImplementedError

    async def world(self, spec: ChaosExperimentSpec) -> World:
        raise NotImplementedError

    async def fresh_world(self, spec: ChaosExperimentSpec) -> World:
        raise NotImplementedError

    async def restart_for_new_spec(self) -> None:
        raise NotImplementedError

    async def abort_on_request(self, reason: str) -> None:
        raise NotImplementedError

    async def reject(self, reason: str, message: str, refusals: list[Refusal] | None = None) -> None:
        raise NotImplementedError

    async def admit(self, spec: ChaosExperimentSpec) -> float:
        raise NotImplementedError

    async def wait_for_trigger(self, spec: ChaosExperimentSpec) -> float:
        raise NotImplementedError

    async def advance_run(self, spec: ChaosExperimentSpec) -> float:
        raise NotImplementedError

    async def run_ended_elsewhere(self) -> bool:
        raise NotImplementedError

    def stop_reason(self, world: World, now: datetime) -> Refusal | None:
        raise NotImplementedError

    def start_refusal(self, spec: ChaosExperimentSpec, world: World, now: datetime) -> Refusal | None:
        raise NotImplementedError

    def schedule_next(self, spec: ChaosExperimentSpec) -> str:
        raise NotImplementedError

    def note_pause(self, spec: ChaosExperimentSpec) -> None:
        raise NotImplementedError

    async def hold_for_pause(self, spec: ChaosExperimentSpec, run: RunStatus) -> float | None:
        raise NotImplementedError

    async def skip_paused_slot(self, spec: ChaosExperimentSpec, now: datetime) -> float:
        raise NotImplementedError

    async def remove_for_pause_as_standby(self, spec: ChaosExperimentSpec) -> None:
        raise NotImplementedError

    async def resolve_interrupted_round(self, run: RunStatus) -> None:
        raise NotImplementedError

    async def live_workload(self, victim: PodView) -> tuple[list[PodView], WorkloadState]:
        raise NotImplementedError

    async def track_recovery(self, run: RunStatus) -> bool:
        raise NotImplementedError

    async def track_late_recovery(self, spec: ChaosExperimentSpec) -> None:
        raise NotImplementedError

    async def finish_if_recovered(self, spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> float:
        raise NotImplementedError

    async def end_run(self, result: Phase, reason: str, message: str) -> None:
        raise NotImplementedError

    async def steady_state_refusal(self, spec: ChaosExperimentSpec, world: World, now: datetime) -> Refusal | None:
        raise NotImplementedError

    async def steady_state_after(self, spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> str | None:
        raise NotImplementedError

    def resume_guard(self, guards: PlatformGuards | None) -> None:
        raise NotImplementedError

    def stop_guard(self) -> None:
        raise NotImplementedError

    def write_samples_soon(self, run: RunStatus) -> None:
        raise NotImplementedError

    def record_samples(self, run: RunStatus, verdict: Verdict) -> None:
        raise NotImplementedError

    async def play_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        raise NotImplementedError

    async def settle_faults(self, spec: ChaosExperimentSpec, run: RunStatus) -> bool:
        raise NotImplementedError

    async def roll_back_faults(self, why: str = "abort") -> None:
        raise NotImplementedError

    def set_condition(self, kind: str, value: ConditionStatus, reason: str, message: str) -> None:
        raise NotImplementedError

    def save_before_waiting(self) -> None:
        raise NotImplementedError

    async def save(self, only: frozenset[str] | None = None, *, before_acting: bool = False) -> None:
        raise NotImplementedError
