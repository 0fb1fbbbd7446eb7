"""The network faults in a pod (latency, netem impairments, partitions): the ephemeral containers
that carry them, and how they are taken out.

The injector container holds NET_ADMIN and nothing more, and removes its own qdisc when its
deadline passes, so the fault ends even if the operator is gone (a dead man's switch). The deadline
is absolute (the run's end, in unix seconds): an injector the kubelet starts late holds only until
then, and one that starts after it injects nothing. At the run's end a fault counts as removed by
the injector's own timer only when the kubelet reports that the injector exited 0 saying so
(`ended_by_own_timer`); any other injector (still waiting, running, killed, failed) is cleared. To end it
early the operator adds a fresh short-lived container to the pod that runs `clear`, which only
ever removes chaosguard's own qdisc, so repeating it is harmless. There is no `exec` into the
injector: the operator's role has no `pods/exec` (README, "Security"), which would let it run any
command in any container of the cluster, past Pod Security admission and without a trace in the
pod; a clean-up container passes admission like the injector and stays in the pod's spec.

An injector that exits before its deadline failed: `settle_injectors` reads why from the kubelet's
report (its exit code and termination message), e.g. a node whose kernel has no sch_netem, and
runs a clean-up container whose own report confirms that nothing of chaosguard's is left.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from chaosguard.api.actions import by_record_kind
from chaosguard.api.durations import to_seconds
from chaosguard.api.models import Action, ChaosExperimentSpec, FaultRecord, FaultState
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.injector_image import (
    DEFAULT_PULL_POLICY,
    INJECTOR_IMAGE_VARIABLE,
    INJECTOR_PULL_POLICY_VARIABLE,
    STRESSOR_IMAGE_VARIABLE,
    settings_problem,
)
from chaosguard.decisions.netem import Impairment, clear_command, injector_command, network_command, partition_command
from chaosguard.decisions.netem_contract import CLEARED, INJECTOR_ENDED, INJECTOR_EXITS, InjectorExit
from chaosguard.runtime.lanes import ApiLanes

TERMINATION_LOG = "/dev/termination-log"
# In a clean-up container: the name of the carrier it takes out (a pod may hold several of a run's carriers:
# after a resume, `...-p1`).
CARRIER_VARIABLE = "CHAOSGUARD_CARRIER"
# How long a clean-up container that follows a failed injector may take to report (real node: ~1 s).
CLEANUP_REPORT_SECONDS = 30.0
# An injector seen running this long added its qdisc (it exits within milliseconds when tc refuses).
CONFIRM_RUNNING_SECONDS = 3.0
# No report on the injector this long after it was added: none will come (a simulated node), stop asking.
NO_REPORT_SECONDS = 60.0
NO_NETEM = re.compile(r"qdisc kind is unknown|unknown qdisc|sch_netem", re.IGNORECASE)
# The purpose part of an injector container's name, per action (see container_name).
INJECTOR_PURPOSES = tuple(action.value for action in Action if action.is_network_fault)
INJECTOR_PREFIXES = tuple(f"chaosguard-{purpose}-" for purpose in INJECTOR_PURPOSES)


def injector_image() -> str:
    """The injector's reference. `chaosguard run` refuses to start without one (--injector-image),
    so a process that gets here without it was started some other way: it must not inject."""
    image = os.environ.get(INJECTOR_IMAGE_VARIABLE, "").strip()
    if not image:
        raise RuntimeError(settings_problem("", DEFAULT_PULL_POLICY))
    return image


def stressor_image() -> str | None:
    """The stress fault's image (the injector's content and stress-ng), or None: then stress is refused."""
    return os.environ.get(STRESSOR_IMAGE_VARIABLE, "").strip() or None


def injector_pull_policy() -> str:
    return os.environ.get(INJECTOR_PULL_POLICY_VARIABLE) or DEFAULT_PULL_POLICY


def _label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def container_name(run_id: str, purpose: str) -> str:
    """A DNS label unique per run and purpose (ephemeral containers can never be removed or reused)."""
    return f"chaosguard-{purpose}-{_label(run_id)}"[:63].rstrip("-")


def _security_context() -> dict[str, Any]:
    # tc needs root's uid in the pod's network namespace, and the NET_ADMIN capability: nothing else.
    return {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
    }


def _container(
    name: str,
    command: list[str],
    experiment: str,
    run_id: str,
    image: str,
    security_context: dict[str, Any] | None = None,
    carrier: str = "",
) -> dict[str, Any]:
    """`carrier`: for a clean-up container, the carrier it takes out (see cleaner_for_carrier)."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": injector_pull_policy(),
        "command": command,
        "env": [
            {"name": "CHAOSGUARD_EXPERIMENT", "value": experiment},
            {"name": "CHAOSGUARD_RUN", "value": run_id},
            # The script's last line becomes the kubelet's termination message, success or not:
            # the operator reads why an injector stopped, and a clean-up container's confirmation.
            {"name": "CHAOSGUARD_STATUS_FILE", "value": TERMINATION_LOG},
            *([{"name": CARRIER_VARIABLE, "value": carrier}] if carrier else []),
        ],
        "securityContext": security_context or _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def fault_command(spec: ChaosExperimentSpec, deadline_at: int, now: float) -> list[str]:
    """The injector's argv for the spec's network fault (latency, network or partition), held until
    the absolute `deadline_at` (unix seconds; `now` is the operator's clock, for the 24 h cap)."""
    if spec.latency is not None:
        latency = spec.latency
        return injector_command(
            latency.delay,
            latency.jitter,
            latency.correlation,
            deadline_at,
            list(latency.destination_cidrs),
            list(latency.ports),
            now=now,
        )
    if spec.network is not None:
        network = spec.network
        impairment = Impairment(
            delay=network.delay or "0ms",
            jitter=network.jitter or "0ms",
            correlation=network.correlation or 0,
            loss=network.loss,
            loss_correlation=network.loss_correlation,
            corrupt=network.corrupt,
            duplicate=network.duplicate,
            reorder=network.reorder,
            reorder_correlation=network.reorder_correlation,
            rate=network.rate,
        )
        return network_command(impairment, deadline_at, list(network.destination_cidrs), list(network.ports), now=now)
    if spec.partition is not None:
        partition = spec.partition
        return partition_command(
            list(partition.destination_cidrs), list(partition.ports), partition.direction.value, deadline_at, now=now
        )
    raise ValueError(f"action {spec.action.value} has no network fault to inject")


