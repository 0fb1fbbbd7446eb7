"""Steady state: the before-check that a run starts from, the after-check it ends with, and the guard
during it. Puts the run under the operator's one GuardScheduler (the author's conditions and the
policies' guards), turns each verdict into samples or an abort (in any replica, leading or not), and
owns the standby's abort path (`take_up_latest_run`: act on the run as the API holds it now)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from chaosguard.api.durations import to_seconds
from chaosguard.api.models import ChaosExperimentSpec, Phase, RunStatus, SliAbort
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.platform_guards import (
    GuardKind,
    PlatformCondition,
    PlatformGuards,
    breach_text,
    budget_refusal_text,
    burn_rate_condition,
    unmeasured_text,
)
from chaosguard.decisions.platform_guards import Phase as GuardPhase
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.runs import verdict_condition
from chaosguard.decisions.slo import ConditionStatus as SliStatus
from chaosguard.decisions.slo import GuardState, Verdict, VerdictKind, format_labels, format_value
from chaosguard.runtime import lanes, metrics
from chaosguard.runtime.context import World
from chaosguard.runtime.driverbase import DEFAULT_GUARD_INTERVAL, DriverBase, RunEndedElsewhere
from chaosguard.runtime.guard import GuardedRun, SteadyStateProbe

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


class SteadyState(DriverBase):
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
        if run is None or run.deadline is None or self.abort_requested.is_set() or self.breach_decided:
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
            breach=self.breach_flag(run_id),
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

    async def ended_by_the_leader(self, run_id: str) -> bool:
        """Whether the run's end shows up in the live object before this standby is to act itself
        (`decisions.standby`): a living leader judges the same breach at the same tick and ends the run;
        a standby that waits for it leaves the API server one abort to write per run instead of two (at
        a thousand runs aborting at once, half the queue), and still acts within the grace when the
        leader is dead. It wakes when the object changes (handlers.wake_standby) or when it is to act,
        never to poll: a thousand runs waiting at once would keep the loop from the very events that
        show the leader's ends."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        ends, wait = self.context.run_ends, self.context.standby_wait
        changed = self.context.abort_waits.setdefault(self.key, asyncio.Event())
        try:
            while True:
                current = ((self.body.get("status") or {}).get("currentRun") or {}).get("id")
                if current != run_id:
                    return True
                acts_at = wait.acts_at(since, ends.last_leader_end, len(self.context.abort_waits))
                if loop.time() >= acts_at:
                    return False
                changed.clear()
                timer = loop.call_at(acts_at, changed.set)
                try:
                    await changed.wait()
                finally:
                    timer.cancel()
        finally:
            self.context.abort_waits.pop(self.key, None)

    async def take_up_latest_run(self, verdict: Verdict) -> bool:
        """A standby's abort starts from the run as the API holds it now (the faults the leader placed
        a moment ago included), keeping the verdict's guard state. False when that run is over already
        (another replica ended it) or its record is not to be trusted: nothing more to do here."""
        run = self.status.current_run
        if run is not None and await self.ended_by_the_leader(run.id):
            return False
        fresh = await self.context.api.call(Cluster.experiment, self.namespace, self.name)
        raw = dict((fresh or {}).get("status") or {})
        self.adopt_status(raw)
        self.adopted_version = str(((fresh or {}).get("metadata") or {}).get("resourceVersion") or "")
        latest = self.status.current_run
        same_run = run is not None and latest is not None and latest.id == run.id
        if not same_run or latest is None or self.run_record_problem(latest) is not None:
            return False
        self.context.run_ends.ending_here(self.key, latest.id)  # its end, when seen, is not a sign of the leader
        return True
