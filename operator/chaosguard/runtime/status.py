"""The status writer: every write of an experiment's status and every Event.

Merge patches of what changed since the last write; the run-id-guarded JSON patches of a current run
(a `test /status/currentRun/id` first, so that two replicas ending one run leave one record:
`write_guarded`, `RunEndedElsewhere`), taking up another replica's end of the run and clearing what
this replica placed after it; conditions; the seals of each written run; the SLI samples, written in
background batches; the fault gauges; and the Events (`emit`)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from chaosguard.api.durations import to_seconds
from chaosguard.api.models import Condition, ConditionStatus, FaultRecord, FaultState, RunStatus
from chaosguard.clients.kube import Cluster, api_message
from chaosguard.decisions.mergepatch import json_patch_operations, merge_patch
from chaosguard.decisions.run_record import seal_run
from chaosguard.decisions.samples import record_verdict, sample_write_interval, statuses_changed
from chaosguard.decisions.slo import Verdict
from chaosguard.runtime import faults, lanes, metrics
from chaosguard.runtime.driverbase import DEFAULT_GUARD_INTERVAL, SAMPLE_BATCH_SECONDS, DriverBase, RunEndedElsewhere
from chaosguard.runtime.faults.injector import clear_fault


class StatusWriter(DriverBase):
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

    async def save(self, only: frozenset[str] | None = None, *, before_acting: bool = False) -> None:
        """Writes what changed in status since the last write, as a merge patch, at once (every
        state change; SLI samples ride along, and between changes go out in batches). With `only`,
        just those top-level fields of status (an end's verdict first: `VERDICT_FIELDS`); the rest
        stays unsaved for the next write.

        The write takes its place in the operator's `StatusWriteOrder` first: inside `lanes.urgent()`
        it goes at once, else it waits while any urgent write is pending. A record `before_acting` goes at
        once too (the act follows it, judged just before it), without holding routine writes back: a
        thousand runs' first kills must not starve the writes that start the runs."""
        if lanes.in_urgent_lane() and not before_acting:
            # Every abort ready on this loop takes its faults out and stamps its end before any of them
            # spends the loop's time on serialising its write: in a burst of a thousand aborts, the writes
            # wait for the API server anyway, the faults must not wait for each other's writes.
            await asyncio.sleep(0)
        order = self.context.status_writes
        async with order.unordered() if before_acting else order.for_this_context():
            await self._write_status(only)

    async def _write_status(self, only: frozenset[str] | None) -> None:
        # The snapshot is taken inside the lock, so the last write to land is always the newest
        # state, even when the guard and the driver save at the same moment. An urgent write takes its
        # place among those in flight (`sending`) before it serialises anything: in a burst of aborts the
        # loop then spends its time on the writes the API server is ready for, and on new verdicts.
        async with self.save_lock, self.context.status_writes.sending():
            if self.status.observed_generation is None:
                self.status.observed_generation = self.generation
            latest = self.status.current_run or self.status.last_run
            self.status.hits = latest.kills_total + latest.injections_total if latest is not None else 0
            key, uid = self.context.signing_key, str(self.body["metadata"].get("uid") or "")
            for own in (self.status.current_run, self.status.last_run):
                if own is not None and key is not None and self.vouches_for(own):
                    own.seal = seal_run(key, uid, own)  # every write of a run is sealed anew
            publish_fault_gauges(self.key, self.status.current_run)
            wire = self.status.model_dump(by_alias=True, mode="json")
            if only is not None:
                wire = with_fields_of(self.written, wire, only)
            patch = merge_patch(self.written, wire)
            self.unsaved = only is not None
            if not patch:
                return
            run_id = (self.written.get("currentRun") or {}).get("id")
            if run_id:
                wire = await self.write_guarded(str(run_id), wire)
            else:
                await self.context.api.call(Cluster.patch_experiment_status, self.namespace, self.name, patch)
            self.written = wire
            self.last_write = asyncio.get_running_loop().time()
            metrics.STATUS_WRITES.labels("verdict" if only is not None else "change").inc()

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
                    await self.take_up_remote_end(run, raw)
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

    def write_samples_soon(self, run: RunStatus) -> None:
        """Sends the run's SLI samples in the background, one write at a time: every SAMPLE_BATCH_SECONDS
        when an SLI's status changed since the last write, else as often as the operator's budget of
        sample writes allows with this many runs guarded (`sample_write_interval`). The guard never waits
        for it: a routine write queued behind others must not hold up the next tick, which may be the one
        that sees a breach."""
        now = asyncio.get_running_loop().time()
        if self.samples_write is not None and not self.samples_write.done():
            return
        since = now - self.last_write
        if since < SAMPLE_BATCH_SECONDS:
            return
        written = (self.written.get("currentRun") or {}).get("slis")
        if not statuses_changed(written, run.slis) and since < sample_write_interval(
            self.context.guard.guarded_count(), SAMPLE_BATCH_SECONDS
        ):
            return
        self.last_write = now
        self.samples_write = asyncio.create_task(self.write_samples(run), name=f"samples {self.key}")

    async def write_samples(self, run: RunStatus) -> None:
        """Replaces the run's SLI summaries (with their trends) and guard state in status, only while that
        run is still the current one there (a JSON patch guarded by a `test` of its id): landing after the
        run's end or after a newer write of the same samples can then change nothing that matters."""
        wire = run.model_dump(by_alias=True, mode="json", include={"slis", "sli_state"})
        operations = [
            {"op": "test", "path": "/status/currentRun/id", "value": run.id},
            *({"op": "add", "path": f"/status/currentRun/{key}", "value": value} for key, value in wire.items()),
        ]
        try:
            async with self.context.status_writes.routine():
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
        run.slis = record_verdict(run.slis, verdict, self.first_trend_step())
        for result in verdict.results:
            if result.value is not None:
                metrics.SLI_VALUE.labels(self.key, result.condition).set(result.value)

    def first_trend_step(self) -> float:
        """A new trend's step: the guard's interval, one point per tick until the points run out."""
        if self.guarded is not None:
            return self.guarded.interval
        try:
            steady = self.parsed_spec().steady_state
        except ValidationError:
            steady = None
        return to_seconds(steady.interval) if steady is not None else DEFAULT_GUARD_INTERVAL

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
        await self.take_up_remote_end(run, raw)
        return True

    async def clear_left_behind(self, run: RunStatus, left: list[FaultRecord]) -> None:
        """Faults this replica placed after another replica's abort read the run (an injector added
        while it was ending the run) go too."""
        if not left:
            return
        with lanes.urgent():
            for fault in left:
                kind = faults.fault_for_record(fault)
                if kind is not None and kind.facts.cluster_scoped:
                    await kind.recover(self, run, fault, "abort")
                    continue
                if kind is not None and not kind.facts.injector:
                    continue  # nothing of it stays in the pod to clear (a restart's signaller is over)
                await clear_fault(self.context.api, fault, run.id, self.key, "abort", self.now, faults.injector_image())
                self.logger.warning("cleared %s in %s/%s after the run ended", fault.kind, fault.namespace, fault.name)

    async def take_up_remote_end(self, run: RunStatus, raw: Mapping[str, Any]) -> None:
        """The run ended elsewhere: stop guarding and acting for it, adopt that record, and clear the
        faults this replica placed that the record does not show as taken out."""
        self.abort_requested.set()
        self.stop_guard()
        self.context.running.discard(self.key)
        metrics.count_run(run.id, active=False)
        placed = [f for f in run.faults if f.state in (FaultState.ACTIVE, FaultState.INJECTING)]
        self.adopt_status(raw)
        ended = self.status.last_run
        removed = {(f.uid, f.container) for f in (ended.faults if ended else []) if f.state is FaultState.REMOVED}
        publish_fault_gauges(self.key, None)
        await self.clear_left_behind(run, [f for f in placed if (f.uid, f.container) not in removed])

    def emit(self, kind: str, reason: str, message: str) -> None:
        """An Event on the experiment, and the same line in the log."""
        self.context.status_writes.post_event(lambda: self.context.emit(self.body, kind, reason, message))
        log = self.logger.warning if kind == "Warning" else self.logger.info
        log("%s: %s", reason, message)


def with_fields_of(written: Mapping[str, Any], wire: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """The status as last written, with just `fields` (top-level, wire names) taken from `wire`: a field
    `wire` no longer has is left out too."""
    partial = copy.deepcopy(dict(written))
    for name in fields:
        if wire.get(name) is None:
            partial.pop(name, None)
        else:
            partial[name] = copy.deepcopy(wire[name])
    return partial


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
