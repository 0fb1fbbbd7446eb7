"""The inputs of the golden report files: every experiment object tests/unit/test_report.py reports on,
plus the shapes the report-producing integration tests meet (a run aborted before any kill because
Prometheus is unreachable, recoveries of several seconds) and edge cases no other test covers (several
workloads, a foreign namespace, trimmed kill records, a recovery over a minute, more kills than the
mermaid chart shows, +Inf and NaN samples, a condition without samples, fences and backticks in text,
a dry-run network fault, hostile names in an SLI and its chart)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chaosguard.cli import report
from tests.unit.test_report import (
    BREACH_MESSAGE,
    GUARDED_SPEC,
    NS,
    PLAIN_SPEC,
    breach_run,
    clean_guarded_run,
    completed_run,
    did_not_recover_run,
    dry_run_experiment,
    ended_by,
    experiment,
    hostile_experiment,
    in_progress_experiment,
    kill,
    latency_spec_and_run,
    near_miss_experiment,
    partition_spec_and_run,
    policy_guard_run,
    sample,
    slis_of,
    unavailable_run,
)

GENERATED_AT = datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    name: str
    markdown: Callable[[], str]
    html: Callable[[], str]


def _ended_by(reason: str, message: str) -> dict[str, Any]:
    return experiment(GUARDED_SPEC, ended_by(reason, message))


def _from_object(name: str, obj: dict[str, Any], run_id: str | None = None) -> Case:
    return Case(
        name,
        lambda: report.render_markdown(obj, run_id),
        lambda: report.render_html(obj, run_id, GENERATED_AT),
    )


def _unreachable_before_the_run() -> dict[str, Any]:
    """As in the CI integration test: the guard's Prometheus is unreachable, the run aborts with nothing
    injected and no sample recorded."""
    message = (
        "SLI error-ratio unavailable (Unreachable): cannot connect to http://127.0.0.1:9: Connection refused "
        "(onUnavailable: abort)"
    )
    run = completed_run(
        kills=[],
        killsTotal=0,
        phase="Aborted",
        reason="SLIUnavailable",
        message=f"aborted by the SLI guard: {message}",
        finishedAt="2026-11-22T00:48:20.518473Z",
        abort={
            "at": "2026-11-22T00:48:20.518473Z",
            "condition": "error-ratio",
            "query": "vector(0)",
            "message": message,
        },
    )
    spec = copy.deepcopy(GUARDED_SPEC)
    spec["steadyState"]["conditions"][0]["query"] = "vector(0)"
    spec["steadyState"]["prometheus"]["url"] = "http://127.0.0.1:9"
    return experiment(spec, run, name="ci-breach")


def _network_dry_run() -> dict[str, Any]:
    faults = [
        {
            "namespace": NS,
            "name": "checkout-a",
            "uid": "uid-a",
            "workload": "Deployment/checkout",
            "container": "chaosguard-network-r1",
            "impairment": "loss 30%, rate 1mbit",
            "state": "WouldInject",
            "message": "would inject loss 30%, rate 1mbit into pod shop/checkout-a",
        },
        {
            "namespace": "pay",
            "name": "ledger-a",
            "uid": "uid-l",
            "container": "chaosguard-network-r1",
            "impairment": "loss 30%, rate 1mbit",
            "state": "Injecting",
            "injectedAt": "2026-11-22T00:48:20.7Z",
            "deadline": "2026-11-22T00:48:23.0Z",
        },
    ]
    spec = {
        "action": "network",
        "network": {"loss": "30%", "rate": "1mbit"},
        "dryRun": True,
        "duration": "3s",
        "target": {
            "mode": "fixed-percent",
            "value": 50,
            "namespaces": [NS, "pay"],
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
        },
    }
    return experiment(spec, completed_run(kills=[], killsTotal=0, faults=faults))


def _in_progress() -> Case:
    obj = in_progress_experiment()
    return Case("in_progress", lambda: report.markdown(report.build(obj)), lambda: report.html_page(report.build(obj)))


def _edges() -> dict[str, Any]:
    """Several workloads (one in another namespace), trimmed kill records, a recovery over a minute,
    failed and skipped kills, more kills than the mermaid chart shows, a deadline passed before the end,
    +Inf and NaN samples, a condition without samples, and text with fences, backticks and markup."""
    kills = [
        kill(f"checkout-{i:02d}", f"2026-11-22T00:48:{20 + i // 2:02d}.{(i % 2) * 5}00000Z", recovered=1.0 + i / 10)
        for i in range(38)
    ]
    foreign = kill("ledger-0", "2026-11-22T00:48:40.1Z", recovered=75.25, round_=3)
    foreign.update(namespace="pay", workload="StatefulSet/ledger")
    orphan = kill("bare-pod", "2026-11-22T00:48:40.2Z", recovered=None, round_=3)
    orphan["workload"] = ""
    kills += [
        foreign,
        orphan,
        kill(
            "checkout-x", "2026-11-22T00:48:40.3Z", result="Failed", recovered=None, message="pods/eviction forbidden"
        ),
        kill("checkout-y", "2026-11-22T00:48:40.4Z", result="Gone", recovered=None, message="not found"),
        kill("checkout-z", "2026-11-22T00:48:40.5Z", result="SkippedDisruptionBudget", recovered=None, message="PDB"),
        kill("checkout-w", "2026-11-22T00:48:40.6Z", result="SkippedMinAvailable", recovered=None, message="min 2"),
    ]
    odd_query = "sum(rate(x{code=~`5..`}[1m])) ``` & <b>"
    run = completed_run(
        id="r7-20261122T004820Z",
        trigger="schedule",
        phase="Failed",
        reason="KillFailed",
        message="run failed:\n```\nstack <trace> & `details`\n```",
        deadline="2026-11-22T00:48:30.0Z",
        finishedAt="2026-11-22T00:49:59.9Z",
        kills=kills,
        killsTotal=60,
        steadyStateBefore="held | ok",
        steadyStateAfter="not held:\nline two",
        slis=slis_of(
            {
                'lat<"p99">': [
                    sample("2026-11-22T00:48:20.1Z", "Holding", "0.25"),
                    sample("2026-11-22T00:48:21.1Z", "Pending", "+Inf"),
                    sample("2026-11-22T00:48:22.1Z", "Unavailable", "NaN"),  # what a NaN makes
                    sample("2026-11-22T00:48:23.1Z", "Holding", "0.3"),
                    sample("2026-11-22T00:48:24.1Z", "Holding", "0.3"),
                    sample("2026-11-22T00:48:25.1Z", "Holding", "-2"),
                ],
                "undeclared": [sample("2026-11-22T00:48:21.0Z", "Holding", "7")],
            }
        ),
    )
    spec = {
        "action": "pod-kill",
        "duration": "90s",
        "interval": "500ms",
        "schedule": {"cron": "0 10 * * 1-5", "timeZone": "Europe/Paris"},
        "target": {"mode": "fixed", "value": 2, "selector": {"matchLabels": {"app": "checkout", "tier": "web"}}},
        "steadyState": {
            "conditions": [
                {"name": 'lat<"p99">', "query": odd_query, "operator": "<=", "threshold": 0.5, "for": "5s"},
                {"name": "silent", "query": "up", "operator": ">", "threshold": 0},
            ],
            "prometheus": {"url": "http://prometheus:9090"},
        },
    }
    older = breach_run()
    return experiment(spec, run, history=[older], name="edge&<case>")


def cases() -> list[Case]:
    return [
        _from_object("completed", experiment(PLAIN_SPEC, completed_run())),
        _from_object("breach", experiment(GUARDED_SPEC, breach_run())),
        _from_object("did_not_recover", experiment(PLAIN_SPEC, did_not_recover_run())),
        _from_object("prometheus_unavailable", experiment(GUARDED_SPEC, unavailable_run())),
        _from_object("unreachable_before_the_run", _unreachable_before_the_run()),
        _from_object("near_miss", near_miss_experiment()),
        _from_object("clean_guarded", experiment(GUARDED_SPEC, clean_guarded_run())),
        _from_object("abort_requested", _ended_by("AbortRequested", "aborted on request: game day over")),
        _from_object(
            "suspended",
            _ended_by(
                "Suspended",
                "REFUSED suspended: chaos is suspended by ChaosPolicy/chaosguard-emergency-stop; nothing starts "
                "until spec.suspend is set back to false",
            ),
        ),
        _from_object("steady_state_not_held", _ended_by("SteadyStateNotHeld", "the steady state does not hold")),
        _from_object("window_closed", _ended_by("Window", "the allowed window closed at 18:00 Europe/Paris")),
        _from_object("dry_run", dry_run_experiment()),
        _from_object("no_targets", experiment(PLAIN_SPEC, completed_run(kills=[], killsTotal=0))),
        _from_object("latency", experiment(*latency_spec_and_run())),
        _from_object("partition", experiment(*partition_spec_and_run())),
        _from_object("network_dry_run", _network_dry_run()),
        _from_object(
            "older_run", experiment(GUARDED_SPEC, breach_run(), history=[completed_run()]), "r1-20261122T004820Z"
        ),
        _in_progress(),
        _from_object("hostile", hostile_experiment()),
        _from_object("policy_guard", experiment(PLAIN_SPEC, policy_guard_run())),
        _from_object("edges", _edges()),
        _from_object("breach_message_only", experiment(GUARDED_SPEC, breach_run(message=BREACH_MESSAGE))),
    ]
