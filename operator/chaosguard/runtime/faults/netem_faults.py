"""The network fault kinds (latency, network impairments, partition): one injector per pod, an ephemeral
container that holds the fault until the run's deadline (`runtime.faults.injector`, and
runtime/injector/netem.sh inside it).

Only what differs from pod-kill lives here: the fault record (written before the injector is added),
the destination preflight of the kinds the table of actions marks for it, the injector container and
its absolute deadline, the settling of injectors that exited early, and the removal of a fault (its
own timer, or a clean-up container). All three kinds share this module; each is one registration.
"""

from __future__ import annotations

import math
from typing import Any

from kubernetes.client.exceptions import ApiException

from chaosguard.api.actions import Action, ActionFacts, facts_of
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, RunStatus
from chaosguard.clients.kube import Cluster, api_message
from chaosguard.decisions.netem import NetemArgumentError
from chaosguard.decisions.pause import carrier_label, counted_records
from chaosguard.decisions.policy import Refusal, destination_refusals
from chaosguard.decisions.selection import PodView
from chaosguard.runtime.context import World
from chaosguard.runtime.faults import injector
from chaosguard.runtime.faults.base import CannotPrepare, Host, KeepsFaultRecords, Notice, register


class NetemFault(KeepsFaultRecords):
    def __init__(self, action: Action) -> None:
        self.action = action.value

    @property
    def facts(self) -> ActionFacts:
        return facts_of(self.action)

    def records(self, run: RunStatus) -> list[Any]:
        return list(run.faults)

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None:
        return None  # a faulted pod stays Ready: the cap counts this run's faults instead (already_down)

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        live = [f for f in counted_records(run.faults) if f.workload == victim.workload]
        return sum(1 for f in live if f.namespace == victim.namespace)

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        """Whether the fault's destinations reach a node, the API server or the operator's own pods,
        read live right before injecting; unreadable addresses refuse too (when unsure, do not inject)."""
        if not self.facts.destination_checks:
            return None
        context = host.context
        if not context.operator_namespace:
            return Refusal(
                "operator-namespace-unknown",
                "the operator's own namespace is unknown, so whether this fault would reach chaosguard's own pods "
                "and Services cannot be judged; set CHAOSGUARD_NAMESPACE in the operator's environment to its "
                "namespace (the shipped manifests set it from the pod's metadata.namespace)",
                "spec.action",
            )
        try:
            guarded = await context.api.call(Cluster.guarded_addresses, context.operator_namespace)
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

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        return FaultRecord(
            namespace=victim.namespace,
            name=victim.name,
            uid=victim.uid,
            workload=victim.workload or "",
            container=injector.container_name(carrier_label(run), self.action),
            impairment=self.describe(spec),
            deadline=run.deadline,
        )

    def would_do(self, record: Any, victim: PodView) -> str:
        return f"would apply {record.impairment} to {victim.key}"

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        assert run.deadline is not None
        # An absolute deadline: the injector holds only until the run's end however late the kubelet
        # starts it, and injects nothing if it starts after that.
        deadline_at = math.ceil(run.deadline.timestamp())
        try:
            return injector.injector_container(
                spec,
                run.id,
                host.key,
                deadline_at,
                injector.injector_image(),
                now=host.now().timestamp(),
                name=record.container,  # after a resume a new name (`-p1`): a pod never takes one twice
            )
        except NetemArgumentError as error:
            # The model refuses such settings; should one slip through, the fault fails with the reason
            # (and the run ends Failed when no fault is in) instead of the step failing forever.
            raise CannotPrepare(f"not injected: {error}") from error

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        kind = self.facts.record_kind
        try:
            await host.context.api.call(
                Cluster.add_ephemeral_container, victim.namespace, victim.name, victim.uid, prepared
            )
        except ApiException as error:
            record.state = FaultState.FAILED
            record.message = f"the API refused the injector ({error.status}): {api_message(error)}"
            return [Notice("Warning", f"{kind}Refused", f"pod {victim.key}: {record.message}")]
        assert run.deadline is not None
        record.state, record.injected_at = FaultState.ACTIVE, host.now()
        record.message = f"{record.impairment} added by {record.container} until {run.deadline.isoformat()}"
        run.injections_total += 1
        return [Notice("Normal", self.facts.reasons.done, f"pod {victim.key} (uid {victim.uid}): {record.message}")]

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        return None

    def interrupted(self, record: Any) -> None:
        record.state, record.message = FaultState.FAILED, "not injected: this replica stopped leading"

    async def resume(self, host: Host, run: RunStatus) -> bool:
        return False  # a fault recorded before its injector was added is cleared by the clean-up, never redone

    async def settle(self, host: Host, run: RunStatus) -> bool:
        """An injector that exited early (e.g. on a node without sch_netem) fails its fault with the
        kubelet's reason; a run with no fault left in ends Failed. True when it ended the run."""
        image = injector.injector_image()
        failed = await injector.settle_injectors(host.context.api, run.faults, run.id, host.key, host.now, image)
        for fault in failed:
            host.emit("Warning", f"{fault.kind}Failed", f"pod {fault.namespace}/{fault.name}: {fault.message}")
        none_in = f"no {run.faults[0].kind.lower()} fault is in place" if run.faults else ""
        return await self.end_if_none_in(host, run, bool(failed), "InjectionFailed", none_in)

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        """One past its deadline counts as removed by the injector's own timer only when the kubelet
        reports the injector exited 0 saying so; any other gets a clean-up container."""
        ended = None
        if fault.deadline is not None and host.now() >= fault.deadline:
            ended = await injector.ended_by_own_timer(host.context.api, fault)
        if ended is not None:
            fault.state, fault.removed_at = FaultState.REMOVED, fault.deadline
            fault.removed_by = "deadline (the injector's own timer)"
            fault.message = f"{fault.container} reported: {ended}"
            return
        await injector.clear_fault(host.context.api, fault, run.id, host.key, why, host.now, injector.injector_image())

    def describe(self, spec: ChaosExperimentSpec) -> str:
        return injector.impairment_summary(spec)


LATENCY = register(NetemFault(Action.LATENCY))
NETWORK = register(NetemFault(Action.NETWORK))
PARTITION = register(NetemFault(Action.PARTITION))