def impairment_summary(spec: ChaosExperimentSpec) -> str:
    """What the spec's network fault does, in a few words (status, Events, report)."""
    if spec.latency is not None:
        jitter = f" ± {spec.latency.jitter}" if to_seconds(spec.latency.jitter) > 0 else ""
        return f"delay {spec.latency.delay}{jitter}"
    if spec.network is not None:
        return spec.network.summary()
    if spec.partition is not None:
        return spec.partition.summary()
    return ""


def injector_container(
    spec: ChaosExperimentSpec,
    run_id: str,
    experiment: str,
    deadline_at: int,
    image: str,
    *,
    now: float,
    name: str | None = None,
) -> dict[str, Any]:
    """`name`: the carrier's name as its fault record has it (after a resume, `...-p1`: a pod never takes
    an ephemeral container's name twice, and the API would merge a same-named one into the first)."""
    command = fault_command(spec, deadline_at, now)
    return _container(name or container_name(run_id, spec.action.value), command, experiment, run_id, image)


def clear_container(run_id: str, experiment: str, attempt: int, image: str, carrier: str = "") -> dict[str, Any]:
    # `clear` removes every qdisc of chaosguard's in the pod, whichever carrier added it.
    name = container_name(run_id, f"clear{attempt}")
    return _container(name, clear_command(), experiment, run_id, image, carrier=carrier)


# A clean-up container per kind of injected fault that is not the network injector's: the record kind
# ("Stress") -> (its carrier's action, the factory of its clean-up container, same arguments as above,
# the last being the name of the carrier container it takes out).
# clear_fault, settle and the start-up sweep of orphans pick it by the fault's kind.
CleanerFactory = Callable[[str, str, int, str, str], dict[str, Any]]
_CLEANERS: dict[str, tuple[str, CleanerFactory]] = {}


