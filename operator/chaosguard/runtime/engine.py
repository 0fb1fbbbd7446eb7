"""Drives one ChaosExperiment through its lifecycle; the kopf daemon in `handlers` runs one per object.

Pending -> (AwaitingApproval) -> Scheduled -> Running -> Completed | Aborted | Failed, or Rejected.
All state lives in the object's status, which is written before and after every kill: an
operator restarted at any moment resumes the run from status, never repeats a kill recorded as
begun, and never kills past the deadline. Decisions come from the pure modules (policy,
selection, windows); this module only sequences them with the API calls in `kube`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import random
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from chaosguard.api.durations import format_seconds, to_seconds
from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import (
    ABORT_ANNOTATION,
    ChaosExperimentSpec,
    ChaosExperimentStatus,
    ChaosPolicy,
    Condition,
    ConditionStatus,
    FaultRecord,
    FaultState,
    KillRecord,
    KillResult,
    Phase,
    RunStatus,
    SliAbort,
    TargetRecord,
)
from chaosguard.clients import informers
from chaosguard.clients.informers import CacheNotReady
from chaosguard.clients.kube import Cluster, api_message
from chaosguard.decisions import windows
from chaosguard.decisions.mergepatch import json_patch_operations, merge_patch
from chaosguard.decisions.netem import NetemArgumentError
from chaosguard.decisions.platform_guards import (
    GuardKind,
    PlatformCondition,
    PlatformGuards,
    breach_text,
    budget_refusal_text,
    burn_rate_condition,
    platform_guards,
    unmeasured_text,
)
from chaosguard.decisions.platform_guards import Phase as GuardPhase
from chaosguard.decisions.policy import (
    Refusal,
    applicable_policies,
    combine,
    concurrency_refusal,
    destination_refusals,
    static_refusals,
    suspension_refusal,
    target_namespaces,
    time_refusal,
)
from chaosguard.decisions.run_record import run_seal_problem, seal_run
from chaosguard.decisions.selection import (
    PodView,
    WorkloadState,
    after_kill,
    choose,
    classify,
    kill_refusal,
    pod_refusal,
    recovered_at,
    requested_count,
    workload_states,
)
from chaosguard.decisions.slo import ConditionStatus as SliStatus
from chaosguard.decisions.slo import (
    EvidencePoint,
    GuardState,
    Verdict,
    VerdictKind,
    append_capped,
    format_labels,
    format_value,
    merge_samples,
)
from chaosguard.decisions.stamps import spec_hash
from chaosguard.runtime import faults, gates, lanes, metrics
from chaosguard.runtime.context import OperatorContext, World
from chaosguard.runtime.faults import clear_fault
from chaosguard.runtime.guard import GuardedRun, SteadyStateProbe
from chaosguard.runtime.leadership import NotLeading
from chaosguard.runtime.logs import ExperimentLogger

MAX_KILL_RECORDS = 100
MAX_SLI_POINTS = 60
DEFAULT_RECOVERY_TIMEOUT = 300.0
IDLE_POLL_SECONDS = 5.0
ACTIVE_POLL_SECONDS = 1.0
SAMPLE_BATCH_SECONDS = 5.0  # SLI samples reach status at most this often per run (and always at the end)
DEFAULT_GUARD_INTERVAL = 5.0
# Refusals a one-shot experiment waits out (re-checked every poll) instead of being rejected, with
# the reason of its Started condition: too many running, or a policy guard that may pass.
WAIT_RULES = {
    "max-concurrent-experiments": "TooManyRunning",
    "error-budget": "ErrorBudgetLow",
    "burn-rate": "BurnRateHigh",
    "quiet-alerts": "AlertsFiring",
    "policy-steady-state": "PolicySteadyStateNotHeld",
    "invalid-policy": "PolicyInvalid",
}
GUARD_RULES = {
    GuardKind.BUDGET: "error-budget",
    GuardKind.BURN_RATE: "burn-rate",
    GuardKind.QUIET_ALERTS: "quiet-alerts",
    GuardKind.CONDITION: "policy-steady-state",
}
GUARD_REASONS = {  # an abort's reason, for Events, status and metrics
    GuardKind.BUDGET: "ErrorBudgetLow",
    GuardKind.BURN_RATE: "BurnRateExceeded",
    GuardKind.QUIET_ALERTS: "AlertFiring",
    GuardKind.CONDITION: "PolicySLIBreached",
}


class RunEndedElsewhere(Exception):
    """Another replica ended the run this replica was acting for (a standby's abort)."""


class ExperimentDriver:
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

    # ------------------------------------------------------------------ identity

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

    # ------------------------------------------------------------------ main loop

    @property
    def halted(self) -> bool:
        """No fault may start: the run is being aborted, or the operator/daemon is stopping."""
        return self.abort_requested.is_set() or bool(self.stopped)

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

    async def run(self, stopped: Any) -> None:
        self.stopped = stopped
        if not self.context.leadership.leading:
            pass  # a standby acts on nothing before its first step; `stand_by` guards what verifies
        elif self.status.phase is Phase.RUNNING:
            await self.resume()
        else:
            # A fault of a run that is over (the operator died before taking it out) goes now.
            await self.roll_back_faults("operator restart")
        try:
            while not stopped:
                try:
                    delay = await self.step()
                    if delay > 0 and self.unsaved:
                        await self.save()
                except Exception as error:  # a failing API call must not kill the guard loop
                    self.logger.exception("step failed; retrying: %s", error)
                    delay = ACTIVE_POLL_SECONDS * 5
                if self.context.leadership.leading:
                    await stopped.wait(delay)
                else:
                    await self.doze(stopped, delay)
        finally:
            self.context.running.discard(self.key)
            self.context.wakeups.pop(self.key, None)
            self.stop_guard()

    async def doze(self, stopped: Any, delay: float) -> None:
        """A standby's wait: until `delay` passes, the daemon stops, or the object changes (the leader
        started or ended a run), whichever comes first, so that it guards a run from its first tick."""
        wake = self.context.wakeups.setdefault(self.key, asyncio.Event())
        if not wake.is_set():
            waits = {asyncio.ensure_future(stopped.wait(delay)), asyncio.ensure_future(wake.wait())}
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
        wake.clear()

    async def resume(self) -> None:
        """Takes up a run found Running in status (a restart, a hand-over): only one whose sealed record
        verifies, and whose spec is the one it started with, is resumed."""
        resumed = self.status.current_run
        if resumed is not None and not self.vouches_for(resumed):
            await self.end_unverified_run(resumed)
        elif resumed is not None and resumed.spec_hash != spec_hash(self.body["spec"]):
            await self.restart_for_new_spec()  # edited while no operator was watching
        else:
            self.context.running.add(self.key)
            self.resume_guard(None)

    async def end_unverified_run(self, run: RunStatus) -> None:
        """A run in status that the operator cannot prove it wrote is ended, never acted on: nothing is
        killed or injected for it, and the faults it lists are left alone (they are no evidence of what the
        operator placed; a fault it did place ends at its injector's own deadline)."""
        self.abort_requested.set()
        problem = self.seal_problem(run) or "its record is not the operator's"
        message = (
            f"run {run.id} was not resumed: {problem}. Nothing was killed or injected for it, and the faults "
            "its record lists were not touched; apply the experiment again to run it"
        )
        try:
            await self.end_run(Phase.ABORTED, "RunRecordUnverified", message)
        except ValidationError:  # an invalid spec: the next step rejects it; the run must not be resumed meanwhile
            self.emit("Warning", "RunRecordUnverified", message)
            self.status.current_run = None

    def parsed_spec(self) -> ChaosExperimentSpec:
        """The spec as a model, validated once per generation (a running experiment steps every
        second; the spec only changes with the generation). Raises ValidationError."""
        generation = self.generation
        if self._parsed is None or self._parsed[0] != generation:
            self._parsed = (generation, ChaosExperimentSpec.model_validate(dict(self.body["spec"])))
        return self._parsed[1]

    async def step(self) -> float:
        """Advances the experiment by at most one transition; returns how long to wait."""
        if not self.context.leadership.leading:
            return await self.stand_by()
        try:
            return await self.lead()
        except RunEndedElsewhere as ended:
            self.logger.info("%s", ended)
            return 0.0

    async def stand_by(self) -> float:
        """A replica that does not lead only guards: it follows the run the leader records and aborts
        it on a breach (an abort only takes faults out); it never admits, starts, kills or injects.
        It wakes on every change of the object (`doze`), and parses the status only when the run in it
        changes: an abort reads the run fresh from the API anyway."""
        self.following = True
        raw = self.body.get("status") or {}
        run_id = (raw.get("currentRun") or {}).get("id")
        known = self.status.current_run
        if raw.get("phase") != self.status.phase or run_id != (known.id if known is not None else None):
            self.adopt_status_from_body()
        run = self.status.current_run
        try:
            spec = self.parsed_spec()
        except ValidationError:
            spec = None
        if spec is None or self.status.phase is not Phase.RUNNING or run is None or run.deadline is None:
            self.stop_guard()
            return IDLE_POLL_SECONDS
        problem = self.run_record_problem(run)
        if problem is not None:  # the leader ends such a run; nothing here acts on it
            self.stop_guard()
            return IDLE_POLL_SECONDS
        world = await self.world(spec)
        if self.guarded is None or (not world.invalid_policies and world.guards != self.guards_in_cache):
            self.guards_in_cache = world.guards
            self.resume_guard(world.guards)
        return ACTIVE_POLL_SECONDS

    def adopt_status_from_body(self) -> None:
        """Takes up the status as the API holds it (kopf keeps `body` live), keeping this replica's own
        guard state and samples of the same run: they are newer than the leader's last batch."""
        version = str(self.body["metadata"].get("resourceVersion") or "")
        if version and version == self.adopted_version:
            return
        self.adopt_status(dict(self.body.get("status") or {}))
        self.adopted_version = version

    def adopt_status(self, raw: Mapping[str, Any]) -> None:
        previous = self.status.current_run
        self.status = ChaosExperimentStatus.model_validate(dict(raw))
        self.written = copy.deepcopy(dict(raw))
        self._vouched = None  # what this replica may act on is judged anew, by the seals
        run = self.status.current_run
        if previous is not None and run is not None and previous.id == run.id:
            # This replica's own guard state is the newest; its samples and the other replica's make one
            # series, so a hand-over leaves no hole in the run's SLI record.
            run.sli_state = previous.sli_state
            run.sli_samples = merge_samples(previous.sli_samples, run.sli_samples, MAX_SLI_POINTS)

    def run_record_problem(self, run: RunStatus) -> str | None:
        """Why this run's record is not to be acted on, or None (see decisions.run_record)."""
        if self.vouches_for(run):
            return None
        return self.seal_problem(run) or "the record is not one this replica took up"

    async def lead(self) -> float:
        if self.following:
            # Leading from now on: take up the status as it is (a standby's view may lag behind the
            # leader that was), then write it as this replica's own.
            fresh = await self.context.api.call(Cluster.experiment, self.namespace, self.name)
            if fresh is not None:
                self.adopt_status(dict(fresh.get("status") or {}))
            self.adopted_version, self.following = None, False
            if self.status.phase is Phase.RUNNING:
                await self.resume()
            else:
                await self.roll_back_faults("hand-over")  # a fault of a run that is over goes now
        if await self.run_ended_elsewhere():
            return 0.0
        try:
            spec = self.parsed_spec()
        except ValidationError as error:
            if self.status.phase is not Phase.REJECTED or self.status.observed_generation != self.generation:
                problems = describe_validation_error(error, prefix="spec")
                await self.reject("InvalidSpec", "the spec is invalid: " + "; ".join(problems))
            return IDLE_POLL_SECONDS

        if self.status.observed_generation not in (None, self.generation):
            await self.restart_for_new_spec()

        requested = (self.body["metadata"].get("annotations") or {}).get(ABORT_ANNOTATION)
        if requested is not None:
            await self.abort_on_request(str(requested))

        phase = self.status.phase
        if phase is Phase.RUNNING:
            return await self.advance_run(spec)
        await self.track_late_recovery(spec)
        if phase is None:
            self.status.phase = Phase.PENDING
            self.status.message = "the spec is valid; checking it against policy"
            self.set_condition("Admitted", "Unknown", "Checking", self.status.message)
            self.save_before_waiting()
            self.emit("Normal", "Pending", self.status.message)
            return 0.0
        if phase is Phase.PENDING:
            return await self.admit(spec)
        if phase is Phase.AWAITING_APPROVAL:
            return await gates.await_approvals(self, spec)
        if phase is Phase.SCHEDULED:
            return await self.wait_for_trigger(spec)
        return IDLE_POLL_SECONDS

    # ------------------------------------------------------------------ world

    def cache_is_live(self, *kinds: str) -> bool:
        """Whether these watch caches are synced and connected: a decision reads them only then,
        and reads the API instead while a watch is down (when unsure, ask; never guess)."""
        try:
            self.context.cache.require_fresh(*kinds)
        except CacheNotReady as error:
            if kinds not in self.bypassed:  # said once per outage, not on every step
                self.logger.warning("reading from the API instead of the cache: %s", error)
            self.bypassed.add(kinds)
            return False
        if kinds in self.bypassed:
            self.logger.info("the watch caches of %s are live again; reading from them", ", ".join(kinds))
            self.bypassed.discard(kinds)
        return True

    async def world(self, spec: ChaosExperimentSpec) -> World:
        """The policies and namespace labels as the watch-backed cache has them (every step)."""
        if not self.cache_is_live(informers.NAMESPACES, informers.POLICIES):
            return await self.fresh_world(spec)
        cache = self.context.cache
        namespaces = {*target_namespaces(spec, self.namespace), self.namespace}
        return self.world_of(spec, cache.policies(), cache.labels_of(namespaces), cache.invalid_policies())

    async def fresh_world(self, spec: ChaosExperimentSpec) -> World:
        """The same, read from the API right now: a kill cannot be undone, so the policy and the
        labels it is judged by must be the current ones, not the cache's view of a moment ago."""
        namespaces = sorted({*target_namespaces(spec, self.namespace), self.namespace})
        policies = asyncio.ensure_future(self.context.api.call(Cluster.policies_checked))
        labels = await asyncio.gather(
            *(self.context.api.call(Cluster.namespace_labels_of, namespace) for namespace in namespaces)
        )
        known = {namespace: found for namespace, found in zip(namespaces, labels, strict=True) if found is not None}
        valid, invalid = await policies
        return self.world_of(spec, valid, known, invalid)

    def world_of(
        self,
        spec: ChaosExperimentSpec,
        policies: list[ChaosPolicy],
        labels: dict[str, dict[str, str]],
        invalid: dict[str, str] | None = None,
    ) -> World:
        targets = target_namespaces(spec, self.namespace)
        chosen = applicable_policies(policies, [*targets, self.namespace], labels)
        guards = platform_guards(chosen, targets)
        return World(combine(chosen, self.context.operator_namespace), labels, guards, dict(invalid or {}))

    # ------------------------------------------------------------------ transitions

    async def restart_for_new_spec(self) -> None:
        if self.status.current_run is not None:
            await self.end_run(Phase.ABORTED, "SpecChanged", "the spec was edited during the run, so the run stopped")
        self.status.phase = Phase.PENDING
        self.status.next_run_at = None
        self.status.message = "the spec changed; checking it again"
        self.status.observed_generation = self.generation
        await self.save()

    async def abort_on_request(self, reason: str) -> None:
        """`chaosguard abort`: ends the current run (the schedule, if any, goes on) and clears the request."""
        why = reason or "no reason given"
        if self.status.current_run is not None:
            self.abort_requested.set()
            with lanes.urgent():
                await self.roll_back_faults("abort on request")
                await self.end_run(Phase.ABORTED, "AbortRequested", f"aborted on request: {why}")
        else:
            self.emit("Normal", "AbortRequested", f"abort requested ({why}), but no run was in progress")
        await self.context.api.call(Cluster.remove_experiment_annotation, self.namespace, self.name, ABORT_ANNOTATION)

    async def reject(self, reason: str, message: str, refusals: list[Refusal] | None = None) -> None:
        self.status.phase = Phase.REJECTED
        self.status.message = message
        self.status.observed_generation = self.generation
        self.set_condition("Admitted", "False", reason, message)
        await self.save()
        self.emit("Warning", reason, message)

    async def admit(self, spec: ChaosExperimentSpec) -> float:
        world = await self.world(spec)
        refusals = static_refusals(spec, self.namespace, world.effective, world.namespace_labels)
        if refusals:
            await self.reject("PolicyRefused", "; ".join(str(r) for r in refusals), refusals)
            return IDLE_POLL_SECONDS
        refusal = await gates.identity_refusal(self, spec, world)
        if refusal is not None:
            await self.reject(refusal.reason, str(refusal), [refusal])
            return IDLE_POLL_SECONDS
        if world.effective.approvals:
            return await gates.enter_awaiting(self, spec)
        self.status.observed_generation = self.generation
        self.set_condition("Admitted", "True", "PolicyAllows", "every applicable policy allows this experiment")
        when = self.schedule_next(spec)
        self.status.message = when if spec.schedule is not None else f"admitted; {when}"
        self.save_before_waiting()
        self.emit("Normal", "Admitted", self.status.message)
        return 0.0

    def schedule_next(self, spec: ChaosExperimentSpec) -> str:
        """Moves to Scheduled, with the next cron fire for a game day; says when the run starts."""
        self.status.phase = Phase.SCHEDULED
        if spec.schedule is None:
            self.status.next_run_at = None
            return "starting"
        self.status.next_run_at = windows.next_fire(spec.schedule.cron, spec.schedule.time_zone, self.now())
        return f"next run at {self.status.next_run_at.isoformat()}"

    async def wait_for_trigger(self, spec: ChaosExperimentSpec) -> float:
        now = self.now()
        trigger = self.status.next_run_at
        if trigger is not None and now < trigger:
            return min(IDLE_POLL_SECONDS, (trigger - now).total_seconds())
        world = await self.world(spec)
        refusal = self.start_refusal(spec, world, now)
        if refusal is None:
            refusal = await gates.identity_refusal(self, spec, world)
        if refusal is None and not await gates.approvals_hold(self, spec, world):
            return 0.0
        if refusal is None:
            # Counting and taking the slot happen under one lock, so two experiments can never both
            # take the last one; the slot is held while the before-check asks Prometheus.
            async with self.context.start_lock:
                refusal = concurrency_refusal(world.effective, await self.running_elsewhere())
                if refusal is None:
                    self.context.running.add(self.key)
            if refusal is None:
                try:
                    # The owners' guards as they are now, not as cached: a policy applied a moment
                    # ago must already hold the run that starts now.
                    self.guards_in_cache = world.guards
                    world = await self.fresh_world(spec)
                    refusal = invalid_policy_refusal(world) or await self.steady_state_refusal(spec, world, now)
                    if refusal is None:
                        await self.start_run(spec, world, now)
                        return 0.0
                finally:
                    if self.status.current_run is None:
                        self.context.running.discard(self.key)
        if refusal.rule in WAIT_RULES and spec.schedule is None:
            if self.status.message != f"waiting: {refusal}":
                # An Event when the reason to wait changes, not each time its figures move.
                started = next((c for c in self.status.conditions if c.type == "Started"), None)
                announce = started is None or started.reason != WAIT_RULES[refusal.rule]
                self.status.message = f"waiting: {refusal}"
                self.set_condition("Started", "False", WAIT_RULES[refusal.rule], refusal.message)
                await self.save()
                if announce:
                    kind = "Normal" if refusal.rule == "max-concurrent-experiments" else "Warning"
                    self.emit(kind, "Waiting", refusal.message)
            return IDLE_POLL_SECONDS
        if spec.schedule is None and refusal.rule == "steady-state":
            await self.start_run(spec, world, now)
            await self.end_run(Phase.ABORTED, "SteadyStateNotHeld", refusal.message)
            return IDLE_POLL_SECONDS
        if spec.schedule is None:
            await self.reject(refusal.reason, str(refusal), [refusal])
            return IDLE_POLL_SECONDS
        # A scheduled trigger that may not run is skipped, and the next one awaited.
        skipped_at = trigger or now
        self.status.next_run_at = windows.next_fire(spec.schedule.cron, spec.schedule.time_zone, now)
        self.status.message = (
            f"skipped the run due at {skipped_at.isoformat()}: {refusal}; next run at "
            f"{self.status.next_run_at.isoformat()}"
        )
        await self.save()
        self.emit("Warning", "RunSkipped", self.status.message)
        return 0.0

    def start_refusal(self, spec: ChaosExperimentSpec, world: World, now: datetime) -> Refusal | None:
        invalid = invalid_policy_refusal(world)
        if invalid is not None:
            return invalid
        refusals = static_refusals(spec, self.namespace, world.effective, world.namespace_labels)
        if refusals:
            return refusals[0]
        return time_refusal(world.effective, now)

    async def running_elsewhere(self) -> int:
        """Runs in progress besides this one: what the cache says is Running, and this process's
        own starts that the cache may not have seen yet (counting one twice only ever refuses)."""
        if self.cache_is_live(informers.EXPERIMENTS):
            keys = self.context.cache.running_experiments()
        else:
            items = await self.context.api.call(Cluster.experiments)
            keys = informers.running_keys(informers.project_experiment(item) for item in items)
        return len((keys | self.context.running) - {self.key})

    async def start_run(self, spec: ChaosExperimentSpec, world: World, now: datetime) -> None:
        self.status.runs_total += 1
        run_id = f"r{self.status.runs_total}-{now:%Y%m%dT%H%M%SZ}"
        deadline = now + timedelta(seconds=spec.duration_seconds)
        self.status.current_run = RunStatus(
            id=run_id,
            trigger="schedule" if spec.schedule is not None else "apply",
            phase=Phase.RUNNING,
            started_at=now,
            deadline=deadline,
            next_round_at=now,
            spec_hash=spec_hash(self.body["spec"]),
            target_namespaces=target_namespaces(spec, self.namespace),
        )
        self._vouched = [run for run in self.vouched if run is self.status.last_run] + [self.status.current_run]
        self.status.phase = Phase.RUNNING
        self.status.message = f"run {run_id} until {deadline.isoformat()}"
        self.set_condition("Started", "True", "RunStarted", self.status.message)
        self.context.running.add(self.key)
        self.abort_requested.clear()
        self.save_before_waiting()  # the run's first round writes it, before anything is touched
        metrics.ACTIVE_RUNS.inc()
        self.resume_guard(world.guards)
        dry = " (dry run: nothing is touched)" if spec.dry_run else ""
        self.emit("Normal", "RunStarted", f"run {run_id} started{dry}; deadline {deadline.isoformat()}")

    async def advance_run(self, spec: ChaosExperimentSpec) -> float:
        run = self.status.current_run
        if run is None or run.deadline is None:
            self.status.phase = Phase.PENDING
            await self.save()
            return 0.0
        if self.abort_requested.is_set():
            return ACTIVE_POLL_SECONDS  # the guard is ending the run
        self.context.running.add(self.key)
        now = self.now()
        world = await self.world(spec)
        # A policy that does not validate is missing from world.guards: while there is one the run
        # keeps the guards it has (never fewer because a policy became unreadable), and
        # live_refusal refuses every kill and injection until it is fixed.
        if not world.invalid_policies and world.guards != self.guards_in_cache:
            # A policy guard added, changed or removed mid-run holds from now on. Only a change the
            # cache shows counts: the guards the run started with were read fresh, and a cache that
            # has not caught up with them yet must not replace them with older ones.
            self.guards_in_cache = world.guards
            self.resume_guard(world.guards)
        stop = self.stop_reason(world, now)
        if stop is not None:
            await self.end_run(Phase.ABORTED, stop.reason, str(stop))
            return 0.0
        await self.resolve_interrupted_round(run)
        if self.awaits_fresh_verdict(run):
            return ACTIVE_POLL_SECONDS / 10
        if run.next_round_at is not None and now >= run.next_round_at and now < run.deadline:
            if spec.action.is_network_fault:
                await self.inject_round(spec, world, run, now)
            else:
                await self.kill_round(spec, world, run, now)
        if spec.action.is_network_fault and await self.settle_injectors(run):
            return 0.0
        if await self.track_recovery(run):
            await self.save()
        now = self.now()
        if now >= run.deadline:
            return await self.finish_if_recovered(spec, run, now)
        upcoming = [run.deadline, *([run.next_round_at] if run.next_round_at else [])]
        return max(0.05, min(ACTIVE_POLL_SECONDS, *((t - now).total_seconds() for t in upcoming)))

    def awaits_fresh_verdict(self, run: RunStatus) -> bool:
        """A run this replica took over (it started before this replica led) is guarded by a verdict
        judged since then before anything more is killed or injected for it: a breach that came while
        leadership changed hands aborts it first."""
        since = self.context.leadership.since
        if self.guarded is None or since is None or run.started_at is None or run.started_at >= since:
            return False
        return self.last_verdict_at is None or self.last_verdict_at < since

    async def run_ended_elsewhere(self) -> bool:
        """Whether another replica ended this replica's current run (a standby's abort): then its
        record is taken up as it stands, and nothing more is done for the run."""
        run = self.status.current_run
        if run is None:
            return False
        raw = self.body.get("status") or {}
        current = (raw.get("currentRun") or {}).get("id")
        last = (raw.get("lastRun") or {}).get("id")
        if current == run.id or last != run.id:
            return False
        await self.clear_left_behind(run, self.take_up_remote_end(run, raw))
        return True

    async def clear_left_behind(self, run: RunStatus, left: list[FaultRecord]) -> None:
        """Faults this replica placed after another replica's abort read the run (an injector added
        while it was ending the run) go too."""
        if not left:
            return
        with lanes.urgent():
            for fault in left:
                await clear_fault(self.context.api, fault, run.id, self.key, "abort", self.now, faults.injector_image())
                self.logger.warning("cleared %s in %s/%s after the run ended", fault.kind, fault.namespace, fault.name)

    def take_up_remote_end(self, run: RunStatus, raw: Mapping[str, Any]) -> list[FaultRecord]:
        """The run ended elsewhere: stop guarding and acting for it and adopt that record. Returns the
        faults this replica placed that the record does not show as taken out (the caller clears them)."""
        self.abort_requested.set()
        self.stop_guard()
        self.context.running.discard(self.key)
        placed = [f for f in run.faults if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
        self.adopt_status(raw)
        ended = self.status.last_run
        removed = {(f.uid, f.container) for f in (ended.faults if ended else []) if f.state is FaultState.REMOVED}
        self.emit_gauges_cleared()
        return [f for f in placed if (f.uid, f.container) not in removed]

    def emit_gauges_cleared(self) -> None:
        publish_fault_gauges(self.key, None)

    def stop_reason(self, world: World, now: datetime) -> Refusal | None:
        if world.effective.suspended_by:
            return suspension_refusal(world.effective)
        refusal = time_refusal(world.effective, now)
        if refusal is not None:
            return Refusal(refusal.rule, "the run was stopped: " + refusal.message, refusal.field)
        return None

    # ------------------------------------------------------------------ kills

    async def resolve_interrupted_round(self, run: RunStatus) -> None:
        """A kill recorded as begun but not finished (the operator died in between) is never redone."""
        pending = [kill for kill in run.kills if kill.result is KillResult.FAILED and kill.method == "pending"]
        if not pending:
            return
        for kill in pending:
            pods = await self.context.api.call(Cluster.pods, kill.namespace)
            alive = next((pod for pod in pods if pod.uid == kill.uid and not pod.terminating), None)
            if alive is None:
                kill.result, kill.method = KillResult.KILLED, "eviction"
                kill.message = "the kill went through before the operator restarted"
            else:
                kill.result, kill.method = KillResult.GONE, "interrupted"
                kill.message = "the operator restarted before this kill; it was not repeated"
        await self.save()

    async def pick_targets(
        self, spec: ChaosExperimentSpec, world: World, run: RunStatus, round_number: int, label: str
    ) -> list[PodView]:
        """The round's targets, chosen reproducibly (seeded by experiment, run and round) and recorded."""
        pods: list[PodView] = []
        for namespace in target_namespaces(spec, self.namespace):
            pods.extend(self.context.cache.pods(namespace))
        eligibility = classify(pods, spec.target.selector, world.effective, world.namespace_labels)
        count = requested_count(spec.target, len(eligibility.eligible))
        seed = f"{self.body['metadata'].get('uid')}/{run.id}/{round_number}"
        chosen = choose(eligibility.eligible, count, random.Random(seed))
        run.targets = [
            TargetRecord(namespace=p.namespace, name=p.name, uid=p.uid, workload=p.workload or "") for p in chosen
        ]
        if not chosen:
            reasons = sorted({exclusion.refusal.rule for exclusion in eligibility.excluded})
            detail = f" (left out by: {', '.join(reasons)})" if reasons else ""
            self.emit("Warning", "NoTargets", f"{label}no eligible pod matched{detail}")
        return chosen

    async def live_refusal(
        self, spec: ChaosExperimentSpec, victim: PodView, min_available: int | str | None, already_down: int = 0
    ) -> Refusal | None:
        """Judged right before acting (call it under the workload's lock), from fresh reads, never
        the cache: the policies and namespace labels as they are now, and the workload's live pods.
        No suspension or closed window; the pod still there and eligible; one more pod down still
        within the cap and the minimum-available floor. `already_down` counts this run's own
        faults the API cannot see."""
        (live, state), world = await asyncio.gather(self.live_workload(victim), self.fresh_world(spec))
        stop = invalid_policy_refusal(world) or self.stop_reason(world, self.now())
        if stop is not None:
            return stop
        current = next((pod for pod in live if pod.uid == victim.uid), None)
        if current is None:
            return Refusal("gone", f"pod {victim.key} is gone")
        for _ in range(already_down):
            state = after_kill(state)
        return pod_refusal(current, world.effective, world.namespace_labels) or kill_refusal(
            current, state, world.effective, min_available
        )

    async def kill_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        round_number = run.rounds_done
        chosen = await self.pick_targets(spec, world, run, round_number, f"round {round_number + 1}: ")
        # The round counts as done before its first kill: an operator that dies mid-round resumes
        # with the next round, so a round can leave pods untouched but never kill twice.
        run.rounds_done = round_number + 1
        run.next_round_at = next_round_time(spec, run, now)
        await self.save()
        for victim in chosen:
            if self.halted or self.now() >= (run.deadline or now):
                break
            await self.kill_one(spec, world, run, victim, round_number)

    async def kill_one(
        self, spec: ChaosExperimentSpec, world: World, run: RunStatus, victim: PodView, round_number: int
    ) -> None:
        workload_key = victim.workload_key or victim.key
        async with self.context.workload_lock(workload_key):
            refusal = await self.live_refusal(spec, victim, spec.pod_kill_settings.min_available)
            record = KillRecord(
                namespace=victim.namespace,
                name=victim.name,
                uid=victim.uid,
                workload=victim.workload or "",
                at=self.now(),
                result=KillResult.FAILED,
                round=round_number + 1,
            )
            if refusal is not None:
                record.result = {
                    "max-percentage": KillResult.CAPPED,
                    "min-available": KillResult.SKIPPED_MIN_AVAILABLE,
                    "gone": KillResult.GONE,
                }.get(refusal.rule, KillResult.CAPPED)
                record.method = "none"
                record.message = str(refusal)
                self.append_kill(run, record)
                await self.save()
                self.emit("Normal", "KillSkipped", record.message)
                return
            if spec.dry_run:
                record.result, record.method = KillResult.WOULD_KILL, "dry-run"
                record.message = f"dry run: would kill {victim.key} ({victim.workload})"
                self.append_kill(run, record)
                await self.save()
                self.emit("Normal", "WouldKill", record.message)
                return
            if self.halted:
                return
            # Written before the kill: a restart in between must not kill twice.
            record.method = "pending"
            self.append_kill(run, record)
            await self.save()
            settings = spec.pod_kill_settings
            try:
                async with self.context.leadership.acting():
                    result, method, message = await self.context.api.call(
                        Cluster.kill,
                        victim,
                        grace_period_seconds=settings.grace_period_seconds,
                        use_eviction=settings.respect_disruption_budgets,
                    )
            except NotLeading:
                record.result, record.method = KillResult.GONE, "interrupted"
                record.message = "this replica stopped leading before the kill; it was not done"
                await self.save()
                return
            record.result, record.method, record.message = result, method, message
            if result is KillResult.KILLED:
                run.kills_total += 1
            metrics.KILLS.labels(result.value).inc()
            await self.save()
        text = f"{_verb(result)} pod {victim.key} (uid {victim.uid}) of {victim.workload} by {method}: {message}"
        self.emit("Normal" if result is not KillResult.FAILED else "Warning", f"Pod{result.value}", text)
        if result is KillResult.KILLED and victim.workload:
            owner = await self.context.api.call(Cluster.workload_object, victim.namespace, victim.workload)
            if owner is not None:
                self.context.emit(
                    owner, "Normal", "ChaosPodKilled", f"ChaosExperiment {self.key} killed pod {victim.name}"
                )

    async def live_workload(self, victim: PodView) -> tuple[list[PodView], WorkloadState]:
        """The victim's workload as it is now, read fresh: its pods (only those its own selector
        picks, where the cache knows the selector) and its desired replicas."""
        selector = None
        if victim.workload is not None:
            selector = self.context.cache.workload_label_selector(victim.namespace, victim.workload)
        desired: dict[str, int] = {}
        if victim.workload is not None and victim.workload_key is not None:
            pods, replicas = await asyncio.gather(
                self.context.api.call(Cluster.live_pods, victim.namespace, selector),
                self.context.api.call(Cluster.desired_replicas, victim.namespace, victim.workload),
            )
            if replicas is not None:
                desired[victim.workload_key] = replicas
        else:
            pods = await self.context.api.call(Cluster.live_pods, victim.namespace, selector)
        states = workload_states(pods, desired)
        key = victim.workload_key or victim.key
        return pods, states.get(key, WorkloadState(key=key, desired=1, ready=1 if victim.ready else 0))

    def append_kill(self, run: RunStatus, record: KillRecord) -> None:
        run.kills.append(record)
        if len(run.kills) > MAX_KILL_RECORDS:
            del run.kills[: len(run.kills) - MAX_KILL_RECORDS]

    # ------------------------------------------------------------------ recovery and the end of a run

    async def track_recovery(self, run: RunStatus) -> bool:
        """Fills in each killed pod's recovery time once its workload is back at full Ready strength,
        dated by the pods' own Ready transitions (so the figure is the workload's, not how busy the
        operator was). The killed pods themselves never count, even before the cache sees them go.
        Returns whether anything changed (the caller saves)."""
        waiting = [k for k in run.kills if k.result is KillResult.KILLED and k.recovered_after_seconds is None]
        if not waiting:
            return False
        killed = {k.uid for k in run.kills if k.result is KillResult.KILLED}
        cache = self.context.cache
        changed = False
        for namespace, workload in sorted({(k.namespace, k.workload) for k in waiting}):
            key = f"{namespace}/{workload}"
            pods = [pod for pod in cache.pods(namespace) if pod.uid not in killed]
            replicas = cache.desired_replicas(namespace, workload)
            state = workload_states(pods, {key: replicas or 0}).get(key)
            desired = state.desired if state is not None else max(replicas or 0, 1)
            for kill in waiting:
                if (kill.namespace, kill.workload) != (namespace, workload):
                    continue
                back = recovered_at(pods, key, desired, kill.at)
                if back is None:
                    continue
                kill.recovered_after_seconds = round((back - kill.at).total_seconds(), 3)
                metrics.POD_RECOVERY_SECONDS.observe(kill.recovered_after_seconds)
                changed = True
                self.emit(
                    "Normal",
                    "WorkloadRecovered",
                    f"{workload} in {namespace} back at full Ready strength "
                    f"{kill.recovered_after_seconds}s after pod {kill.name} was killed",
                )
        return changed

    async def track_late_recovery(self, spec: ChaosExperimentSpec) -> None:
        """After a run ended (an abort a second after a kill, say), its killed pods' recovery is still
        recorded when it comes, for as long as the recovery timeout after the run."""
        run = self.status.last_run
        if run is None or run.finished_at is None:
            return
        timeout = to_seconds(spec.steady_state.recovery.timeout) if spec.steady_state else DEFAULT_RECOVERY_TIMEOUT
        if (self.now() - run.finished_at).total_seconds() > timeout or not await self.track_recovery(run):
            return
        times = {kill.uid: kill.recovered_after_seconds for kill in run.kills}
        for past in self.status.history:
            if past.id == run.id:
                for kill in past.kills:
                    kill.recovered_after_seconds = times.get(kill.uid, kill.recovered_after_seconds)
        await self.save()

    async def finish_if_recovered(self, spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> float:
        self.stop_guard()
        unrecovered = [k for k in run.kills if k.result is KillResult.KILLED and k.recovered_after_seconds is None]
        sli_problem = await self.steady_state_after(spec, run, now) if not unrecovered else None
        if not unrecovered and sli_problem is None:
            await self.end_run(Phase.COMPLETED, "RunCompleted", f"run {run.id} completed")
            return 0.0
        timeout = to_seconds(spec.steady_state.recovery.timeout) if spec.steady_state else DEFAULT_RECOVERY_TIMEOUT
        assert run.deadline is not None
        if (now - run.deadline).total_seconds() < timeout:
            waiting = "killed pods' workloads" if unrecovered else "the steady state"
            message = f"waiting up to {format_seconds(timeout)} for {waiting} to recover"
            if run.message != message:
                run.message = message
                await self.save()
            return to_seconds(spec.steady_state.interval) if spec.steady_state else ACTIVE_POLL_SECONDS
        if unrecovered:
            names = ", ".join(sorted({f"{k.namespace}/{k.workload}" for k in unrecovered}))
            detail = f"{names} did not recover to full Ready strength"
        else:
            detail = f"the steady state did not come back ({sli_problem})"
        await self.end_run(
            Phase.FAILED,
            "DidNotRecover",
            f"run {run.id}: {detail} within {format_seconds(timeout)} after the run; "
            "this is the finding: look at why the system does not heal on its own",
        )
        return 0.0

    async def end_run(self, result: Phase, reason: str, message: str) -> None:
        if result is not Phase.COMPLETED and not lanes.in_urgent_lane():
            with lanes.urgent():  # a stop (suspension, window, spec change) is an abort too
                await self.end_run(result, reason, message)
            return
        self.abort_requested.set()  # no kill may start while the run is being closed
        self.stop_guard()
        await self.roll_back_faults(_removal_cause(reason))
        run = self.status.current_run
        if run is not None:
            metrics.RUNS.labels(result.value).inc()
            metrics.ACTIVE_RUNS.dec()
            if result is Phase.ABORTED:
                metrics.ABORTS.labels(reason).inc()
        spec = self.parsed_spec()
        if run is not None:
            run.phase = result
            run.finished_at = self.now()
            run.reason = reason
            run.message = message
            run.next_round_at = None
            previous = self.status.last_run
            for index, past in enumerate(self.status.history):
                if previous is not None and past.id == previous.id:  # it leaves lastRun: history keeps it whole
                    self.status.history[index] = previous.model_copy(update={"kills": previous.kills[-20:]})
            self.status.last_run = run
            # lastRun holds this run in full, so its history entry leaves the SLI samples out until the
            # next run takes lastRun's place: one copy of them, not two, in every write of the object.
            self.status.history.append(run.model_copy(update={"kills": run.kills[-20:], "sli_samples": {}}))
            limit = spec.schedule.history_limit if spec.schedule else 10
            del self.status.history[: max(0, len(self.status.history) - limit)]
        self.status.current_run = None
        self.context.running.discard(self.key)
        if spec.schedule is not None and result is not Phase.REJECTED:
            self.status.phase = Phase.SCHEDULED
            self.status.next_run_at = windows.next_fire(spec.schedule.cron, spec.schedule.time_zone, self.now())
            self.status.message = f"{message}; next run at {self.status.next_run_at.isoformat()}"
        else:
            self.status.phase = result
            self.status.message = message
        self.set_condition("Finished", "True", reason, message)
        await self.save()
        self.emit("Normal" if result is Phase.COMPLETED else "Warning", reason, message)

    # ------------------------------------------------------------------ the SLI guard

    def probe(
        self,
        spec: ChaosExperimentSpec,
        guards: PlatformGuards | None,
        phase: GuardPhase,
        author_timeout_cap: float | None = None,
    ) -> SteadyStateProbe | None:
        """The author's conditions and the policies' guards checked in `phase`, or None if there are none.
        `author_timeout_cap`: see SteadyStateProbe (applies only when policy guards are among them)."""
        extra = [guard.condition for guard in guards.at(phase)] if guards is not None else []
        if spec.steady_state is None and not extra:
            return None
        return SteadyStateProbe(
            self.context.api,
            self.context.batcher,
            self.namespace,
            spec.steady_state,
            extra,
            self.context.operator_namespace,
            author_timeout_cap,
        )

    async def steady_state_refusal(self, spec: ChaosExperimentSpec, world: World, now: datetime) -> Refusal | None:
        """The before-check: a run starts only from a steady state that holds right now. The
        policies' guards are judged in the same round; their refusal comes first (a wait, not an
        abort: the budget or the incident may pass)."""
        probe = self.probe(spec, world.guards, GuardPhase.BEFORE)
        if probe is None:
            return None
        verdict = await probe.check(GuardState(), now)
        refusal = await self.platform_refusal(world.guards, verdict, now)
        if refusal is not None:
            return refusal
        problems = [b.message for b in (*verdict.breaches, *verdict.pending)]
        if verdict.kind is VerdictKind.UNAVAILABLE and verdict.abort:
            problems.append(verdict.message)
        if not problems:
            return None
        return Refusal(
            "steady-state",
            "the steady state does not hold before the run, so nothing was injected: " + "; ".join(problems),
            "spec.steadyState",
        )

    async def platform_refusal(self, guards: PlatformGuards, verdict: Verdict, now: datetime) -> Refusal | None:
        """The first policy guard that does not hold before a run, in its own terms."""
        for result in verdict.results:
            guard = guards.named(result.condition)
            if guard is None or result.status is SliStatus.HOLDING:
                continue
            breach = next((b for b in (*verdict.breaches, *verdict.pending) if b.condition == result.condition), None)
            rule = GUARD_RULES[guard.kind]
            if guard.kind is GuardKind.BUDGET:
                burn = await self.burn_rate_now(guard, verdict, now)
                budget_left = breach.value if breach is not None else None
                return Refusal(rule, budget_refusal_text(guard, budget_left, burn), guard.field)
            if breach is None:
                return Refusal(rule, unmeasured_text(guard, result), guard.field)
            return Refusal(rule, breach_text(guard, breach), guard.field)
        return None

    async def burn_rate_now(self, guard: PlatformCondition, verdict: Verdict, now: datetime) -> float | None:
        """The gate's burn rate right now, for the words of a budget refusal (None: not measurable):
        from `verdict` when the gate's maxBurnRate was judged in it, else asked on its own."""
        condition = burn_rate_condition(guard)
        results = tuple(result for result in verdict.results if result.condition == condition.name)
        if not results:
            probe = SteadyStateProbe(
                self.context.api,
                self.context.batcher,
                self.namespace,
                None,
                [condition],
                self.context.operator_namespace,
            )
            results = (await probe.check(GuardState(), now)).results
        value = results[0].value if results else None
        return value if value is not None and math.isfinite(value) else None

    async def steady_state_after(self, spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> str | None:
        """The after-check: None once every condition holds again, else what still does not."""
        probe = self.probe(spec, self.guarded_by, GuardPhase.AFTER)
        if probe is None:
            return None
        verdict = await probe.check(GuardState(), now)
        self.record_samples(run, verdict)
        problems = [b.message for b in (*verdict.breaches, *verdict.pending)]
        if verdict.kind is VerdictKind.UNAVAILABLE:
            if not verdict.abort:
                run.steady_state_after = f"could not be checked (onUnavailable: continue): {verdict.message}"
                return None
            problems.append(verdict.message)
        run.steady_state_after = "; ".join(problems) if problems else f"held again at {now.isoformat()}"
        return "; ".join(problems) or None

    def resume_guard(self, guards: PlatformGuards | None) -> None:
        """Puts the current run under the operator's one guard scheduler (at start, on resume, and
        again whenever the policies' guards change). `guards` None: not known yet (a restart), the
        author's guard starts now and the next step adds the policies'."""
        try:
            spec = self.parsed_spec()
        except ValidationError:
            return
        run = self.status.current_run
        if run is None or run.deadline is None or self.abort_requested.is_set():
            return
        if self.now() >= run.deadline:
            if guards is not None and self.guarded is None:
                self.guarded_by = guards  # the after-check holds the run to them (also after a restart)
            return
        if self.guarded is not None and (guards is None or guards == self.guarded_by):
            return
        intervals = [to_seconds(spec.steady_state.interval)] if spec.steady_state is not None else []
        if guards is not None and guards.interval is not None and guards.at(GuardPhase.DURING):
            intervals.append(guards.interval)  # the shorter wins: an author cannot slow the owners' guard
        interval = min(intervals) if intervals else DEFAULT_GUARD_INTERVAL
        # The author's slow endpoint must not hold back the owners' verdict: their queries are cut
        # off after one interval, so a policy breach aborts the run at most one interval late.
        probe = self.probe(spec, guards, GuardPhase.DURING, author_timeout_cap=interval)
        self.stop_guard()
        self.guarded_by = guards
        if probe is None:
            return
        run_id = run.id
        self.guarded = GuardedRun(
            key=self.key,
            probe=probe,
            interval=interval,
            state=lambda: GuardState.from_wire(self.guard_state_of(run_id)),
            on_verdict=lambda verdict: self.on_guard_verdict(run_id, verdict),
        )
        self.context.guard.add(self.guarded)

    def stop_guard(self) -> None:
        guarded, self.guarded = self.guarded, None
        if guarded is not None:
            self.context.guard.remove(self.key, guarded)
            with contextlib.suppress(KeyError):
                metrics.GUARD_LAST_VERDICT.remove(self.key)

    def guard_state_of(self, run_id: str) -> dict[str, Any]:
        run = self.status.current_run
        return run.sli_state if run is not None and run.id == run_id else {}

    async def on_guard_verdict(self, run_id: str, verdict: Verdict) -> None:
        """One tick's verdict for the run `run_id`: a breach aborts at once (in any replica, leading or
        not); the leader's samples reach status in batches."""
        run = self.status.current_run
        if run is None or run.id != run_id or run.deadline is None or verdict.at >= run.deadline:
            return  # the run ended meanwhile, or its after-check is the one that counts now
        run.sli_state = verdict.state.to_wire()
        self.last_verdict_at = verdict.at
        metrics.GUARD_LAST_VERDICT.labels(self.key).set(verdict.at.timestamp())
        self.record_samples(run, verdict)
        if verdict.abort:
            with lanes.urgent():
                try:
                    await self.abort_for(verdict)
                except RunEndedElsewhere as ended:
                    self.logger.info("%s", ended)
            return
        if self.context.leadership.leading:
            self.write_samples_soon(run)

    def write_samples_soon(self, run: RunStatus) -> None:
        """Sends the run's SLI samples in the background, at most every SAMPLE_BATCH_SECONDS and one
        write at a time. The guard never waits for it: a routine write queued behind others must
        not hold up the next tick, which may be the one that sees a breach."""
        now = asyncio.get_running_loop().time()
        if (self.samples_write is not None and not self.samples_write.done()) or (
            now - self.last_write < SAMPLE_BATCH_SECONDS
        ):
            return
        self.last_write = now
        self.samples_write = asyncio.create_task(self.write_samples(run), name=f"samples {self.key}")

    async def write_samples(self, run: RunStatus) -> None:
        """Replaces the run's samples and guard state in status, only while that run is still the
        current one there (a JSON patch guarded by a `test` of its id): landing after the run's end
        or after a newer write of the same samples can then change nothing that matters."""
        wire = run.model_dump(by_alias=True, mode="json", include={"sli_samples", "sli_state"})
        operations = [
            {"op": "test", "path": "/status/currentRun/id", "value": run.id},
            *({"op": "add", "path": f"/status/currentRun/{key}", "value": value} for key, value in wire.items()),
        ]
        try:
            await self.context.api.call(Cluster.patch_experiment_status_ops, self.namespace, self.name, operations)
        except ApiException as error:
            if error.status != 422:  # 422: the run is no longer current there; its end wrote everything
                self.logger.warning("could not write the SLI samples (the next batch retries): %s", api_message(error))
            return
        except Exception as error:  # a failed batch is retried by the next one; the run's end writes all
            self.logger.warning("could not write the SLI samples (the next batch retries): %s", error)
            return
        metrics.STATUS_WRITES.labels("batch").inc()
        written = self.written.get("currentRun")
        if isinstance(written, dict) and written.get("id") == run.id:
            written.update(wire)

    def record_samples(self, run: RunStatus, verdict: Verdict) -> None:
        for result in verdict.results:
            point = EvidencePoint(verdict.at, result.status, result.value, result.labels).to_wire()
            run.sli_samples[result.condition] = append_capped(
                run.sli_samples.get(result.condition, []), point, MAX_SLI_POINTS
            )
            if result.value is not None:
                metrics.SLI_VALUE.labels(self.key, result.condition).set(result.value)

    async def abort_for(self, verdict: Verdict) -> None:
        """Stops every further fault and rolls back first, then records the breach and says so
        (call it in the urgent lane)."""
        started = asyncio.get_running_loop().time()
        self.abort_requested.set()
        self.stop_guard()
        if not self.context.leadership.leading and not await self.take_up_latest_run(verdict):
            return
        await self.roll_back_faults(f"SLI guard: {verdict.reason}")
        run = self.status.current_run
        breach = verdict.breach
        guards = self.guarded_by
        policy_conditions = {g.condition.name for g in guards.conditions} if guards is not None else set()
        about = verdict_condition(verdict, policy_conditions)
        guard = self.guarded_by.named(about) if self.guarded_by is not None else None
        message = f"aborted by the SLI guard: {verdict.message}"
        if guard is not None:
            detail = breach_text(guard, breach) if breach is not None else verdict.message
            message = f"aborted by the {guard.source} guard: {detail}"
        if run is not None and breach is not None:
            run.abort = SliAbort(
                condition=breach.condition,
                query=breach.query,
                operator=breach.operator.value,
                threshold=breach.threshold,
                value=format_value(breach.value),
                series=format_labels(breach.labels),
                at=breach.at,
                since=breach.since,
                message=breach.message,
            )
        elif run is not None and verdict.unavailable:
            missing = next((m for m in verdict.unavailable if m.condition == about), verdict.unavailable[0])
            run.abort = SliAbort(
                condition=missing.condition, query=missing.query, at=verdict.at, message=verdict.message
            )
        if run is not None and run.abort is not None and guard is not None:
            run.abort.policy = guard.policy
            run.abort.message = message
        reason = GUARD_REASONS[guard.kind] if guard is not None and breach is not None else verdict.reason
        await self.end_run(Phase.ABORTED, reason, message)
        metrics.ABORT_SECONDS.observe(asyncio.get_running_loop().time() - started)

    async def take_up_latest_run(self, verdict: Verdict) -> bool:
        """A standby's abort starts from the run as the API holds it now (the faults the leader placed
        a moment ago included), keeping the verdict's guard state. False when that run is over already
        (another replica ended it) or its record is not to be trusted: nothing more to do here."""
        run = self.status.current_run
        fresh = await self.context.api.call(Cluster.experiment, self.namespace, self.name)
        raw = dict((fresh or {}).get("status") or {})
        self.adopt_status(raw)
        self.adopted_version = str(((fresh or {}).get("metadata") or {}).get("resourceVersion") or "")
        latest = self.status.current_run
        same_run = run is not None and latest is not None and latest.id == run.id
        return same_run and latest is not None and self.run_record_problem(latest) is None

    async def roll_back_faults(self, why: str = "abort") -> None:
        """Takes out every fault still in. One past its deadline counts as removed by the injector's own
        timer only when the kubelet reports the injector exited 0 saying so; any other (still waiting to
        start, running, killed mid-hold, failed, unreadable) gets a clean-up container, as an abort does,
        so nothing stays behind. (pod-kill leaves nothing to undo: killed pods are replaced by their
        controllers.)"""
        runs = [run for run in (self.status.current_run, self.status.last_run) if run is not None]
        active = [(run, f) for run in runs for f in run.faults if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
        # Only faults of a record the operator sealed, and only in that run's own target namespaces: an
        # entry someone else wrote into status must never send a clean-up container into their pod.
        mine = [(run, f) for run, f in active if self.vouches_for(run) and f.namespace in run.target_namespaces]
        for run, fault in active:
            if not any(fault is own for _, own in mine):
                outside = f"{fault.namespace!r} is not one of the run's target namespaces"
                why = outside if self.vouches_for(run) else self.seal_problem(run) or outside
                self.logger.warning(
                    "not touching the fault recorded in pod %s/%s: %s", fault.namespace, fault.name, why
                )
        active = mine
        if not active:
            return
        now = self.now()
        for run, fault in active:
            ended = None
            if fault.deadline is not None and now >= fault.deadline:
                ended = await faults.ended_by_own_timer(self.context.api, fault)
            if ended is not None:
                fault.state, fault.removed_at = FaultState.REMOVED, fault.deadline
                fault.removed_by = "deadline (the injector's own timer)"
                fault.message = f"{fault.container} reported: {ended}"
            else:
                await clear_fault(self.context.api, fault, run.id, self.key, why, self.now, faults.injector_image())
            verb = "removed" if fault.state is FaultState.REMOVED else "could not be removed"
            kind = fault.kind
            self.emit(
                "Normal" if fault.state is FaultState.REMOVED else "Warning",
                f"{kind}Removed" if fault.state is FaultState.REMOVED else f"{kind}RemovalFailed",
                f"{kind.lower()} in pod {fault.namespace}/{fault.name} {verb}: {fault.removed_by or fault.message}",
            )
        await self.save()

    # ------------------------------------------------------------------ network faults

    async def inject_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        """A network fault (latency, impairment, partition) goes in once per run, into each chosen
        pod, and holds until the run's deadline."""
        assert run.deadline is not None
        refusal = await self.destination_refusal(spec, world)
        if refusal is not None:
            self.emit("Warning", refusal.reason, str(refusal))
            await self.end_run(Phase.FAILED, refusal.reason, f"run {run.id}: nothing injected: {refusal}")
            return
        chosen = await self.pick_targets(spec, world, run, 0, "")
        # The round is done only once every chosen pod has been tried, so a read that fails half-way
        # (or an operator that dies) leaves it to be taken up again at the next step. A pod is tried
        # at most once per run: its fault is recorded before the injector is added, and the retry
        # skips every recorded pod and never tries more pods than the round chose.
        tried = {fault.uid for fault in run.faults}
        untried = [victim for victim in chosen if victim.uid not in tried]
        for victim in untried[: max(0, len(chosen) - len(run.faults))]:
            if self.halted or self.now() >= run.deadline:
                break
            await self.inject_one(spec, world, run, victim)
        run.rounds_done, run.next_round_at = 1, None
        await self.save()

    async def destination_refusal(self, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        """Whether the fault's destinations reach a node, the API server or the operator's own pods,
        read live right before injecting; unreadable addresses refuse too (when unsure, do not inject)."""
        if spec.network is None and spec.partition is None:
            return None
        if not self.context.operator_namespace:
            return Refusal(
                "operator-namespace-unknown",
                "the operator's own namespace is unknown, so whether this fault would reach chaosguard's own pods "
                "and Services cannot be judged; set CHAOSGUARD_NAMESPACE in the operator's environment to its "
                "namespace (the shipped manifests set it from the pod's metadata.namespace)",
                "spec.action",
            )
        try:
            guarded = await self.context.api.call(Cluster.guarded_addresses, self.context.operator_namespace)
        except Exception as error:
            detail = api_message(error) if isinstance(error, ApiException) else str(error)
            return Refusal(
                "destinations-unknown",
                f"could not read the node, API server and operator addresses a network fault must not reach "
                f"({detail}); nothing was injected. Grant the operator list nodes/services and get endpoints",
                "spec.action",
            )
        refusals = destination_refusals(spec, guarded, world.effective)
        return refusals[0] if refusals else None

    async def settle_injectors(self, run: RunStatus) -> bool:
        """An injector that exited early (e.g. on a node without sch_netem) fails its fault with the
        kubelet's reason; a run with no fault left in ends Failed. True when it ended the run."""
        image = faults.injector_image()
        failed = await faults.settle_injectors(self.context.api, run.faults, run.id, self.key, self.now, image)
        for fault in failed:
            self.emit("Warning", f"{fault.kind}Failed", f"pod {fault.namespace}/{fault.name}: {fault.message}")
        if not run.faults or any(f.state is not FaultState.FAILED for f in run.faults):
            if failed:
                await self.save()
            return False
        message = f"run {run.id}: no {run.faults[0].kind.lower()} fault is in place: {run.faults[0].message}"
        await self.end_run(Phase.FAILED, "InjectionFailed", message)
        return True

    async def inject_one(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, victim: PodView) -> None:
        assert run.deadline is not None
        kind = spec.action.value.capitalize()  # Events: LatencyInjected, NetworkInjected, PartitionInjected
        workload_key = victim.workload_key or victim.key
        async with self.context.workload_lock(workload_key):
            already = sum(1 for f in run.faults if f.workload == victim.workload and f.namespace == victim.namespace)
            refusal = await self.live_refusal(spec, victim, None, already)
            record = FaultRecord(
                namespace=victim.namespace,
                name=victim.name,
                uid=victim.uid,
                workload=victim.workload or "",
                container=faults.container_name(run.id, spec.action.value),
                impairment=faults.impairment_summary(spec),
                deadline=run.deadline,
            )
            if refusal is not None:
                record.state, record.message = FaultState.FAILED, f"not injected: {refusal}"
                run.faults.append(record)
                self.emit("Normal", f"{kind}Skipped", record.message)
                return
            if spec.dry_run:
                record.state = FaultState.WOULD_INJECT
                record.message = f"dry run: would apply {record.impairment} to {victim.key}"
                run.faults.append(record)
                self.emit("Normal", "WouldInject", record.message)
                return
            now = self.now()
            if self.halted or now >= run.deadline:
                return  # never put a fault in after its run has ended
            # An absolute deadline: the injector holds only until the run's end however late the kubelet
            # starts it, and injects nothing if it starts after that.
            deadline_at = math.ceil(run.deadline.timestamp())
            try:
                container = faults.injector_container(
                    spec, run.id, self.key, deadline_at, faults.injector_image(), now=now.timestamp()
                )
            except NetemArgumentError as error:
                # The model refuses such settings; should one slip through, the fault fails with the
                # reason (and the run ends Failed when no fault is in) instead of the step failing forever.
                record.state, record.message = FaultState.FAILED, f"not injected: {error}"
                run.faults.append(record)
                await self.save()
                self.emit("Warning", f"{kind}Failed", f"pod {victim.key}: {record.message}")
                return
            run.faults.append(record)
            await self.save()  # recorded before the call: a restart must know to clear it
            try:
                async with self.context.leadership.acting():
                    await self.context.api.call(
                        Cluster.add_ephemeral_container, victim.namespace, victim.name, victim.uid, container
                    )
            except NotLeading:
                record.state, record.message = FaultState.FAILED, "not injected: this replica stopped leading"
                await self.save()
                return
            except ApiException as error:
                record.state = FaultState.FAILED
                record.message = f"the API refused the injector ({error.status}): {api_message(error)}"
                await self.save()
                self.emit("Warning", f"{kind}Refused", f"pod {victim.key}: {record.message}")
                return
            record.state, record.injected_at = FaultState.ACTIVE, self.now()
            record.message = f"{record.impairment} added by {record.container} until {run.deadline.isoformat()}"
            run.kills_total += 1
            await self.save()
        self.emit("Normal", f"{kind}Injected", f"pod {victim.key} (uid {victim.uid}): {record.message}")

    # ------------------------------------------------------------------ status and events

    def set_condition(self, kind: str, value: ConditionStatus, reason: str, message: str) -> None:
        now = self.now()
        for condition in self.status.conditions:
            if condition.type == kind:
                if condition.status != value:
                    condition.last_transition_time = now
                condition.status, condition.reason, condition.message = value, reason, message
                condition.observed_generation = self.generation
                return
        self.status.conditions.append(
            Condition(
                type=kind,
                status=value,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=self.generation,
            )
        )

    def save_before_waiting(self) -> None:
        """For a transition that the next one follows at once (Pending, then Scheduled, then the run
        starting): the driver writes before it next waits, or the next write carries it. Nothing
        outside has been touched yet, so a restart in between only decides the same again; the
        first kill or fault of a run is always preceded by a write of its own."""
        self.unsaved = True

    async def save(self) -> None:
        """Writes what changed in status since the last write, as a merge patch, at once (every
        state change; SLI samples ride along, and between changes go out in batches)."""
        # The snapshot is taken inside the lock, so the last write to land is always the newest
        # state, even when the guard and the driver save at the same moment.
        async with self.save_lock:
            if self.status.observed_generation is None:
                self.status.observed_generation = self.generation
            latest = self.status.current_run or self.status.last_run
            self.status.hits = latest.kills_total if latest is not None else 0
            key, uid = self.context.signing_key, str(self.body["metadata"].get("uid") or "")
            for own in (self.status.current_run, self.status.last_run):
                if own is not None and key is not None and self.vouches_for(own):
                    own.seal = seal_run(key, uid, own)  # every write of a run is sealed anew
            publish_fault_gauges(self.key, self.status.current_run)
            wire = self.status.model_dump(by_alias=True, mode="json")
            patch = merge_patch(self.written, wire)
            self.unsaved = False
            if not patch:
                return
            run_id = (self.written.get("currentRun") or {}).get("id")
            if run_id:
                wire = await self.write_guarded(str(run_id), wire)
            else:
                await self.context.api.call(Cluster.patch_experiment_status, self.namespace, self.name, patch)
            self.written = wire
            self.last_write = asyncio.get_running_loop().time()
            metrics.STATUS_WRITES.labels("change").inc()

    async def write_guarded(self, run_id: str, wire: dict[str, Any]) -> dict[str, Any]:
        """Writes a change to a run's status only while that run is still the current one in the API (a
        JSON patch whose first operation tests its id): once another replica has ended the run, nothing
        here can bring it back, record a kill for it, or write a second end. Raises RunEndedElsewhere
        then, after taking up that replica's record and clearing any fault placed after it read the run."""
        for attempt in (1, 2):
            operations = [
                {"op": "test", "path": "/status/currentRun/id", "value": run_id},
                *json_patch_operations(self.written, wire, "/status"),
            ]
            try:
                await self.context.api.call(Cluster.patch_experiment_status_ops, self.namespace, self.name, operations)
                return wire
            except ApiException as error:
                if error.status != 422:
                    raise
            fresh = await self.context.api.call(Cluster.experiment, self.namespace, self.name)
            raw = dict((fresh or {}).get("status") or {})
            if (raw.get("currentRun") or {}).get("id") != run_id:
                run = self.status.current_run or self.status.last_run
                if run is not None and run.id == run_id:
                    await self.clear_left_behind(run, self.take_up_remote_end(run, raw))
                raise RunEndedElsewhere(f"run {run_id} was ended by another replica; its record stands")
            # Still current: what we last wrote was not what the API holds, because another replica wrote
            # (a standby ending the run while the leader recorded one more kill or fault). Again, from
            # what the API holds, with that progress kept in this replica's record.
            self.written = copy.deepcopy(raw)
            if not self.context.leadership.leading:
                await self.keep_leader_progress(run_id, raw)
                wire = self.status.model_dump(by_alias=True, mode="json")
            if attempt == 2:
                raise RuntimeError(f"the status of run {run_id} could not be written: the API kept refusing the patch")
        return wire

    async def keep_leader_progress(self, run_id: str, raw: Mapping[str, Any]) -> None:
        """A standby ending run `run_id` keeps the kills and faults the leader recorded after the standby
        read the run, and clears those faults too."""
        ending = next((r for r in (self.status.current_run, self.status.last_run) if r and r.id == run_id), None)
        if ending is None or not raw.get("currentRun"):
            return
        latest = RunStatus.model_validate(raw["currentRun"])
        if self.seal_problem(latest) is not None:
            return  # not the leader's record: nothing in it is acted on
        known = {(f.uid, f.container) for f in ending.faults}
        added = [f for f in latest.faults if (f.uid, f.container) not in known]
        if added:
            await self.clear_left_behind(
                ending, [f for f in added if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
            )
        ending.faults.extend(added)
        ending.kills = latest.kills
        for past in self.status.history:
            if past.id == run_id:
                past.faults, past.kills = list(ending.faults), ending.kills[-20:]

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.context.emit(self.body, kind, reason, message)
        log = self.logger.warning if kind == "Warning" else self.logger.info
        log("%s: %s", reason, message)


def publish_fault_gauges(key: str, run: RunStatus | None) -> None:
    """The faults in place and their latest deadline, for dashboards and the FaultPastDeadline alert."""
    live = [f for f in (run.faults if run else []) if f.state in (FaultState.INJECTING, FaultState.ACTIVE)]
    deadlines = [f.deadline.timestamp() for f in live if f.deadline is not None]
    if run is not None:
        metrics.ACTIVE_FAULTS.labels(key).set(len(live))
    if deadlines:
        metrics.FAULT_DEADLINE.labels(key).set(max(deadlines))
    for gauge, stale in ((metrics.ACTIVE_FAULTS, run is None), (metrics.FAULT_DEADLINE, not deadlines)):
        if stale:
            with contextlib.suppress(KeyError):
                gauge.remove(key)


def invalid_policy_refusal(world: World) -> Refusal | None:
    """Fail-safe: while a ChaosPolicy does not validate, its guards, suspension and windows are
    unknown, so no run starts and nothing is injected; the refusal names the policy, the field and
    the model's message."""
    if not world.invalid_policies:
        return None
    name = min(world.invalid_policies)
    return Refusal(
        "invalid-policy",
        f"ChaosPolicy/{name} does not validate, so no run starts and nothing is injected until it is "
        f"fixed or deleted: {world.invalid_policies[name]}",
        f"ChaosPolicy/{name}",
    )


def verdict_condition(verdict: Verdict, policy_conditions: Collection[str] = ()) -> str:
    """The condition a verdict is about: its longest-standing breach, else the first unavailable
    policy condition (`policy_conditions`: their unavailability always aborts, so it decided the
    abort whatever the author's onUnavailable says), else the first unavailable one."""
    if verdict.breach is not None:
        return verdict.breach.condition
    strict = [missing for missing in verdict.unavailable if missing.condition in policy_conditions]
    chosen = strict or verdict.unavailable
    return chosen[0].condition if chosen else ""


def next_round_time(spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> datetime | None:
    """The next slot on the run's interval grid after `now`; rounds missed while the operator was
    down are skipped, never fired back to back. None when no slot is left before the deadline."""
    if not spec.interval or run.started_at is None or run.deadline is None:
        return None
    interval = to_seconds(spec.interval)
    slots_passed = int((now - run.started_at).total_seconds() // interval) + 1
    upcoming = run.started_at + timedelta(seconds=interval * slots_passed)
    return upcoming if upcoming < run.deadline else None


def _removal_cause(reason: str) -> str:
    return {
        "RunCompleted": "deadline",
        "Suspended": "suspension",
        "Window": "window closed",
        "Blackout": "blackout",
        "AbortRequested": "abort on request",
        "SpecChanged": "spec changed",
    }.get(reason, "abort")


def _verb(result: KillResult) -> str:
    return {
        KillResult.KILLED: "killed",
        KillResult.SKIPPED_BUDGET: "skipped (disruption budget)",
        KillResult.GONE: "skipped (gone)",
        KillResult.FAILED: "failed to kill",
    }.get(result, result.value)
