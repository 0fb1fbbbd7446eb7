"""The generic round loop every fault kind runs on, and the roll-back of every fault still in.

A round picks its targets reproducibly (seeded by experiment, run and round) and records them; a kind
that repeats (the table of actions) counts its round as done before the first attempt, so an operator
that dies mid-round resumes with the next round and never acts twice; a kind that acts once per run
counts its round as done once every chosen pod was tried, and a retry skips every pod already recorded.
Each attempt, under its workload's lock: the live refusal (fresh reads of policy, labels and the
workload, never the cache), then the dry run, then the record written before acting, then the
leader-only API call (`leadership.acting()`), the save and the Event; nothing starts once the run is
halted or past its deadline. What differs between kinds is theirs (`runtime.faults`).
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

from chaosguard.api.models import ChaosExperimentSpec, FaultState, Phase, RunStatus, TargetRecord
from chaosguard.decisions.pause import counted_records
from chaosguard.decisions.policy import Refusal, target_namespaces
from chaosguard.decisions.runs import invalid_policy_refusal, next_round_time
from chaosguard.decisions.selection import (
    PodView,
    after_kill,
    choose,
    classify,
    kill_refusal,
    pod_refusal,
    requested_count,
)
from chaosguard.runtime.context import World
from chaosguard.runtime.driverbase import DriverBase
from chaosguard.runtime.faults import Fault, fault_for, fault_for_record, injector, registered
from chaosguard.runtime.faults.base import CannotPrepare, Notice, TargetsNodes, placed_by_run
from chaosguard.runtime.leadership import NotLeading

# How long after its judgement an act may still land: the record before acting is written in between.
ACT_MARGIN_SECONDS = 1.0


class RoundLoop(DriverBase):
    async def play_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        """One round of the spec's fault kind (see the module docstring)."""
        fault = fault_for(spec.action)
        assert run.deadline is not None
        refusal = await fault.preflight(self, spec, world)
        if refusal is not None:
            self.emit("Warning", refusal.reason, str(refusal))
            await self.end_run(Phase.FAILED, refusal.reason, f"run {run.id}: nothing injected: {refusal}")
            return
        if fault.facts.repeats:
            round_number = run.rounds_done
            chosen = await self.pick_targets(spec, world, run, round_number, f"round {round_number + 1}: ")
            # The round counts as done before its first attempt: an operator that dies mid-round resumes
            # with the next round, so a round can leave pods untouched but never act twice.
            run.rounds_done = round_number + 1
            run.next_round_at = next_round_time(spec, run, now)
            await self.save()
            for victim in chosen:
                if self.halted or self.now() >= run.deadline:
                    break
                await self.attempt(fault, spec, run, victim, round_number)
            return
        if isinstance(fault, TargetsNodes):
            chosen = await fault.pick_nodes(self, spec, world, run)
        else:
            chosen = await self.pick_targets(spec, world, run, 0, "")
        # The round is done only once every chosen pod has been tried, so a read that fails half-way
        # (or an operator that dies) leaves it to be taken up again at the next step. A pod is tried
        # at most once per run: its record is written before acting, and the retry skips every
        # recorded pod and never tries more pods than the round chose.
        records = counted_records(fault.records(run))  # a fault a pause took out is put back on resume
        tried = {record.uid for record in records}
        untried = [victim for victim in chosen if victim.uid not in tried]
        for victim in untried[: max(0, len(chosen) - len(records))]:
            if self.halted or self.now() >= run.deadline:
                break
            await self.attempt(fault, spec, run, victim, 0)
        run.rounds_done, run.next_round_at = 1, None
        await self.save()

    async def attempt(
        self, fault: Fault, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int
    ) -> None:
        """One target's attempt (see the module docstring)."""
        reasons = fault.facts.reasons
        notices: list[Notice] = []
        async with self.context.workload_lock(victim.workload_key or victim.key):
            if isinstance(fault, TargetsNodes):
                refusal = await self.live_node_refusal(fault, spec, victim)
            else:
                refusal = await self.live_refusal(
                    spec, victim, fault.min_available(spec), fault.already_down(run, victim)
                )
            record = fault.record(self, spec, run, victim, round_number)
            if refusal is not None:
                message = fault.refuse(run, record, refusal)
                await self.save()
                self.emit("Normal", reasons.skipped, message)
                return
            if spec.dry_run:
                message = fault.would(run, record, victim)
                await self.save()
                self.emit("Normal", reasons.would, message)
                return
            if self.halted or run.deadline is None or self.now() >= run.deadline:
                return  # never act after the run has ended
            try:
                prepared = fault.prepare(self, spec, run, victim, record)
            except CannotPrepare as error:
                fault.fail(run, record, str(error))
                await self.save()
                self.emit("Warning", reasons.failed, f"pod {victim.key}: {error}")
                return
            fault.begin(run, record)
            # Recorded before the call (a restart must know of it, and never act twice), and at once, ahead
            # of routine writes: the judgement above must not go stale while the record waits its turn.
            await self.save(before_acting=True)
            try:
                async with self.context.leadership.acting():
                    notices = await fault.apply(self, spec, run, victim, record, prepared)
            except NotLeading:
                fault.interrupted(record)
                await self.save()
                return
            await self.save()
        for notice in notices:
            self.emit(notice.kind, notice.reason, notice.message)
        await fault.after(self, victim, record)

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
        stop = invalid_policy_refusal(world.invalid_policies) or self.stop_for_acting(world)
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

    async def live_node_refusal(self, fault: TargetsNodes, spec: ChaosExperimentSpec, node: PodView) -> Refusal | None:
        """A node's live refusal: the loop's own stop rules from the policies as they are now, then the
        kind's judgement of the node (read fresh)."""
        world = await self.fresh_world(spec)
        stop = invalid_policy_refusal(world.invalid_policies) or self.stop_for_acting(world)
        return stop or await fault.node_refusal(self, spec, world, node)

    def stop_for_acting(self, world: World) -> Refusal | None:
        """The stop rules (suspension, windows, blackouts) for an act judged now: now and ACT_MARGIN_SECONDS
        later, because the act follows its judgement by a status write (the record before acting). Under
        load that write takes a while, and a window must not close, nor a blackout begin, in between."""
        now = self.now()
        return self.stop_reason(world, now) or self.stop_reason(world, now + timedelta(seconds=ACT_MARGIN_SECONDS))

    async def resolve_interrupted_round(self, run: RunStatus) -> None:
        """Attempts recorded as begun but not finished (the operator died in between) are never redone."""
        changed = False
        for kind in registered().values():
            changed = await kind.resume(self, run) or changed
        if changed:
            await self.save()

    async def settle_faults(self, spec: ChaosExperimentSpec, run: RunStatus) -> bool:
        """What became of the run's faults since the last step; True when that ended the run."""
        return await fault_for(spec.action).settle(self, run)

    async def roll_back_faults(self, why: str = "abort") -> None:
        """Takes out every fault still in, each by the kind that placed it (see Fault.recover): nothing
        stays behind. (pod-kill leaves nothing to undo: killed pods are replaced by their controllers.)"""
        runs = [run for run in (self.status.current_run, self.status.last_run) if run is not None]
        active = [(run, f) for run in runs for f in run.faults if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
        # Only faults of a record the operator sealed, and only in that run's own target namespaces: an
        # entry someone else wrote into status must never send a clean-up container into their pod.
        mine = [(run, f) for run, f in active if self.vouches_for(run) and placed_by_run(run, f)]
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
        for run, fault in active:
            kind = fault_for_record(fault)
            if kind is not None:
                await kind.recover(self, run, fault, why)
            else:  # a record no kind claims: the injector's clean-up only ever removes chaosguard's own qdisc
                self.logger.warning(
                    "fault %s in pod %s/%s is of no known kind", fault.container, fault.namespace, fault.name
                )
                await injector.clear_fault(
                    self.context.api, fault, run.id, self.key, why, self.now, injector.injector_image()
                )
            verb = "removed" if fault.state is FaultState.REMOVED else "could not be removed"
            kind_name = fault.kind
            where = (
                f"node {fault.name}"
                if kind is not None and kind.facts.cluster_scoped
                else f"pod {fault.namespace}/{fault.name}"
            )
            self.emit(
                "Normal" if fault.state is FaultState.REMOVED else "Warning",
                f"{kind_name}Removed" if fault.state is FaultState.REMOVED else f"{kind_name}RemovalFailed",
                f"{kind_name.lower()} in {where} {verb}: {fault.removed_by or fault.message}",
            )
        await self.save()

    # The kinds' former entry points, kept for callers and tests that drive one step of a round.

    async def kill_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        await self.play_round(spec, world, run, now)

    async def inject_round(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, now: datetime) -> None:
        await self.play_round(spec, world, run, now)

    async def kill_one(
        self, spec: ChaosExperimentSpec, world: World, run: RunStatus, victim: PodView, round_number: int
    ) -> None:
        await self.attempt(fault_for(spec.action), spec, run, victim, round_number)

    async def inject_one(self, spec: ChaosExperimentSpec, world: World, run: RunStatus, victim: PodView) -> None:
        await self.attempt(fault_for(spec.action), spec, run, victim, 0)

    async def settle_injectors(self, run: RunStatus) -> bool:
        return await self.settle_faults(self.parsed_spec(), run)
