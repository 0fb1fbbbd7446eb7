"""Drives one ChaosExperiment through its lifecycle; the kopf daemon in `handlers` runs one per object.

`ExperimentDriver` is the parts below put together, plus what ties them to kopf and to leadership: the
loop that steps the experiment until kopf stops it, the step itself (`lead` in the leading replica;
`stand_by` in the others, which only guard and abort), resuming a run found Running (only one whose
sealed record verifies), and taking up another replica's status on a hand-over. The parts, each a
module of its own: `phases` (the phase machine), `world` (world reads), `status` (every status write
and Event), `steady` (before/after checks and the guard), `recovery` (recovery tracking), `rounds`
(the generic round loop over the fault kinds of `runtime.faults`), `pausing` (spec.paused);
`driverbase` holds their shared state. All state lives in the object's status, written before and after every fault.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from chaosguard.api.errors import describe_validation_error
from chaosguard.api.models import ABORT_ANNOTATION, ChaosExperimentStatus, Phase, RunStatus
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.pause import only_pause_changed
from chaosguard.decisions.samples import merge_summaries
from chaosguard.decisions.stamps import spec_hash
from chaosguard.runtime import gates, metrics
from chaosguard.runtime.context import OperatorContext
from chaosguard.runtime.driverbase import ACTIVE_POLL_SECONDS, IDLE_POLL_SECONDS, RunEndedElsewhere
from chaosguard.runtime.pausing import Pausing
from chaosguard.runtime.phases import PhaseMachine
from chaosguard.runtime.recovery import RecoveryTracking
from chaosguard.runtime.rounds import RoundLoop
from chaosguard.runtime.status import StatusWriter
from chaosguard.runtime.steady import SteadyState
from chaosguard.runtime.world import WorldReads

__all__ = ["ExperimentDriver", "OperatorContext", "RunEndedElsewhere", "step_retry_delay"]

MAX_STEP_RETRY_SECONDS = ACTIVE_POLL_SECONDS * 5


def step_retry_delay(failures: int) -> float:
    """The wait after the `failures`-th failed step in a row: a poll, doubling up to five polls."""
    return float(min(ACTIVE_POLL_SECONDS * 2.0 ** max(failures - 1, 0), MAX_STEP_RETRY_SECONDS))


class ExperimentDriver(PhaseMachine, Pausing, RoundLoop, SteadyState, RecoveryTracking, StatusWriter, WorldReads):
    async def run(self, stopped: Any) -> None:
        self.stopped = stopped
        # A standby acts on nothing before its first step (`stand_by` guards what verifies); the leader:
        if self.context.leadership.leading and self.status.phase is Phase.RUNNING:
            await self.resume()
        elif self.context.leadership.leading:
            # A fault of a run that is over (the operator died before taking it out) goes now.
            await self.roll_back_faults("operator restart")
            self.finish_written_end()
        failures = 0
        try:
            while not stopped:
                try:
                    delay = await self.step()
                    if delay > 0 and self.unsaved:
                        await self.save()
                    failures = 0
                except Exception as error:  # a failing API call must not kill the guard loop
                    self.logger.exception("step failed; retrying: %s", error)
                    # A step may carry a safety action (a standby's removal for a pause): one transient
                    # error must not delay it by more than a poll; only repeated failures back off.
                    failures += 1
                    delay = step_retry_delay(failures)
                if self.context.leadership.leading:
                    await self.wait_for_next_step(stopped, delay)
                else:
                    await self.doze(stopped, delay)
        finally:
            self.context.running.discard(self.key)
            self.context.wakeups.pop(self.key, None)
            self.stop_guard()

    @staticmethod
    async def wait_for_next_step(stopped: Any, delay: float) -> None:
        """The leader's wait: until `delay` passes or the daemon stops. A wait of at most a poll is a plain
        sleep (the loop notices a stop after it): kopf's timed wait on its stop flag costs a task and a
        cancellation each time, and a thousand running experiments poll every second."""
        if delay <= ACTIVE_POLL_SECONDS:
            await asyncio.sleep(delay)
        else:
            await stopped.wait(delay)

    async def doze(self, stopped: Any, delay: float) -> None:
        """A standby's wait: until `delay` passes, the daemon stops, or the object changes (the leader
        started or ended a run), whichever comes first, so that it guards a run from its first tick.
        A wait of at most a poll does not watch the stop flag (see `wait_for_next_step`)."""
        wake = self.context.wakeups.setdefault(self.key, asyncio.Event())
        if wake.is_set():
            pass
        elif delay <= ACTIVE_POLL_SECONDS:
            timer = asyncio.get_running_loop().call_later(delay, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()
        else:
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
            if resumed is not None:
                metrics.count_run(resumed.id, active=True)
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
        await self.remove_for_pause_as_standby(spec)
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
            run.slis = merge_summaries(previous.slis, run.slis)

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
                self.finish_written_end()
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
            status, hash_now = self.status, spec_hash(self.body["spec"])
            if only_pause_changed(status.phase, status.current_run, status.last_run, hash_now):
                status.observed_generation = self.generation  # a pause or resume is not an edit
                self.save_before_waiting()
            else:
                await self.restart_for_new_spec()

        requested = (self.body["metadata"].get("annotations") or {}).get(ABORT_ANNOTATION)
        if requested is not None:
            await self.abort_on_request(str(requested))

        phase = self.status.phase
        if phase is Phase.RUNNING:
            return await self.advance_run(spec)
        if phase is not None:
            self.note_pause(spec)
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
