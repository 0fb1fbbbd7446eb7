"""Recovery tracking: each killed pod's time until its workload is back at full Ready strength (during
the run and for the recovery timeout after it), and the end of a run that waits for its workloads and
its steady state to come back (Completed, or Failed with DidNotRecover)."""

from __future__ import annotations

from datetime import datetime

from chaosguard.api.durations import format_seconds, to_seconds
from chaosguard.api.models import ChaosExperimentSpec, KillResult, Phase, RunStatus
from chaosguard.decisions.selection import recovered_at, workload_states
from chaosguard.runtime import metrics
from chaosguard.runtime.driverbase import ACTIVE_POLL_SECONDS, DEFAULT_RECOVERY_TIMEOUT, DriverBase


class RecoveryTracking(DriverBase):
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
