"""Pause and resume of a run and of a schedule (spec.paused; the judgements are decisions.pause).

The leader takes a paused run's faults out in the urgent lane (each by its kind's `recover`, as an abort
does) and plays no round until the spec is resumed; the guard keeps watching, and the deadline keeps
counting. A resume is judged like a run's start before any new fault: the policies, the time window, the
author's rights and the steady state; a refusal that may pass is waited out (still paused), any other
ends the run. A standby takes the faults out itself when the leader has not recorded the pause within
STANDBY_PAUSE_GRACE_SECONDS (a dead leader): removal is idempotent from any replica; recording is the leader's.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from chaosguard.api.models import ChaosExperimentSpec, FaultState, PauseRecord, Phase, RunStatus
from chaosguard.decisions import pause, windows
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.runs import invalid_policy_refusal
from chaosguard.runtime import gates, lanes
from chaosguard.runtime.driverbase import ACTIVE_POLL_SECONDS, DriverBase
from chaosguard.runtime.faults import fault_for, fault_for_record
from chaosguard.runtime.faults.base import placed_by_run

# A standby gives a living leader this long after it sees a pause to record it before it takes the
# faults out itself: the leader steps at least every ACTIVE_POLL_SECONDS.
STANDBY_PAUSE_GRACE_SECONDS = 1.5
# Refusals a resume waits out, still paused (they may pass before the deadline); any other ends the run.
RESUME_WAIT_RULES = ("error-budget", "burn-rate", "quiet-alerts", "policy-steady-state", "invalid-policy")


class Pausing(DriverBase):
    pause_seen_at: float | None = None  # a standby: the loop time it first saw the pause unrecorded
    # A standby's own removals for a pause, (run id, fault container, fault name): the record still says
    # Active until the leader writes, and a removal done is not done again every step meanwhile.
    removed_as_standby: frozenset[tuple[str, str, str]] = frozenset()

    @property
    def who_paused(self) -> str:
        return pause.pauser(self.body["metadata"].get("annotations") or {})

    def note_pause(self, spec: ChaosExperimentSpec) -> None:
        """The Paused condition and its Event for an experiment that is not running (a paused schedule,
        a paused one-shot waiting to start); a run's own pause is `hold_for_pause`."""
        paused = next((c for c in self.status.conditions if c.type == "Paused"), None)
        if spec.paused and (paused is None or paused.status != "True"):
            message = pause.paused_schedule_message(self.status.next_run_at, self.who_paused)
            self.set_condition("Paused", "True", "Paused", message)
            self.save_before_waiting()
            self.emit("Normal", "Paused", message)
        elif not spec.paused and paused is not None and paused.status == "True":
            message = f"resumed by {self.who_paused}"
            self.set_condition("Paused", "False", "Resumed", message)
            self.save_before_waiting()
            self.emit("Normal", "Resumed", message)

    async def hold_for_pause(self, spec: ChaosExperimentSpec, run: RunStatus) -> float | None:
        """A running run's pause: how long to wait while it holds no round, or None to go on with the
        step (not paused, just resumed, or paused past its deadline: the run then ends as it would have)."""
        assert run.deadline is not None
        now = self.now()
        step = pause.pause_step(spec.paused, run)
        if step is pause.PauseStep.PAUSE:
            with lanes.urgent():
                message = pause.paused_run_message(run, self.who_paused)
                run.pauses.append(PauseRecord(paused_at=now, paused_by=self.who_paused, message=message))
                self.status.message = message
                self.set_condition("Paused", "True", "Paused", message)
                await self.save()  # the pause is on record before anything is taken out
                await self.roll_back_faults(pause.PAUSE_CAUSE)
                self.emit("Normal", "Paused", message)
        elif step is pause.PauseStep.HOLD:
            # Anything still in (a fault a standby or a failed clean-up left in place) goes too.
            await self.roll_back_faults(pause.PAUSE_CAUSE)
        elif step is pause.PauseStep.RESUME and now < run.deadline:
            return await self.resume_run(spec, run, now)
        if not spec.paused or now >= run.deadline:
            if step is pause.PauseStep.RESUME:  # resumed past the deadline: nothing to re-check
                self.close_pause(run, now, "the deadline passed while paused")
            return None
        return max(0.05, min(ACTIVE_POLL_SECONDS, (run.deadline - now).total_seconds()))

    async def resume_run(self, spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> float | None:
        refusal = await self.resume_refusal(spec, now)
        if refusal is not None and refusal.rule in RESUME_WAIT_RULES:
            message = f"resume waits, still paused (the deadline counts): {refusal}"
            if self.status.message != message:
                self.status.message = message
                await self.save()
                self.emit("Warning", "ResumeWaiting", message)
            return ACTIVE_POLL_SECONDS
        if refusal is not None:
            await self.end_run(Phase.ABORTED, "ResumeRefused", f"run {run.id} was not resumed: {refusal}")
            return 0.0
        self.close_pause(run, now, "")
        run.rounds_done, run.next_round_at = pause.rounds_after_resume(run, fault_for(spec.action).facts.repeats, now)
        message = pause.resumed_run_message(run, self.who_paused, (now - run.pauses[-1].paused_at).total_seconds())
        self.status.message = message
        self.set_condition("Paused", "False", "Resumed", message)
        await self.save()
        self.emit("Normal", "Resumed", message)
        return None

    def close_pause(self, run: RunStatus, now: datetime, note: str) -> None:
        record = pause.open_pause(run)
        if record is not None:
            record.resumed_at, record.resumed_by = now, self.who_paused
            if note:
                record.message = f"{record.message}; {note}"

    async def resume_refusal(self, spec: ChaosExperimentSpec, now: datetime) -> Refusal | None:
        """What a run's start checks, checked again before a resumed run's next fault: the policies as they
        are now (fresh, not cached), the time window, the author's rights and the steady state."""
        world = await self.fresh_world(spec)
        refusal = invalid_policy_refusal(world.invalid_policies) or self.start_refusal(spec, world, now)
        if refusal is None:
            refusal = await gates.identity_refusal(self, spec, world)
        if refusal is None:
            refusal = await self.steady_state_refusal(spec, world, now)
        return refusal

    async def skip_paused_slot(self, spec: ChaosExperimentSpec, now: datetime) -> float:
        """A paused schedule's slot: skipped and recorded in history, and the next one awaited."""
        assert spec.schedule is not None
        slot = self.status.next_run_at or now
        self.status.next_run_at = windows.next_fire(spec.schedule.cron, spec.schedule.time_zone, now)
        skipped = pause.skipped_slot(slot, self.who_paused, self.status.next_run_at)
        self.status.history.append(skipped)
        del self.status.history[: max(0, len(self.status.history) - spec.schedule.history_limit)]
        self.status.message = skipped.message
        await self.save()
        self.emit("Normal", "RunSkipped", skipped.message)
        return 0.0

    async def remove_for_pause_as_standby(self, spec: ChaosExperimentSpec) -> None:
        """A standby that sees a paused run whose faults are still in, with no pause recorded by the leader
        within the grace, takes them out itself (a clean-up is idempotent from any replica; the leader
        records the removal when it next steps). It reads the run as the API holds it now: a standby's own
        copy is only refreshed when the run changes."""
        raw = (self.body.get("status") or {}).get("currentRun")
        if not spec.paused or not raw:
            self.pause_seen_at, self.removed_as_standby = None, frozenset()
            return
        latest = RunStatus.model_validate(raw)
        active = [f for f in latest.faults if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
        if pause.open_pause(latest) is not None or not active or self.seal_problem(latest) is not None:
            self.pause_seen_at, self.removed_as_standby = None, frozenset()
            return
        loop = asyncio.get_running_loop()
        if self.pause_seen_at is None:
            self.pause_seen_at = loop.time()
        if loop.time() - self.pause_seen_at < STANDBY_PAUSE_GRACE_SECONDS:
            return
        with lanes.urgent():
            for fault in active:
                kind = fault_for_record(fault)
                removal = (latest.id, fault.container, fault.name)
                if kind is None or not placed_by_run(latest, fault) or removal in self.removed_as_standby:
                    continue
                await kind.recover(self, latest, fault, f"{pause.PAUSE_CAUSE} (by a standby replica)")
                if fault.state is not FaultState.REMOVED:
                    continue  # tried again at the next step
                self.removed_as_standby |= {removal}
                self.logger.warning(
                    "took %s out of %s/%s for the pause: the leader has not recorded it",
                    fault.kind,
                    fault.namespace,
                    fault.name,
                )