def register_cleaner(record_kind: str, action: str, factory: CleanerFactory) -> None:
    _CLEANERS[record_kind] = (action, factory)


def cleaner_for(kind: str) -> CleanerFactory:
    registered = _CLEANERS.get(kind)
    return registered[1] if registered else clear_container


def _orphan_prefixes() -> tuple[str, ...]:
    return INJECTOR_PREFIXES + tuple(f"chaosguard-{action}-" for action, _ in _CLEANERS.values())


def _kind_of_carrier(name: str) -> str:
    return next((kind for kind, (action, _) in _CLEANERS.items() if name.startswith(f"chaosguard-{action}-")), "")


def run_cleaners(names: Sequence[str], run_id: str) -> dict[str, int]:
    """The run's clean-up containers among a pod's ephemeral container names, with their attempt numbers
    (`chaosguard-clear<attempt>-<run>`, see container_name)."""
    attempts = {container_name(run_id, f"clear{attempt}"): attempt for attempt in range(1, len(names) + 1)}
    return {name: attempts[name] for name in names if name in attempts}


def carrier_of(container: Mapping[str, Any]) -> str:
    """The carrier a clean-up container was added for ("" for one from before clean-ups named it)."""
    env = {item.get("name"): item.get("value") for item in container.get("env") or []}
    return str(env.get(CARRIER_VARIABLE) or "")


def cleaner_for_carrier(
    existing: Sequence[Mapping[str, Any]], carrier: str, run_id: str, build: Callable[[int], dict[str, Any]]
) -> tuple[str, dict[str, Any] | None]:
    """The clean-up container that takes `carrier` out of a pod whose ephemeral containers are `existing`:
    (its name, None) when one was already added for that carrier (another replica aborting the same run,
    or an earlier clean-up: one is enough, since an ephemeral container never restarts), else (its name,
    the container to add), numbered after the run's earlier clean-ups, since a pod never takes a name twice
    (a second `clear1` would be merged into the first and never run). The carrier is read from the clean-up
    container's environment, not from the order of the pod's list, which the API server's merge does not
    keep in the order they were added. `build(attempt)` makes the kind's clean-up container."""
    names = [str(c.get("name", "")) for c in existing]
    cleaners = run_cleaners(names, run_id)
    for container in existing:
        if container.get("name") in cleaners and carrier_of(container) == carrier:
            return str(container["name"]), None
    fresh = build(max(cleaners.values(), default=0) + 1)
    return str(fresh["name"]), fresh


def _cleaner_builder(
    kind: str, run_id: str, experiment: str, image: str, carrier: str
) -> Callable[[int], dict[str, Any]]:
    factory = cleaner_for(kind)
    return lambda attempt: factory(run_id, experiment, attempt, image, carrier)


async def _add_cleaner(api: ApiLanes, fault: FaultRecord, run_id: str, experiment: str, image: str) -> str | None:
    """Adds a clean-up container to the fault's pod; its name, or None when the pod is gone."""
    uid, existing = await api.call(Cluster.ephemeral_containers, fault.namespace, fault.name)
    if uid != fault.uid:
        return None
    build = _cleaner_builder(fault.kind, run_id, experiment, image, fault.container)
    name, cleaner = cleaner_for_carrier(existing, fault.container, run_id, build)
    if cleaner is not None:
        # Two replicas that get here at once add the same container (same name and contents): the API
        # merges the second into the first, so the pod gets one.
        await api.call(Cluster.add_ephemeral_container, fault.namespace, fault.name, fault.uid, cleaner)
    return name


