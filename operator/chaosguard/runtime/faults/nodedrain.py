"""The node-drain fault kind: a node cordoned as chaosguard's, its pods evicted, and uncordoned at the end.

Its targets are nodes (`TargetsNodes`): chosen by spec.nodeDrain's nodeSelector and mode, each judged
live right before it is cordoned (decisions.nodes: control plane, protected, already cordoned, not
Ready, the last operator replica, maxNodePercentage). One fault record per node, written before the
cordon; the cordon carries an annotation naming the experiment and the run (`CORDON_MARK`), and only
a node carrying exactly that mark is ever uncordoned, so a cordon someone else made is never lifted.

The evictions go through the Eviction API (PodDisruptionBudgets hold), one kill record per pod, each
judged against the live workload first (maxPercentage, as for pod-kill). A pod a budget or the cap
holds back (429, Capped) is recorded and tried again on each step until the run's deadline, never
forced. The evicted pods' recovery (their workloads back at full Ready strength) is pod-kill's
recovery tracking (`runtime.recovery`). At the deadline, on abort, on a pause, on deletion, after a restart and
from any replica (`recover`), the node is uncordoned; at start-up, nodes marked by an experiment that
no longer exists are uncordoned too (`sweep_marked_nodes`).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from chaosguard.api.actions import Action, ActionFacts, facts_of
from chaosguard.api.models import (
    ChaosExperimentSpec,
    FaultRecord,
    FaultState,
    KillRecord,
    KillResult,
    RunStatus,
    TargetRecord,
)
from chaosguard.clients import nodes as node_api
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.nodes import (
    NodeView,
    choose_nodes,
    classify_nodes,
    drain_plan,
    experiment_of_mark,
    mark_of,
    node_cap_refusal,
    node_refusal,
)
from chaosguard.decisions.pause import carrier_label
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.selection import PodView, count_for_mode, kill_refusal
from chaosguard.runtime import metrics
from chaosguard.runtime.context import World
from chaosguard.runtime.faults.base import Host, KeepsFaultRecords, Notice, register
from chaosguard.runtime.faults.podkill import append_kill
from chaosguard.runtime.leadership import NotLeading

# Pods that are not evicted yet but may be on a later try (a budget or the cap held them back).
RETRIED = (KillResult.SKIPPED_BUDGET, KillResult.CAPPED, KillResult.FAILED)
# In a drain's message while the node's pods could not be read: settle tries the evictions again.
UNREAD = "its pods could not be read"


def as_target(node: NodeView) -> PodView:
    """A node as the round loop's target view: no namespace, its name, UID and labels."""
    return PodView(
        namespace="",
        name=node.name,
        uid=node.uid,
        labels=node.labels,
        phase="Running",
        ready=node.ready,
        terminating=False,
        workload=None,
    )


