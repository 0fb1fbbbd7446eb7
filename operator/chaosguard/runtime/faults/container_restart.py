"""The container-restart fault kind: one named container of each target pod restarted, the pod kept.

How (decisions/container_restart.py): a signaller, an ephemeral container in the target container's PID
namespace running as its uid, sends that container's PID 1 SIGTERM; PID 1 exits, the kernel ends the rest
of the namespace, and the kubelet starts the container again (restartCount + 1, same pod UID).

Only what differs from the other kinds lives here: the live read of the pod right before acting (its
restartPolicy, the container, its uid, its restartCount), the signaller, and the settling of each restart
from the kubelet's reports: Removed once the container runs again (nothing of the fault stays in the pod),
Failed with the reason when it was not restarted (PID 1 ignores SIGTERM, or drains past the grace period).
A restart is once per pod per run; the run lasts its duration, guarded, while the workload recovers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from chaosguard.api.actions import Action, ActionFacts, facts_of
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, RunStatus
from chaosguard.clients.kube import Cluster, api_message
from chaosguard.decisions import container_restart as decide
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.selection import PodView
from chaosguard.runtime.context import World
from chaosguard.runtime.faults import injector
from chaosguard.runtime.faults.base import Host, KeepsFaultRecords, Notice, register

IN_FLIGHT = (FaultState.INJECTING, FaultState.ACTIVE)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


class ContainerRestart(KeepsFaultRecords):
    action = Action.CONTAINER_RESTART.value
    not_done = "not restarted"

    @property
    def facts(self) -> ActionFacts:
        return facts_of(self.action)

    def records(self, run: RunStatus) -> list[Any]:
        return list(run.faults)

    def min_available(self, spec: ChaosExperimentSpec) -> int | str | None:
        return spec.container_restart.min_available if spec.container_restart is not None else None

    def already_down(self, run: RunStatus, victim: PodView) -> int:
        # A pod whose container is restarting is not Ready, so an SRE counts it down; between the signaller's
        # addition and the kubelet's first report the API still shows it Ready, so this run's restarts in
        # flight count as down (a pod the live read also sees down is counted twice: more careful, never less).
        return sum(
            1
            for f in run.faults
            if f.workload == victim.workload and f.namespace == victim.namespace and f.state in IN_FLIGHT
        )

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        return None

    def record(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, round_number: int) -> Any:
        return FaultRecord(
            namespace=victim.namespace,
            name=victim.name,
            uid=victim.uid,
            workload=victim.workload or "",
            container=injector.container_name(run.id, self.action),
            impairment=self.describe(spec),
            deadline=run.deadline,
            target_container=self._container(spec),
        )

    def would_do(self, record: Any, victim: PodView) -> str:
        return f"would restart container {record.target_container} of {victim.key}"

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        return None  # the signaller is formed from the pod as read right before the call (apply)

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        reasons = self.facts.reasons
        container = record.target_container
        try:
            pod = await host.context.api.call(injector._read_pod, victim.namespace, victim.name)
        except ApiException as error:
            pod, record.message = None, f"not restarted: could not read the pod ({error.status}): {api_message(error)}"
        if pod is None or pod["metadata"].get("uid") != victim.uid:
            record.state = FaultState.FAILED
            record.message = record.message or "not restarted: the pod is gone"
            return [Notice("Warning", reasons.failed, f"pod {victim.key}: {record.message}")]
        refusal = decide.restart_refusal(pod, container)
        if refusal is not None:
            record.state, record.message = FaultState.FAILED, f"not restarted: {refusal}"
            return [Notice("Warning", reasons.failed, f"pod {victim.key}: {record.message}")]
        assert run.deadline is not None
        now = host.now()
        record.restarts_before = int(decide.container_status(pod, container).get("restartCount") or 0)
        signaller = {
            "name": record.container,
            "image": injector.injector_image(),
            "imagePullPolicy": injector.injector_pull_policy(),
            "targetContainerName": container,
            "command": decide.signaller_command(
                decide.act_by(now.timestamp(), run.deadline.timestamp()), decide.grace_seconds(pod)
            ),
            "env": [
                {"name": "CHAOSGUARD_EXPERIMENT", "value": host.key},
                {"name": "CHAOSGUARD_RUN", "value": run.id},
                {"name": "CHAOSGUARD_STATUS_FILE", "value": injector.TERMINATION_LOG},
            ],
            "securityContext": decide.signaller_security_context(pod, container),
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        try:
            await host.context.api.call(
                Cluster.add_ephemeral_container, victim.namespace, victim.name, victim.uid, signaller
            )
        except ApiException as error:
            record.state = FaultState.FAILED
            record.message = f"not restarted: the API refused the signaller ({error.status}): {api_message(error)}"
            return [Notice("Warning", "ContainerRestartRefused", f"pod {victim.key}: {record.message}")]
        record.state, record.injected_at = FaultState.ACTIVE, now
        record.message = f"{record.container} sends SIGTERM to PID 1 of container {container}"
        run.injections_total += 1
        return [Notice("Normal", reasons.done, f"pod {victim.key} (uid {victim.uid}): {record.message}")]

    async def after(self, host: Host, victim: PodView, record: Any) -> None:
        return None

    def interrupted(self, record: Any) -> None:
        record.state, record.message = FaultState.FAILED, "not restarted: this replica stopped leading"

    async def resume(self, host: Host, run: RunStatus) -> bool:
        return False  # a restart recorded before its signaller was added is settled by the kubelet's reports

    async def _verdict(self, host: Host, fault: FaultRecord) -> decide.Verdict:
        if fault.restarts_before is None:  # the operator stopped between the record and the call
            return decide.Verdict(decide.Outcome.PENDING, "the operator stopped before its signaller was added")
        try:
            pod = await host.context.api.call(injector._read_pod, fault.namespace, fault.name)
        except Exception as error:
            return decide.Verdict(decide.Outcome.PENDING, f"the pod could not be read: {error}")
        signaller = injector.container_state(pod, fault.container) if pod is not None else {}
        return decide.judge(pod, fault.uid, fault.target_container, signaller, fault.restarts_before)

    def _conclude(self, fault: FaultRecord, verdict: decide.Verdict) -> None:
        if verdict.outcome is decide.Outcome.RESTARTED:
            fault.state, fault.removed_by = FaultState.REMOVED, "the kubelet (container running again)"
            # The kubelet's startedAt has whole seconds: never before the signaller was added.
            since = _parse_time(verdict.running_since)
            if since is not None and fault.injected_at is not None:
                since = max(since, fault.injected_at)
            fault.removed_at = since or fault.removed_at
            took = ""
            if fault.injected_at is not None and fault.removed_at is not None:
                seconds = (fault.removed_at - fault.injected_at).total_seconds()
                took = f"; running again within {seconds + 1:.0f}s of the signaller's addition"
            fault.message = verdict.message + took
        elif verdict.outcome is decide.Outcome.FAILED:
            fault.state, fault.message = FaultState.FAILED, f"not restarted: {verdict.message}"

    async def settle(self, host: Host, run: RunStatus) -> bool:
        """Each restart in flight, from the kubelet's reports: Removed once the container runs again, Failed
        with the reason when it will not restart. A run in which no restart went through ends Failed."""
        changed = []
        for fault in run.faults:
            if fault.state is not FaultState.ACTIVE:
                continue
            verdict = await self._verdict(host, fault)
            if verdict.outcome is not decide.Outcome.PENDING:
                self._conclude(fault, verdict)
                changed.append(fault)
        for fault in changed:
            where = f"pod {fault.namespace}/{fault.name} (uid {fault.uid})"
            if fault.state is FaultState.REMOVED:
                host.emit("Normal", "ContainerRestarted", f"{where}: {fault.message}")
            else:
                host.emit("Warning", self.facts.reasons.failed, f"{where}: {fault.message}")
        return await self.end_if_none_in(host, run, bool(changed), "RestartFailed", "no container was restarted")

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        """A restart leaves nothing in the pod to take out. What became of it is recorded; a signaller the
        kubelet has not started yet cannot be recalled, but it acts only until its act-by time (at most
        ACT_WITHIN_SECONDS after it was added, never after the run's deadline), then signals nothing."""
        verdict = await self._verdict(host, fault)
        self._conclude(fault, verdict)
        if fault.state in IN_FLIGHT:
            # Not "pause...": a restart is once per pod per run, so a pause's resume never restarts it again.
            fault.state, fault.removed_at, fault.removed_by = (
                FaultState.REMOVED,
                host.now(),
                f"nothing to take out ({why})",
            )
            fault.message = (
                f"nothing to take out (a restart leaves nothing in the pod); at the {why}: {verdict.message}; "
                f"a signaller not yet started acts only within {decide.ACT_WITHIN_SECONDS}s of being added"
            )

    def describe(self, spec: ChaosExperimentSpec) -> str:
        return f"restart container {self._container(spec)} (SIGTERM to its PID 1)"

    @staticmethod
    def _container(spec: ChaosExperimentSpec) -> str:
        return spec.container_restart.container if spec.container_restart is not None else ""


CONTAINER_RESTART = register(ContainerRestart())
