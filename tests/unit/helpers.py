"""Small builders shared by the unit tests of the pure modules."""

from __future__ import annotations

from typing import Any

from chaosguard.api.models import ChaosExperimentSpec, ChaosPolicy
from chaosguard.decisions.selection import PodView


def experiment_spec(**overrides: Any) -> ChaosExperimentSpec:
    raw: dict[str, Any] = {
        "action": "pod-kill",
        "target": {"selector": {"matchLabels": {"app": "checkout"}}, "mode": "one"},
        "duration": "5m",
    }
    raw.update(overrides)
    return ChaosExperimentSpec.model_validate(raw)


def policy(name: str = "default", **spec: Any) -> ChaosPolicy:
    return ChaosPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def pod(
    name: str,
    *,
    namespace: str = "shop",
    workload: str | None = "Deployment/checkout",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    ready: bool = True,
    terminating: bool = False,
) -> PodView:
    return PodView(
        namespace=namespace,
        name=name,
        uid=f"uid-{namespace}-{name}",
        labels=labels if labels is not None else {"app": "checkout"},
        phase=phase,
        ready=ready,
        terminating=terminating,
        workload=workload,
    )
