"""The pod-kill fault kind: one pod evicted (or deleted with a grace period, never forced) per attempt.

Only what differs from the other kinds lives here: the kill record and its results (a live refusal
becomes Capped, SkippedMinAvailable or Gone), the Eviction API call, the Events on the experiment and
on the pod's workload, and the resolution of a kill recorded as begun when the operator restarted
(never redone). A killed pod leaves nothing to undo: its controller replaces it, and recovery tracking
(`runtime.recovery`) records how long its workload took to be back at full strength.
"""

from __future__ import annotations

from typing import Any

from chaosguard.api.actions import Action, ActionFacts, facts_of
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, KillRecord, KillResult, RunStatus
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.selection import PodView
from chaosguard.runtime import metrics
from chaosguard.runtime.context import World
from chaosguard.runtime.faults.base import Host, Notice, register

MAX_KILL_RECORDS = 100
# A live refusal's rule, as the result of the kill it stopped.
REFUSED_AS = {
    "max-percentage": KillResult.CAPPED,
    "min-available": KillResult.SKIPPED_MIN_AVAILABLE,
    "gone": KillResult.GONE,
}


def append_kill(run: RunStatus, record: KillRecord) -> None:
    run.kills.append(record)
    if len(run.kills) > MAX_KILL_RECORDS:
        del run.kills[: len(run.kills) - MAX_KILL_RECORDS]


def _verb(result: KillResult) -> str:
    return {
        KillResult.KILLED: "killed",
        KillResult.SKIPPED_BUDGET: "skipped (disruption budget)",
        KillResult.GONE: "skipped (gone)",
        KillResult.FAILED: "failed to kill",
    }.get(result, result.value)


class PodKill:
    action = Action.POD_KILL.value

    @property
    def facts(self) -> ActionFacts:
        return facts_of(self.action)

    def records(self, run: RunStatus) -> list[Any]:
        return list(run.kills)

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None:
        return spec.pod_kill_settings.min_available

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        return 0  # a killed pod is gone from the live reads already

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        return None

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        return KillRecord(
            namespace=victim.namespace,
            name=victim.name,
            uid=victim.uid,
            workload=victim.workload or "",
            at=host.now(),
            result=KillResult.FAILED,
            round=round_number + 1,
        )

    def refuse(self, run: RunStatus, record: Any, refusal: Refusal) -> str:
        record.result = REFUSED_AS.get(refusal.rule, KillResult.CAPPED)
        record.method = "none"
        record.message = str(refusal)
        append_kill(run, record)
        return str(record.message)

    def would(self, run: RunStatus, record: Any, victim: PodView) -> str:
        record.result, record.method = KillResult.WOULD_KILL, "dry-run"
        record.message = f"dry run: would kill {victim.key} ({victim.workload})"
        append_kill(run, record)
        return str(record.message)

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        return spec.pod_kill_settings

    def fail(self, run: RunStatus, record: Any, message: str) -> None:
        record.result, record.method, record.message = KillResult.FAILED, "none", message
        append_kill(run, record)

    def begin(self, run: RunStatus, record: Any) -> None:
        record.method = "pending"  # a restart finds it and never kills twice (see resume)
        append_kill(run, record)

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        result, method, message = await host.context.api.call(
            Cluster.kill,
            victim,
            grace_period_seconds=prepared.grace_period_seconds,
            use_eviction=prepared.respect_disruption_budgets,
        )
        record.result, record.method, record.message = result, method, message
        if result is KillResult.KILLED:
            run.kills_total += 1
        metrics.KILLS.labels(result.value).inc()
        text = f"{_verb(result)} pod {victim.key} (uid {victim.uid}) of {victim.workload} by {method}: {message}"
        return [Notice("Normal" if result is not KillResult.FAILED else "Warning", f"Pod{result.value}", text)]

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        """The Event on the pod's workload, so its own `kubectl describe` shows who killed the pod."""
        if record.result is KillResult.KILLED and victim.workload:
            owner = await host.context.api.call(Cluster.workload_object, victim.namespace, victim.workload)
            if owner is not None:
                host.context.emit(
                    owner, "Normal", "ChaosPodKilled", f"ChaosExperiment {host.key} killed pod {victim.name}"
                )

    def interrupted(self, record: Any) -> None:
        record.result, record.method = KillResult.GONE, "interrupted"
        record.message = "this replica stopped leading before the kill; it was not done"

    async def resume(self, host: Host, run: RunStatus) -> bool:
        """A kill recorded as begun but not finished (the operator died in between) is never redone."""
        pending = [kill for kill in run.kills if kill.result is KillResult.FAILED and kill.method == "pending"]
        for kill in pending:
            pods = await host.context.api.call(Cluster.pods, kill.namespace)
            alive = next((pod for pod in pods if pod.uid == kill.uid and not pod.terminating), None)
            if alive is None:
                kill.result, kill.method = KillResult.KILLED, "eviction"
                kill.message = "the kill went through before the operator restarted"
            else:
                kill.result, kill.method = KillResult.GONE, "interrupted"
                kill.message = "the operator restarted before this kill; it was not repeated"
        return bool(pending)

    async def settle(self, host: Host, run: RunStatus) -> bool:
        return False  # nothing stays in place: recovery tracking follows the workloads

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        return None  # never called: a kill leaves no fault record

    def describe(self, spec: ChaosExperimentSpec) -> str:
        grace = spec.pod_kill_settings.grace_period_seconds
        how = "eviction" if spec.pod_kill_settings.respect_disruption_budgets else "delete"
        return f"kill by {how}" + (f", grace {grace}s" if grace is not None else "")


POD_KILL = register(PodKill())
