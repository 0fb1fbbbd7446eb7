"""The phase machine of one experiment: Pending -> (AwaitingApproval) -> Scheduled -> Running ->
Completed | Aborted | Failed, or Rejected. Admission against policy, the schedule and the start of a
run (the concurrency slot, the before-check), each step of a running run (the stop rules, the next
round, the deadline), a restart on a spec edit, an abort on request, and the end of a run (history,
the next scheduled fire). Rounds, steady state, recovery and status writes are delegated."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ValidationError

from chaosguard.api.models import ABORT_ANNOTATION, ChaosExperimentSpec, Phase, RunStatus
from chaosguard.clients import informers
from chaosguard.clients.kube import Cluster
from chaosguard.decisions import pause, windows
from chaosguard.decisions.policy import (
    Refusal,
    concurrency_refusal,
    static_refusals,
    suspension_refusal,
    target_namespaces,
    time_refusal,
)
from chaosguard.decisions.runs import invalid_policy_refusal, removal_cause
from chaosguard.decisions.samples import without_trends
from chaosguard.decisions.stamps import spec_hash
from chaosguard.runtime import gates, lanes, metrics
from chaosguard.runtime.context import World
from chaosguard.runtime.driverbase import ACTIVE_POLL_SECONDS, IDLE_POLL_SECONDS, VERDICT_FIELDS, DriverBase

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


class PhaseMachine(DriverBase):
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
        if spec.paused and spec.schedule is not None:
            return await self.skip_paused_slot(spec, now)
        if spec.paused:
            return IDLE_POLL_SECONDS  # a one-shot starts once resumed
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
                    refusal = invalid_policy_refusal(world.invalid_policies) or await self.steady_state_refusal(
                        spec, world, now
                    )
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
        invalid = invalid_policy_refusal(world.invalid_policies)
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
        metrics.count_run(run_id, active=True)
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
        held = await self.hold_for_pause(spec, run)
        if held is not None:
            if await self.track_recovery(run):
                await self.save()
            return held
        await self.resolve_interrupted_round(run)
        if self.awaits_fresh_verdict(run):
            return ACTIVE_POLL_SECONDS / 10
        if run.next_round_at is not None and now >= run.next_round_at and now < run.deadline:
            await self.play_round(spec, world, run, now)
        if await self.settle_faults(spec, run):
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

    def stop_reason(self, world: World, now: datetime) -> Refusal | None:
        if world.effective.suspended_by:
            return suspension_refusal(world.effective)
        refusal = time_refusal(world.effective, now)
        if refusal is not None:
            return Refusal(refusal.rule, "the run was stopped: " + refusal.message, refusal.field)
        return None

    def finish_written_end(self) -> None:
        """An end whose verdict was written but not the rest (the replica that wrote it died in between):
        the run goes into history and the Finished condition is set, in the next write."""
        run = self.status.last_run
        if run is None or run.finished_at is None or any(past.id == run.id for past in self.status.history):
            return
        if self.seal_problem(run) is not None:
            return  # not a record this operator wrote: history is not for it
        self.record_in_history(run)
        self.set_condition("Finished", "True", run.reason, run.message)
        self.unsaved = True

    def record_in_history(self, run: RunStatus) -> None:
        """The run appended to history, the oldest dropped past the schedule's historyLimit. lastRun holds
        this run in full, so its history entry keeps the SLI summaries without their trends: one copy of
        the trends, not two, in every write of the object."""
        self.status.history.append(run.model_copy(update={"kills": run.kills[-20:], "slis": without_trends(run.slis)}))
        try:
            schedule = self.parsed_spec().schedule
        except ValidationError:
            schedule = None
        limit = schedule.history_limit if schedule else 10
        del self.status.history[: max(0, len(self.status.history) - limit)]

    async def end_run(self, result: Phase, reason: str, message: str) -> None:
        if result is not Phase.COMPLETED and not lanes.in_urgent_lane():
            with lanes.urgent():  # a stop (suspension, window, spec change) is an abort too
                await self.end_run(result, reason, message)
            return
        self.abort_requested.set()  # no kill may start while the run is being closed
        self.stop_guard()
        await self.roll_back_faults(removal_cause(reason))
        run = self.status.current_run
        if run is not None:
            metrics.RUNS.labels(result.value).inc()
            metrics.count_run(run.id, active=False)
            if result is Phase.ABORTED:
                metrics.ABORTS.labels(reason).inc()
        spec = self.parsed_spec()
        if run is not None:
            run.phase = result
            run.finished_at = self.now()
            run.reason = reason
            run.message = message
            run.next_round_at = None
            pause.ended_while_paused(run, reason)
            previous = self.status.last_run
            for index, past in enumerate(self.status.history):
                # It leaves lastRun: history keeps it whole, but for its SLI trends.
                if previous is not None and past.id == previous.id:
                    self.status.history[index] = previous.model_copy(
                        update={"kills": previous.kills[-20:], "slis": without_trends(previous.slis)}
                    )
            self.status.last_run = run
            self.record_in_history(run)
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
        if result is Phase.COMPLETED:
            await self.save()
        else:
            # The verdict first, alone and in the urgent order: when a thousand runs abort at once, each
            # shows Aborted before any of them spends the API server's time on history and conditions.
            await self.save(only=VERDICT_FIELDS)
        self.emit("Normal" if result is Phase.COMPLETED else "Warning", reason, message)
        if self.unsaved:
            with lanes.routine():
                await self.save()
