"""The stress fault's pure parts: sizes, the pod's memory limit, the policy caps, and the argv of the
stressor and of its clean-up container (`runtime/injector/stress.sh` is the holder script). No I/O.

How an abort reaches the stressor without privileges: an ephemeral container can be neither removed
nor signalled from another container (each has its own PID namespace, and `targetContainerName` may
only name a regular container), but every container of a pod mounts the same /dev/shm (the sandbox's
IPC namespace and its tmpfs). The holder script waits on stress-ng and, beside it, watches for a stop
file there named after its own container (the run's, and after a resume the new carrier's); a clean-up
container with the same rights creates it, and the holder stops stress-ng at once. Its own deadline
needs nothing: `timeout` ends stress-ng at the absolute end of the run, and the container's PID
namespace dies with the holder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROG = "chaosguard-stress"
# Where the holder and the clean-up container meet: the pod's shared /dev/shm, one name per stressor.
STOP_DIRECTORY = "/dev/shm"
# The longest hold the holder accepts (from now to the deadline), as for the network injector.
MAX_DEADLINE_SECONDS = 86400
# The unprivileged user the stressor and its clean-up run as (nobody): no capability, no root.
STRESS_UID = 65534

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_PERCENT = re.compile(r"^0*([0-9]{1,3})%$")
# A memory quantity as the API server writes limits (also 0.5Gi, 1e9, 500m): enough for limits.
_LIMIT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(?:e([0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")
_LIMIT_UNITS = {**_UNITS, "Pi": 2**50, "Ei": 2**60, "P": 10**15, "E": 10**18, "m": 10**-3}

# What the holder says last (the kubelet's termination message) when it ended with nothing left
# running: its deadline passed, a clean-up container stopped it, or it started too late to begin.
ENDED = re.compile(r"^(ended: |stopped: |not stressed: )")
STOPPED = re.compile(r"^stopped: ")


class StressRefusal(ValueError):
    """A stress that cannot be sized for a pod: the message names the field, the rule and the fix."""

    def __init__(self, rule: str, message: str, field: str = "spec.stress.memory.size") -> None:
        super().__init__(message)
        self.rule, self.field = rule, field


@dataclass(frozen=True)
class Size:
    """A memory size: absolute bytes, or a percentage of the pod's memory limit."""

    bytes: int | None = None
    percent: int | None = None

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else f"{self.bytes} bytes"


def parse_size(text: str) -> Size:
    """A size of spec.stress.memory.size or maxStressMemory (the model's pattern): 256Mi, 1G, 50%."""
    percent = _PERCENT.match(text)
    if percent:
        return Size(percent=int(percent.group(1)))
    quantity = _QUANTITY.match(text)
    if not quantity:
        raise ValueError(f"{text!r} is neither a quantity such as 256Mi nor a percentage such as 50%")
    return Size(bytes=int(quantity.group(1)) * _UNITS[quantity.group(2) or ""])


def limit_bytes(text: str) -> int:
    """A memory limit as the API server returns it (128Mi, 1Gi, 0.5Gi, 1e9, 134217728)."""
    match = _LIMIT.match(str(text))
    if not match:
        raise ValueError(f"memory limit {text!r} is not a quantity")
    number, exponent, unit = match.groups()
    return int(float(number) * (10 ** int(exponent or 0)) * _LIMIT_UNITS[unit or ""])


def pod_memory_limit(pod: Mapping[str, Any]) -> int | None:
    """The memory limit of the pod's cgroup, in bytes: the pod-level limit when the pod sets one, else
    the sum of its containers' limits when every container has one (the kubelet sets no pod limit when
    one container lacks it). None: the pod has no memory limit."""
    spec = pod.get("spec") or {}
    pod_level = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    if pod_level:
        return limit_bytes(pod_level)
    containers = spec.get("containers") or []
    limits = [str(((c.get("resources") or {}).get("limits") or {}).get("memory") or "") for c in containers]
    if not limits or any(not limit for limit in limits):
        return None
    return sum(limit_bytes(limit) for limit in limits)


