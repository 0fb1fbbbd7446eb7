"""The stress fault kind: CPU and memory pressure held by stress-ng in an ephemeral container of each
target pod, so it counts against the pod's own cgroup as a noisy neighbour inside the pod would.

The stressor runs as uid 65534 with every capability dropped, no privilege escalation and the
runtime's default seccomp profile, so Pod Security restricted admits it. Its holder script
(runtime/injector/stress.sh) ends stress-ng at the run's absolute deadline even if the operator is
gone. An abort adds a clean-up container that creates the stop file the holder watches in the pod's
shared /dev/shm (decisions/stress.py says why that way). A target container the kubelet reports
OOM-killed while the stress is in is reported as such (its last termination reason), never as a
failure of the stressor.

Records, refusals, dry runs and the rest of an attempt are the injected kinds' (`NetemFault`); what
differs is here: the container, sized against the live pod's memory limit and the policy's caps; the
settling (the stressor's end, the target's OOM kills); and the removal.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from chaosguard.api.actions import Action
from chaosguard.api.models import ChaosExperimentSpec, FaultRecord, FaultState, RunStatus
from chaosguard.clients.kube import Cluster, api_message
from chaosguard.decisions import stress
from chaosguard.decisions.injector_image import stressor_missing
from chaosguard.decisions.policy import EffectivePolicy, Refusal, stress_refusals
from chaosguard.decisions.selection import PodView
from chaosguard.runtime.context import World
from chaosguard.runtime.faults import injector
from chaosguard.runtime.faults.base import Host, Notice, register
from chaosguard.runtime.faults.netem_faults import NetemFault

OOM_NOTED = "OOMKilled"  # marks a record whose target's OOM kill was already reported
# How often a stressed pod is read for the kubelet's reports (the stressor's end, the target's OOM
# kills): a live read per fault, so not on every step of every run.
SETTLE_EVERY_SECONDS = 5.0
_last_read: dict[tuple[str, str], float] = {}  # (pod uid, stressor) -> monotonic time of the last read


@cache
def holder_script() -> str:
    return (Path(__file__).parents[1] / "injector" / "stress.sh").read_text()


def security_context() -> dict[str, Any]:
    # Nothing: stress-ng needs no capability to burn CPU or hold memory in its own cgroup.
    return {
        "runAsUser": stress.STRESS_UID,
        "runAsGroup": stress.STRESS_UID,
        "runAsNonRoot": True,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def stress_clear_container(run_id: str, experiment: str, attempt: int, image: str, carrier: str) -> dict[str, Any]:
    """Stops the stressor `carrier` (its container's name): its own stop file, never another carrier's."""
    name = injector.container_name(run_id, f"clear{attempt}")
    command = stress.clear_command(stress.stop_file(carrier))
    return injector._container(name, command, experiment, run_id, image, security_context(), carrier=carrier)


def stressor_container(
    spec: ChaosExperimentSpec,
    run_id: str,
    experiment: str,
    deadline_at: int,
    memory_bytes: int | None,
    *,
    now: float,
    name: str | None = None,
) -> dict[str, Any]:
    """`name`: the carrier's, as its fault record has it (`chaosguard-stress-<run>`, `-p1` after a resume);
    the stop file it watches is named after it, so the stop file of a stressor a pause took out never
    stops the one a resume puts in."""
    assert spec.stress is not None
    cpu = spec.stress.cpu
    arguments = stress.stress_ng_arguments(cpu.workers if cpu else None, cpu.load if cpu else None, memory_bytes)
    name = name or injector.container_name(run_id, Action.STRESS.value)
    command = stress.stressor_command(holder_script(), deadline_at, stress.stop_file(name), arguments, now=now)
    image = injector.stressor_image()
    assert image is not None  # preflight refuses the round without one
    return injector._container(name, command, experiment, run_id, image, security_context())


def _oom_kills(pod: dict[str, Any], since: datetime) -> list[str]:
    """The pod's containers the kubelet reports OOM-killed since `since` (the stress went in)."""
    found = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (status.get("lastState") or {}, status.get("state") or {}):
            terminated = state.get("terminated") or {}
            finished = str(terminated.get("finishedAt") or "")
            if terminated.get("reason") == "OOMKilled" and finished and datetime.fromisoformat(finished) >= since:
                found.append(
                    f"{status.get('name')} (OOMKilled at {finished}, restarts {status.get('restartCount', 0)})"
                )
                break
    return found


class StressFault(NetemFault):
    def __init__(self) -> None:
        super().__init__(Action.STRESS)
        self._policies: dict[str, EffectivePolicy] = {}  # per experiment: the policy its last round saw

    async def preflight(self, host: Host, spec: ChaosExperimentSpec, world: World) -> Refusal | None:
        # A memory size and a cap of different forms (256Mi against 50%) compare only against each pod's
        # limit, right before its stressor goes in.
        self._policies[host.key] = world.effective
        if injector.stressor_image() is None:
            return Refusal("stressor-image-missing", stressor_missing(), "spec.action")
        return None

    def prepare(self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any) -> Any:
        assert run.deadline is not None
        return math.ceil(run.deadline.timestamp())  # absolute, as for the network injector

    async def apply(
        self, host: Host, spec: ChaosExperimentSpec, run: RunStatus, victim: PodView, record: Any, prepared: Any
    ) -> list[Notice]:
        """Sizes the stress against the live pod (its memory limit, the policy's caps), then adds it."""
        assert spec.stress is not None and run.deadline is not None
        kind = self.facts.record_kind
        try:
            pod = await host.context.api.call(injector._read_pod, victim.namespace, victim.name)
        except ApiException as error:
            pod = None
            record.message = f"not injected: could not read the pod ({error.status}): {api_message(error)}"
        if pod is None or pod["metadata"].get("uid") != victim.uid:
            record.state = FaultState.FAILED
            record.message = record.message or f"not injected: pod {victim.key} is gone"
            return [Notice("Warning", f"{kind}Refused", f"pod {victim.key}: {record.message}")]
        limit = stress.pod_memory_limit(pod)
        refusals = stress_refusals(spec, self._policies.get(host.key, EffectivePolicy()), victim.key, limit)
        memory_bytes = None
        try:
            if spec.stress.memory is not None:
                memory_bytes = stress.stress_bytes(spec.stress.memory.size, limit, victim.key)
        except stress.StressRefusal as problem:
            refusals.insert(0, Refusal(problem.rule, str(problem), problem.field))
        if refusals:
            record.state, record.message = FaultState.FAILED, f"not injected: {refusals[0]}"
            return [Notice("Warning", f"{kind}Refused", f"pod {victim.key}: {record.message}")]
        container = stressor_container(
            spec, run.id, host.key, prepared, memory_bytes, now=host.now().timestamp(), name=record.container
        )
        try:
            await host.context.api.call(
                Cluster.add_ephemeral_container, victim.namespace, victim.name, victim.uid, container
            )
        except ApiException as error:
            record.state = FaultState.FAILED
            record.message = f"the API refused the stressor ({error.status}): {api_message(error)}"
            return [Notice("Warning", f"{kind}Refused", f"pod {victim.key}: {record.message}")]
        held = f" ({memory_bytes} bytes)" if memory_bytes is not None and "%" in (record.impairment or "") else ""
        record.state, record.injected_at = FaultState.ACTIVE, host.now()
        record.message = f"{record.impairment}{held} held by {record.container} until {run.deadline.isoformat()}"
        run.injections_total += 1
        return [Notice("Normal", self.facts.reasons.done, f"pod {victim.key} (uid {victim.uid}): {record.message}")]

    async def settle(self, host: Host, run: RunStatus) -> bool:
        """The kubelet's reports: a stressor that failed (its reason), a target OOM-killed under the
        stress (reported once, as such; the stress stays in). A run with no stress left ends Failed."""
        changed = False
        for fault in run.faults:
            key = (fault.uid, fault.container)
            if fault.state is not FaultState.ACTIVE:
                _last_read.pop(key, None)
                continue
            if time.monotonic() - _last_read.get(key, -SETTLE_EVERY_SECONDS) < SETTLE_EVERY_SECONDS:
                continue
            _last_read[key] = time.monotonic()
            try:
                pod = await host.context.api.call(injector._read_pod, fault.namespace, fault.name)
            except Exception:
                continue  # the next step asks again
            if pod is None or pod["metadata"].get("uid") != fault.uid:
                fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, host.now(), "pod gone"
                fault.message, changed = "the pod is gone, and its stressor with it", True
                continue
            if fault.injected_at is not None and OOM_NOTED not in fault.message:
                killed = _oom_kills(pod, fault.injected_at.replace(microsecond=0))
                if killed:
                    fault.message += f"; {OOM_NOTED} under the stress: {', '.join(killed)}"
                    host.emit(
                        "Warning",
                        "StressTargetOOMKilled",
                        f"pod {fault.namespace}/{fault.name}: under {fault.impairment}, the kubelet reports "
                        f"{', '.join(killed)}: the stress took the pod to its memory limit",
                    )
                    changed = True
            terminated = injector.container_state(pod, fault.container).get("terminated")
            if terminated is None:
                continue
            text = str(terminated.get("message") or "").strip()
            last = text.splitlines()[-1][:300] if text else str(terminated.get("reason") or "no message")
            if int(terminated.get("exitCode", -1)) == 0 and stress.ENDED.search(last):
                continue  # ended on its own: recover() records it at the run's end
            if terminated.get("reason") == "OOMKilled":
                why = f"the stressor itself was OOM-killed at the pod's memory limit ({last})"
            else:
                why = f"the stressor stopped with exit code {terminated.get('exitCode')}: {last}"
            fault.state, fault.message, changed = FaultState.FAILED, why, True
            host.emit("Warning", self.facts.reasons.failed, f"pod {fault.namespace}/{fault.name}: {why}")
        return await self.end_if_none_in(host, run, changed, "InjectionFailed", "no stress is in place")

    async def recover(self, host: Host, run: RunStatus, fault: FaultRecord, why: str) -> None:
        """Past its deadline, the stressor's own report that it ended counts; otherwise a clean-up
        container creates the stop file (a no-op when the stressor is already gone)."""
        _last_read.pop((fault.uid, fault.container), None)
        if fault.deadline is not None and host.now() >= fault.deadline:
            ended = await _ended_on_its_own(host, fault)
            if ended is not None:
                fault.state, fault.removed_at = FaultState.REMOVED, fault.deadline
                fault.removed_by = "deadline (the stressor's own timer)"
                fault.message = f"{fault.container} reported: {ended}"
                return
        await injector.clear_fault(host.context.api, fault, run.id, host.key, why, host.now, injector.injector_image())
        if fault.state is FaultState.REMOVED and "clear container" in fault.removed_by:
            fault.message = (
                f"a clean-up container asked {fault.container} to stop "
                f"(stop file {stress.stop_file(fault.container)}); stress-ng ends within a tenth of a second"
            )

    def describe(self, spec: ChaosExperimentSpec) -> str:
        return f"stress {spec.stress.summary()}" if spec.stress is not None else ""


async def _ended_on_its_own(host: Host, fault: FaultRecord) -> str | None:
    try:
        pod = await host.context.api.call(injector._read_pod, fault.namespace, fault.name)
    except Exception:
        return None
    if pod is None or pod["metadata"].get("uid") != fault.uid:
        return None
    terminated = injector.container_state(pod, fault.container).get("terminated")
    if terminated is None or int(terminated.get("exitCode", -1)) != 0:
        return None
    text = str(terminated.get("message") or "").strip()
    last = text.splitlines()[-1] if text else ""
    return last[:200] if stress.ENDED.search(last) else None


injector.register_cleaner("Stress", Action.STRESS.value, stress_clear_container)
STRESS = register(StressFault())