class NodeDrain(KeepsFaultRecords):
    action = Action.NODE_DRAIN.value
    not_done = "not drained"

    @property
    def facts(self) -> ActionFacts:
        return facts_of(self.action)

    def records(self, run: RunStatus) -> list[Any]:
        return [fault for fault in run.faults if fault.kind == self.facts.record_kind]

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None:
        return None

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        return 0

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        return None

    async def _replicas(self, host: Host) -> tuple[dict[str, int], bool]:
        namespace = host.context.operator_namespace
        if not namespace:
            return {}, False
        return await host.context.api.call(node_api.operator_replicas_by_node, namespace), True

    async def pick_nodes(self, host: Host, spec: ChaosExperimentSpec, world: World, run: RunStatus) -> list[PodView]:
        drain = spec.node_drain
        assert drain is not None  # the model requires the block with this action
        found, (replicas, known) = await asyncio.gather(host.context.api.call(node_api.nodes), self._replicas(host))
        eligibility = classify_nodes(found, drain.node_selector, world.effective, replicas, known)
        count = count_for_mode(drain.mode, drain.value, len(eligibility.eligible))
        seed = f"{host.body['metadata'].get('uid')}/{run.id}/0"
        chosen = choose_nodes(eligibility.eligible, count, random.Random(seed))
        run.targets = [TargetRecord(namespace="", name=node.name, uid=node.uid, workload="Node") for node in chosen]
        if not chosen:
            reasons = "; ".join(str(refusal) for _, refusal in eligibility.excluded) or "none matched"
            host.emit("Warning", "NoTargets", f"no node may be drained: {reasons}")
        return [as_target(node) for node in chosen]

    async def node_refusal(self, host: Host, spec: ChaosExperimentSpec, world: World, node: PodView) -> Refusal | None:
        found, (replicas, known) = await asyncio.gather(host.context.api.call(node_api.nodes), self._replicas(host))
        current = next((view for view in found if view.uid == node.uid), None)
        if current is None:
            return Refusal("gone", f"node {node.name} is gone")
        return node_refusal(current, world.effective, replicas, known) or node_cap_refusal(
            current, found, world.effective
        )

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        return FaultRecord(
            namespace="",
            name=victim.name,
            uid=victim.uid,
            workload="Node",
            # The carrier's name is the record kind's key (FaultRecord.kind); the node's mark names the run.
            # After a resume the name counts the pauses too: replicas tell a run's faults apart by (uid,
            # container), and a drain taken out by a pause must not pass for the node drained again.
            container=f"chaosguard-{self.action}-{carrier_label(run)}",
            impairment=self.describe(spec),
            deadline=run.deadline,
        )

    def would_do(self, record: Any, victim: PodView) -> str:
        return f"would cordon node {victim.name} and evict its pods in the target namespaces"

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        return mark_of(host.key, run.id)

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        cordoned, message = await host.context.api.call(node_api.cordon, victim.name, victim.uid, prepared)
        if not cordoned:
            record.state, record.message = FaultState.FAILED, f"not drained: {message}"
            return [Notice("Warning", self.facts.reasons.failed, record.message)]
        record.state, record.injected_at = FaultState.ACTIVE, host.now()
        run.injections_total += 1
        try:
            evicted, waiting, stay = await self._evict(host, spec, run, record)
        except Exception as error:  # the node is cordoned and recorded: settle tries the evictions again
            record.message = f"{message}; {UNREAD} ({error}), tried again on the next step"
            return [Notice("Warning", self.facts.reasons.done, record.message)]
        record.message = _progress(message, evicted, waiting, stay)
        return [Notice("Normal", self.facts.reasons.done, record.message)]

    async def _evict(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, record: FaultRecord
    ) -> tuple[int, int, int]:
        """One pass over the node's pods: evicts those the plan picks that their live workload allows (the
        cap, as for pod-kill). Returns (evicted by this run so far, still held back, left on the node).
        Call it as the leader."""
        drain = spec.node_drain
        assert drain is not None
        pods, world = await asyncio.gather(
            host.context.api.call(node_api.pods_on_node, record.name), host.fresh_world(spec)
        )
        plan = drain_plan(pods, run.target_namespaces, spec.target.selector, world.effective, world.namespace_labels)
        for pod in plan.evict:
            if host.halted:  # e.g. the guard decided a breach a moment ago: not one eviction more
                break
            kill = _kill_record(run, pod, record.name, host)
            _, state = await host.live_workload(pod)
            refusal = kill_refusal(pod, state, world.effective, None)
            if refusal is not None:
                kill.result, kill.method, kill.message = KillResult.CAPPED, "none", str(refusal)
                continue
            result, method, message = await host.context.api.call(
                Cluster.kill, pod, grace_period_seconds=drain.grace_period_seconds, use_eviction=True
            )
            kill.at, kill.result, kill.method, kill.message = host.now(), result, method, message
            metrics.KILLS.labels(result.value).inc()
            if result is KillResult.KILLED:
                run.kills_total += 1
        ours = [kill for kill in run.kills if kill.node == record.name]
        evicted = {kill.uid for kill in ours if kill.result is KillResult.KILLED}
        waiting = sum(1 for kill in ours if kill.result in RETRIED)
        stay = sum(1 for exclusion in plan.stay if exclusion.pod.uid not in evicted)
        return len(evicted), waiting, stay

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        return None

    def interrupted(self, record: Any) -> None:
        record.state, record.message = FaultState.FAILED, "not drained: this replica stopped leading"

    async def resume(self, host: Host, run: RunStatus) -> bool:
        """A drain recorded as begun but not finished (the operator died in between): the node's mark says
        whether the cordon went in. Then it is Active (the evictions go on from `settle`), else not done."""
        begun = [f for f in self.records(run) if f.state is FaultState.INJECTING]
        if not begun:
            return False
        found = {node.name: node for node in await host.context.api.call(node_api.nodes)}
        mark = mark_of(host.key, run.id)
        for fault in begun:
            node = found.get(fault.name)
            if node is not None and node.mark == mark:
                fault.state, fault.injected_at = FaultState.ACTIVE, fault.injected_at or host.now()
                fault.message = f"node {fault.name} was cordoned before the operator restarted"
            else:
                fault.state, fault.message = FaultState.FAILED, "not drained: the operator restarted before the cordon"
        return True

    async def settle(self, host: Host, run: RunStatus) -> bool:
        """Until the deadline, the leader tries again the pods a budget or the cap held back (and any pod
        that came onto the node before the cordon was seen); at the deadline the node is uncordoned,
        whatever the recovery wait after it (a fault never outlives its deadline)."""
        changed = False
        for fault in self.records(run):
            if fault.state is not FaultState.ACTIVE:
                continue
            if fault.deadline is not None and host.now() >= fault.deadline:
                await self.recover(host, run, fault, "deadline")
                host.emit("Normal", "DrainRemoved", f"node {fault.name}: {fault.message}")
                changed = True
                continue
            if not host.context.leadership.leading:
                continue
            held = any(kill.node == fault.name and kill.result in RETRIED for kill in run.kills)
            if not held and UNREAD not in fault.message:
                continue
            spec = ChaosExperimentSpec.model_validate(host.body["spec"])
            try:
                async with host.context.leadership.acting():
                    evicted, waiting, stay = await self._evict(host, spec, run, fault)
            except NotLeading:
                continue
            except Exception as error:  # never let it stop the step: the deadline and the guard come first
                progress = f"node {fault.name} cordoned; {UNREAD} ({error}), tried again on the next step"
                fault.message, changed = progress, changed or progress != fault.message
                continue
            progress = _progress(f"node {fault.name} cordoned", evicted, waiting, stay)
            if progress != fault.message:
                fault.message, changed = progress, True
        if changed:
            await host.save()
        return False

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        """Uncordons the node if it still carries this run's mark; never a node someone else cordoned."""
        try:
            done, message = await host.context.api.call(node_api.uncordon, fault.name, mark_of(host.key, run.id))
        except Exception as error:  # recover never raises: the next roll back (or restart) tries again
            fault.message = f"could not uncordon node {fault.name}: {error}"
            return
        if done:
            fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, host.now(), why
        fault.message = message

    def describe(self, spec: ChaosExperimentSpec) -> str:
        return "cordon the node and evict its pods (Eviction API)"


