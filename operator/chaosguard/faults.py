"""The latency fault in a pod: the ephemeral containers that carry it, and how it is taken out.

The injector container holds NET_ADMIN and nothing more, and removes its own qdisc when its
deadline passes, so the fault ends even if the operator is gone (a dead man's switch). To end it
early the operator first execs `clear` in the injector; when that is impossible (the injector was
killed, the kubelet does not answer) it adds a fresh short-lived container that runs `clear`.
`clear` only ever removes chaosguard's own qdisc, so repeating it is harmless.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from chaosguard.kube import Cluster
from chaosguard.lanes import ApiLanes
from chaosguard.models import FaultRecord, FaultState, LatencySpec
from chaosguard.netem import clear_command, injector_command

INJECTOR_IMAGE_VARIABLE = "CHAOSGUARD_INJECTOR_IMAGE"
DEFAULT_INJECTOR_IMAGE = "chaosguard:dev"
EXEC_TIMEOUT_SECONDS = 5.0
# What injector/netem.sh says when `clear` left no chaosguard qdisc behind.
CLEARED = re.compile(r"(removed: qdisc|nothing to clear|nothing to remove)")


def injector_image() -> str:
    return os.environ.get(INJECTOR_IMAGE_VARIABLE) or DEFAULT_INJECTOR_IMAGE


async def adopt_own_image(cluster: Cluster, namespace: str | None, pod_name: str | None) -> None:
    """In a cluster with no CHAOSGUARD_INJECTOR_IMAGE set, the injector is the operator's own image
    (read from its own Pod), so an image renamed by an overlay is never silently replaced by a default."""
    if os.environ.get(INJECTOR_IMAGE_VARIABLE) or not namespace or not pod_name:
        return
    image = await asyncio.to_thread(cluster.own_image, namespace, pod_name)
    if image:
        os.environ[INJECTOR_IMAGE_VARIABLE] = image


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


def _container(name: str, command: list[str], experiment: str, run_id: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [
            {"name": "CHAOSGUARD_EXPERIMENT", "value": experiment},
            {"name": "CHAOSGUARD_RUN", "value": run_id},
        ],
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def injector_container(
    latency: LatencySpec, run_id: str, experiment: str, deadline_seconds: int, image: str
) -> dict[str, Any]:
    command = injector_command(
        latency.delay,
        latency.jitter,
        latency.correlation,
        deadline_seconds,
        list(latency.destination_cidrs),
        list(latency.ports),
    )
    return _container(container_name(run_id, "latency"), command, experiment, run_id, image)


def clear_container(run_id: str, experiment: str, attempt: int, image: str) -> dict[str, Any]:
    return _container(container_name(run_id, f"clear{attempt}"), clear_command(), experiment, run_id, image)


async def clear_fault(
    api: ApiLanes,
    fault: FaultRecord,
    run_id: str,
    experiment: str,
    why: str,
    now: Callable[[], datetime],
    image: str,
) -> None:
    """Takes one fault out early and records how; never raises. (Callers on an abort path run it
    in the urgent lane, so its calls never wait behind routine work.)"""
    try:
        output = await api.call(
            Cluster.exec_in_container,
            fault.namespace,
            fault.name,
            fault.container,
            clear_command(),
            EXEC_TIMEOUT_SECONDS,
        )
        # Only the script's own word counts: an exec that "succeeds" without it did not clear.
        if CLEARED.search(output):
            fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, now(), f"{why} (exec clear)"
            fault.message = f"cleared by exec in {fault.container}: {output.strip().splitlines()[-1][:200]}"
            return
        exec_problem = f"exec answered without the injector's confirmation: {output.strip()[:200]!r}"
    except Exception as error:
        exec_problem = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    try:
        uid, existing = await api.call(Cluster.ephemeral_containers, fault.namespace, fault.name)
        if uid != fault.uid:
            fault.state, fault.removed_at, fault.removed_by = FaultState.REMOVED, now(), f"{why} (pod gone)"
            fault.message = "the pod is gone, and its network namespace with it"
            return
        attempt = 1 + sum(1 for c in existing if str(c.get("name", "")).startswith(container_name(run_id, "clear")))
        cleaner = clear_container(run_id, experiment, attempt, image)
        await api.call(Cluster.add_ephemeral_container, fault.namespace, fault.name, fault.uid, cleaner)
    except Exception as error:
        fault.state = FaultState.FAILED
        fault.message = (
            f"could not clear early (exec: {exec_problem}; clean-up container: {error}); "
            f"the injector's own deadline at {fault.deadline.isoformat() if fault.deadline else '?'} removes it"
        )
        return
    fault.state, fault.removed_at = FaultState.REMOVED, now()
    fault.removed_by = f"{why} (clear container {cleaner['name']})"
    fault.message = f"exec failed ({exec_problem}); a clean-up container ran clear"


async def sweep_orphans(cluster: Cluster, image: str) -> list[str]:
    """At start-up: a pod still carrying an injector whose experiment no longer exists (deleted while
    no operator ran, its finalizer removed by hand) gets a clean-up container, unless one already ran
    for that run. Experiments that still exist are their own drivers' business. Returns what it did."""
    pods, experiments = await asyncio.gather(
        asyncio.to_thread(cluster.pods_with_ephemeral_containers, "chaosguard-latency-"),
        asyncio.to_thread(cluster.experiments),
    )
    existing = {f"{item['metadata']['namespace']}/{item['metadata']['name']}" for item in experiments}
    actions = []
    for namespace, name, uid, containers in pods:
        names = [str(c.get("name", "")) for c in containers]
        for container in containers:
            if not str(container.get("name", "")).startswith("chaosguard-latency-"):
                continue
            env = {item.get("name"): item.get("value") for item in container.get("env") or []}
            experiment, run_id = str(env.get("CHAOSGUARD_EXPERIMENT", "")), str(env.get("CHAOSGUARD_RUN", ""))
            cleaners = [n for n in names if n.startswith(container_name(run_id, "clear"))]
            if experiment in existing or cleaners or not run_id:
                continue
            cleaner = clear_container(run_id, experiment, 1, image)
            try:
                await asyncio.to_thread(cluster.add_ephemeral_container, namespace, name, uid, cleaner)
                actions.append(f"cleared pod {namespace}/{name}: its experiment {experiment} is gone (run {run_id})")
            except Exception as error:
                actions.append(f"could not clear pod {namespace}/{name} (experiment {experiment} is gone): {error}")
    return actions