def stress_bytes(size: str, limit: int | None, pod: str) -> int:
    """The bytes a stress of `size` holds in a pod whose memory limit is `limit` (None: no limit)."""
    parsed = parse_size(size)
    if parsed.bytes is not None:
        return parsed.bytes
    assert parsed.percent is not None
    if limit is None:
        raise StressRefusal(
            "memory-limit-unknown",
            f"spec.stress.memory.size {size} is a percentage of the pod's memory limit, but pod {pod} has none "
            "(one of its containers sets no resources.limits.memory); give every container of the target pods a "
            "memory limit, or write an absolute size such as 256Mi",
        )
    return max(1, limit * parsed.percent // 100)


def memory_cap_refusal(
    size: str, cap: tuple[str, str] | None, limit: int | None, pod: str | None
) -> StressRefusal | None:
    """maxStressMemory against the size. Offline (`pod` None) only sizes of the cap's own form (both
    quantities, or both percentages) can be compared; with a pod, its limit converts either form."""
    if cap is None:
        return None
    cap_text, source = cap
    wanted, allowed = parse_size(size), parse_size(cap_text)
    fix = f"set spec.stress.memory.size to {cap_text} or less"
    if wanted.percent is not None and allowed.percent is not None:
        over = wanted.percent > allowed.percent
    elif wanted.bytes is not None and allowed.bytes is not None:
        over = wanted.bytes > allowed.bytes
    elif pod is None:
        return None  # judged per pod, against its limit, right before the stressor goes in
    elif limit is None:
        if allowed.percent is None:
            return None  # a percentage size without a limit is refused by stress_bytes
        return StressRefusal(
            "max-stress-memory",
            f"{source} caps a stress at {cap_text} of the pod's memory limit (maxStressMemory), but pod {pod} has no "
            "memory limit, so no size can be judged against it; give every container of the target pods a memory "
            "limit",
        )
    else:
        over = stress_bytes(size, limit, pod) > stress_bytes(cap_text, limit, pod)
        fix += f" (pod {pod}'s memory limit is {limit} bytes)"
    if not over:
        return None
    return StressRefusal(
        "max-stress-memory",
        f"spec.stress.memory.size {size} is more than the {cap_text} allowed by {source} (maxStressMemory); {fix}",
    )


def cpu_load(workers: int, load: int) -> int:
    """The CPU a stress adds, in percent of one CPU (maxStressLoad's unit)."""
    return workers * load


def stop_file(carrier: str) -> str:
    """The stop file of one stressor, named after its container (`chaosguard-stress-<carrier label>`: the
    run, and `-p<n>` after the n-th pause): a resume's new stressor must not find the stop file the
    pause's clean-up left for the one before it in the pod's /dev/shm, or it would stop at once."""
    label = carrier.removeprefix(f"{PROG}-")
    return f"{STOP_DIRECTORY}/{PROG}-stop-{re.sub(r'[^A-Za-z0-9._-]+', '-', label)}"


def stress_ng_arguments(workers: int | None, load: int | None, memory_bytes: int | None) -> list[str]:
    """stress-ng's arguments for the stress (the holder adds --timeout): CPU workers at a load, and one
    memory stressor that allocates, touches and then keeps its pages without spinning (--vm-hang 0)."""
    arguments: list[str] = []
    if workers:
        arguments += ["--cpu", str(workers), "--cpu-load", str(load or 100)]
    if memory_bytes:
        arguments += ["--vm", "1", "--vm-bytes", f"{memory_bytes}", "--vm-keep", "--vm-hang", "0"]
    if not arguments:
        raise ValueError("a stress needs CPU workers or a memory size")
    return arguments


def stressor_command(script: str, deadline_at: int, stop: str, arguments: Sequence[str], *, now: float) -> list[str]:
    """The stressor's argv: the holder script run by sh, with the absolute deadline (unix seconds), the
    stop file, and stress-ng's arguments. The script travels in the argv (it stays in the pod's spec,
    where anyone reading the pod sees exactly what ran), so the image needs only sh, timeout and stress-ng."""
    if deadline_at - now > MAX_DEADLINE_SECONDS:
        raise ValueError(f"the deadline is more than {MAX_DEADLINE_SECONDS // 3600} h away")
    return ["sh", "-c", script, PROG, str(deadline_at), stop, "--", *arguments]


def clear_command(stop: str) -> list[str]:
    """The clean-up container's argv: create the stop file the holder watches, and say so."""
    return [
        "sh",
        "-c",
        'touch "$1" && echo "stop requested: $1" | tee "${CHAOSGUARD_STATUS_FILE:-/dev/null}"',
        f"{PROG}-clear",
        stop,
    ]
