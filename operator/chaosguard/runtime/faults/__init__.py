"""The fault kinds, one module each behind the `Fault` protocol (`base`), registered by action:
`podkill` (pod-kill) and `netem_faults` (latency, network, partition). `injector` holds the
ephemeral-container mechanics the network kinds share (the container, its clean-up, the kubelet's
reports, the start-up sweep of orphans). Importing this package registers every shipped kind, and
fails if an action of the API has no kind."""

from __future__ import annotations

from chaosguard.api.models import Action
from chaosguard.runtime.faults import netem_faults, podkill
from chaosguard.runtime.faults.base import Fault, fault_for, fault_for_record, register, registered
from chaosguard.runtime.faults.injector import (
    clear_fault,
    container_name,
    describe_injector_exit,
    injector_container,
    injector_image,
    sweep_orphans,
)

__all__ = [
    "Fault",
    "clear_fault",
    "container_name",
    "describe_injector_exit",
    "fault_for",
    "fault_for_record",
    "injector_container",
    "injector_image",
    "netem_faults",
    "podkill",
    "register",
    "registered",
    "sweep_orphans",
]

_without_kind = [action.value for action in Action if action.value not in registered()]
if _without_kind:
    raise ImportError(f"actions without a fault kind in chaosguard.runtime.faults: {', '.join(_without_kind)}")