def _kill_record(run: RunStatus, pod: PodView, node: str, host: Host) -> KillRecord:
    """The pod's kill record in this run (one per pod, however often a budget held it back)."""
    existing = next((kill for kill in run.kills if kill.uid == pod.uid), None)
    if existing is not None:
        return existing
    record = KillRecord(
        namespace=pod.namespace,
        name=pod.name,
        uid=pod.uid,
        workload=pod.workload or "",
        at=host.now(),
        result=KillResult.FAILED,
        method="none",
        round=1,
        node=node,
    )
    append_kill(run, record)
    return record


def _progress(head: str, evicted: int, waiting: int, stay: int) -> str:
    parts = [f"{evicted} pod{'s' if evicted != 1 else ''} evicted"]
    if waiting:
        parts.append(f"{waiting} held back by a disruption budget or the cap (retried until the deadline)")
    if stay:
        parts.append(f"{stay} left on the node (not targeted, or not to be killed)")
    return f"{head}; {', '.join(parts)}"


async def sweep_marked_nodes(cluster: Cluster) -> list[str]:
    """At start-up: a node carrying the mark of an experiment that no longer exists (deleted while no
    operator ran, its finalizer removed by hand) is uncordoned. Experiments that exist are their own
    drivers' business (their roll back uncordons by the run's mark). Returns what it did."""
    marked, experiments = await asyncio.gather(
        asyncio.to_thread(node_api.marked_nodes, cluster), asyncio.to_thread(cluster.experiments)
    )
    existing = {f"{item['metadata']['namespace']}/{item['metadata']['name']}" for item in experiments}
    actions = []
    for node in marked:
        assert node.mark is not None
        if experiment_of_mark(node.mark) in existing:
            continue
        try:
            _, message = await asyncio.to_thread(node_api.uncordon, cluster, node.name, node.mark)
            actions.append(f"{message}: its experiment {experiment_of_mark(node.mark)} is gone")
        except Exception as error:
            actions.append(f"could not uncordon node {node.name} (its experiment is gone): {error}")
    return actions


NODE_DRAIN = register(NodeDrain())