async def clear_fault(
    api: ApiLanes,
    fault: FaultRecord,
    run_id: str,
    experiment: str,
    why: str,
    now: Callable[[], datetime],
    image: str,
) -> None:
    """Takes one fault out early (a clean-up container runs `clear`) and records how; never raises.
    It does not wait for the container's report: the abort that calls it must not wait on a kubelet.
    (Callers on an abort path run it in the urgent lane, so its calls never wait behind routine work.)"""
    try:
        cleaner = await _add_cleaner(api, fault, run_id, experiment, image)
    except Exception as error:
        detail = str(error).splitlines()[0][:200] if str(error) else repr(error)
        until = fault.deadline.isoformat() if fault.deadline else "?"
        fault.state = FaultState.FAILED
        fault.message = f"could not add a clean-up container ({detail}); the injector's deadline at {until} removes it"
        return
    fault.state, fault.removed_at = FaultState.REMOVED, now()
    if cleaner is None:
        fault.removed_by = f"{why} (pod gone)"
        fault.message = "the pod is gone, and its network namespace with it"
        return
    fault.removed_by = f"{why} (clear container {cleaner})"
    fault.message = f"a clean-up container ({cleaner}) runs clear, which removes only chaosguard's qdisc"


def container_state(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The kubelet's report of one ephemeral container: {} until it has one, else e.g.
    {"running": {...}} or {"terminated": {"exitCode": 4, "message": ...}}."""
    for status in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []:
        if status.get("name") == name:
            return dict(status.get("state") or {})
    return {}


def describe_injector_exit(terminated: Mapping[str, Any], kind: str) -> str:
    """Why an injector stopped before its deadline, in words, with the script's own last line.
    `kind` is the fault's (FaultRecord.kind): the table of actions says which kernel modules its kind
    needs; a kind that names none (a clean-up, an unknown record) is explained by the exit code alone."""
    code = int(terminated.get("exitCode", -1))
    text = str(terminated.get("message") or "").strip()
    last = text.splitlines()[-1][:300] if text else str(terminated.get("reason") or "no message")
    facts = by_record_kind(kind)
    if code == InjectorExit.APPLY and NO_NETEM.search(text) and facts is not None and facts.missing_kernel_module:
        return f"{facts.missing_kernel_module} (injector exit {code}: {last})"
    what = INJECTOR_EXITS.get(code, f"the injector stopped with exit code {code}")
    return f"{what} (injector exit {code}: {last})"


def _read_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        pod = cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    body: dict[str, Any] = cluster.core.api_client.sanitize_for_serialization(pod)
    return body


async def _cleaner_report(api: ApiLanes, fault: FaultRecord, cleaner: str) -> str:
    """Waits (bounded) for a clean-up container's own report: its confirmation, or why there is none."""
    deadline = time.monotonic() + CLEANUP_REPORT_SECONDS
    while time.monotonic() < deadline:
        pod = await api.call(_read_pod, fault.namespace, fault.name)
        if pod is None or pod["metadata"].get("uid") != fault.uid:
            return "the pod is gone, and its network namespace with it"
        terminated = container_state(pod, cleaner).get("terminated")
        if terminated is not None:
            text = str(terminated.get("message") or "").strip()
            if int(terminated.get("exitCode", -1)) == 0 and CLEARED.search(text):
                return f"confirmed by {cleaner}: {text.splitlines()[-1][:200]}"
            return f"{cleaner} could not confirm: {describe_injector_exit(terminated, fault.kind)}"
        await asyncio.sleep(0.5)
    return f"{cleaner} did not report within {CLEANUP_REPORT_SECONDS:.0f}s"


async def ended_by_own_timer(api: ApiLanes, fault: FaultRecord) -> str | None:
    """The injector's own last line when the kubelet reports it terminated with exit code 0 saying
    that it removed its fault (or that nothing was in place, or that it started after its deadline
    and added nothing). None in every other case — not started yet, running, killed (OOM, SIGKILL),
    failed, no such pod, the pod unreadable — where the caller must clear the fault. Never raises."""
    try:
        pod = await api.call(_read_pod, fault.namespace, fault.name)
    except Exception:
        return None
    if pod is None or pod["metadata"].get("uid") != fault.uid:
        return None
    terminated = container_state(pod, fault.container).get("terminated")
    if terminated is None or int(terminated.get("exitCode", -1)) != 0:
        return None
    text = str(terminated.get("message") or "").strip()
    last = text.splitlines()[-1] if text else ""
    return last[:200] if INJECTOR_ENDED.search(last) else None


_settled: set[tuple[str, str]] = set()  # (pod uid, injector) seen running long enough, or never reported on


async def settle_injectors(
    api: ApiLanes,
    faults: list[FaultRecord],
    run_id: str,
    experiment: str,
    now: Callable[[], datetime],
    image: str,
) -> list[FaultRecord]:
    """Reads the kubelet's report of each active injector not yet seen running for long. One that
    exited with an error failed: its fault becomes Failed with the reason (e.g. the node's kernel has
    no sch_netem), and a clean-up container confirms that nothing of chaosguard's is left in the pod.
    Returns the faults that failed now. An injector the kubelet has not reported on yet (or never
    will, as on simulated nodes) stays Active. Never raises."""
    failed = []
    for fault in faults:
        key = (fault.uid, fault.container)
        if fault.state is not FaultState.ACTIVE or key in _settled:
            continue
        try:
            pod = await api.call(_read_pod, fault.namespace, fault.name)
        except Exception:
            continue  # the next tick asks again
        if pod is None or pod["metadata"].get("uid") != fault.uid:
            fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, now(), "pod gone"
            fault.message = "the pod is gone, and its network namespace with it"
            continue
        state = container_state(pod, fault.container)
        if "running" in state:
            started = str(state["running"].get("startedAt") or "")
            if started and (now() - datetime.fromisoformat(started)).total_seconds() >= CONFIRM_RUNNING_SECONDS:
                _settled.add(key)
            continue
        terminated = state.get("terminated")
        if not state and fault.injected_at and (now() - fault.injected_at).total_seconds() > NO_REPORT_SECONDS:
            _settled.add(key)
        if terminated is None or int(terminated.get("exitCode", -1)) == 0:
            continue  # not started yet, or ended by its own timer (the run's end confirms it or clears)
        reason = describe_injector_exit(terminated, fault.kind)
        try:
            cleaner = await _add_cleaner(api, fault, run_id, experiment, image)
            if cleaner is None:
                confirmation = "the pod is gone, and its network namespace with it"
            else:
                confirmation = await _cleaner_report(api, fault, cleaner)
        except Exception as error:
            confirmation = f"no clean-up container could be added: {error}"
        fault.state = FaultState.FAILED
        fault.message = f"{reason}; {confirmation}"
        failed.append(fault)
    _settled.intersection_update({(f.uid, f.container) for f in faults if f.state is FaultState.ACTIVE})
    return failed


async def sweep_orphans(cluster: Cluster, image: str) -> list[str]:
    """At start-up: a pod still carrying an injector whose experiment no longer exists (deleted while
    no operator ran, its finalizer removed by hand) gets a clean-up container, unless one was already
    added for that carrier. Experiments that still exist are their own drivers' business. Returns what it did."""
    pods, experiments = await asyncio.gather(
        asyncio.to_thread(cluster.pods_with_ephemeral_containers, _orphan_prefixes()),
        asyncio.to_thread(cluster.experiments),
    )
    existing = {f"{item['metadata']['namespace']}/{item['metadata']['name']}" for item in experiments}
    actions = []
    for namespace, name, uid, containers in pods:
        for container in list(containers):
            carrier = str(container.get("name", ""))
            if not carrier.startswith(_orphan_prefixes()):
                continue
            env = {item.get("name"): item.get("value") for item in container.get("env") or []}
            experiment, run_id = str(env.get("CHAOSGUARD_EXPERIMENT", "")), str(env.get("CHAOSGUARD_RUN", ""))
            if experiment in existing or not run_id:
                continue
            build = _cleaner_builder(_kind_of_carrier(carrier), run_id, experiment, image, carrier)
            _, cleaner = cleaner_for_carrier(containers, carrier, run_id, build)
            if cleaner is None:
                continue
            containers.append(cleaner)  # a second carrier of the run in this pod is judged with it in place
            try:
                await asyncio.to_thread(cluster.add_ephemeral_container, namespace, name, uid, cleaner)
                actions.append(f"cleared pod {namespace}/{name}: its experiment {experiment} is gone (run {run_id})")
            except Exception as error:
                actions.append(f"could not clear pod {namespace}/{name} (experiment {experiment} is gone): {error}")
    return actions
