"""Pure judgements about one run that the engine used to make inline: the refusal while a policy does
not validate, the condition a guard verdict is about, the next slot on a run's interval grid, and the
words for why a fault was removed. No I/O: they take plain data and return plain data."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from chaosguard.api.durations import to_seconds
from chaosguard.api.models import ChaosExperimentSpec, RunStatus
from chaosguard.decisions.policy import Refusal
from chaosguard.decisions.slo import Verdict


def invalid_policy_refusal(invalid_policies: Mapping[str, str]) -> Refusal | None:
    """Fail-safe: while a ChaosPolicy does not validate, its guards, suspension and windows are
    unknown, so no run starts and nothing is injected; the refusal names the policy, the field and
    the model's message. `invalid_policies`: the model's message by policy name."""
    if not invalid_policies:
        return None
    name = min(invalid_policies)
    return Refusal(
        "invalid-policy",
        f"ChaosPolicy/{name} does not validate, so no run starts and nothing is injected until it is "
        f"fixed or deleted: {invalid_policies[name]}",
        f"ChaosPolicy/{name}",
    )


def verdict_condition(verdict: Verdict, policy_conditions: Collection[str] = ()) -> str:
    """The condition a verdict is about: its longest-standing breach, else the first unavailable
    policy condition (`policy_conditions`: their unavailability always aborts, so it decided the
    abort whatever the author's onUnavailable says), else the first unavailable one."""
    if verdict.breach is not None:
        return verdict.breach.condition
    strict = [missing for missing in verdict.unavailable if missing.condition in policy_conditions]
    chosen = strict or verdict.unavailable
    return chosen[0].condition if chosen else ""


def next_round_time(spec: ChaosExperimentSpec, run: RunStatus, now: datetime) -> datetime | None:
    """The next slot on the run's interval grid after `now`; rounds missed while the operator was
    down are skipped, never fired back to back. None when no slot is left before the deadline."""
    if not spec.interval or run.started_at is None or run.deadline is None:
        return None
    interval = to_seconds(spec.interval)
    slots_passed = int((now - run.started_at).total_seconds() // interval) + 1
    upcoming = run.started_at + timedelta(seconds=interval * slots_passed)
    return upcoming if upcoming < run.deadline else None


def removal_cause(reason: str) -> str:
    """Why a run's faults are taken out, in the words of their records, from the reason the run ended."""
    return {
        "RunCompleted": "deadline",
        "Suspended": "suspension",
        "Window": "window closed",
        "Blackout": "blackout",
        "AbortRequested": "abort on request",
        "SpecChanged": "spec changed",
    }.get(reason, "abort")
