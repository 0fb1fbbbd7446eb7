from __future__ import annotations

from datetime import UTC, datetime

from chaosguard.decisions.policy import (
    applicable_policies,
    combine,
    concurrency_refusal,
    static_refusals,
    time_refusal,
)

from .helpers import experiment_spec, policy

OPTED_IN = {"shop": {"chaosguard.dev/chaos": "allowed"}, "payments": {}}


def rules(refusals: list) -> list[str]:  # type: ignore[type-arg]
    return [refusal.rule for refusal in refusals]


def test_builtin_exclusions_hold_without_any_policy() -> None:
    effective = combine([], operator_namespace="chaosguard-system")
    for namespace in ("kube-system", "kube-public", "kube-node-lease", "chaosguard-system"):
        spec = experiment_spec(target={"namespaces": [namespace], "mode": "one"})
        assert rules(static_refusals(spec, namespace, effective, {})) == ["builtin-excluded-namespace"]


def test_excluded_and_opt_in() -> None:
    effective = combine([policy(excludedNamespaces=["payments"], requireNamespaceOptIn=True)])
    refused = static_refusals(experiment_spec(), "payments", effective, OPTED_IN)
    assert rules(refused) == ["excluded-namespace"]
    assert "ChaosPolicy/default" in refused[0].message
    assert rules(static_refusals(experiment_spec(), "shop", effective, OPTED_IN)) == []
    not_opted = static_refusals(experiment_spec(), "shop", effective, {"shop": {}})
    assert rules(not_opted) == ["namespace-opt-in"]
    assert "kubectl label namespace shop chaosguard.dev/chaos=allowed" in not_opted[0].message
    # Offline (labels unknown) the opt-in cannot be judged, so it does not refuse.
    assert rules(static_refusals(experiment_spec(), "shop", effective, None)) == []


def test_strictest_value_wins_across_policies() -> None:
    effective = combine(
        [
            policy("a", maxPercentage=50, maxDuration="30m", allowedActions=["pod-kill", "latency"]),
            policy("b", maxPercentage=20, maxDuration="1h", allowedActions=["pod-kill"]),
        ]
    )
    assert effective.max_percentage == (20, "ChaosPolicy/b")
    assert effective.max_duration == (1800.0, "ChaosPolicy/a")
    too_long = experiment_spec(duration="45m", target={"mode": "fixed-percent", "value": 30})
    refused = static_refusals(too_long, "shop", effective, OPTED_IN)
    assert rules(refused) == ["max-duration", "max-percentage"]
    assert "set spec.duration to 30m or less" in refused[0].message
    latency = experiment_spec(action="latency", latency={"delay": "100ms"})
    assert rules(static_refusals(latency, "shop", effective, OPTED_IN)) == ["allowed-actions"]


def test_mode_all_is_refused_under_a_cap_not_clamped() -> None:
    effective = combine([policy(maxPercentage=30)])
    refused = static_refusals(experiment_spec(target={"mode": "all"}), "shop", effective, OPTED_IN)
    assert rules(refused) == ["max-percentage"]
    assert "fixed-percent with value 30" in refused[0].message


def test_namespace_selector_limits_where_a_policy_applies() -> None:
    strict = policy("prod-only", namespaceSelector={"matchLabels": {"env": "prod"}}, maxPercentage=10)
    labels = {"shop": {"env": "prod"}, "sandbox": {"env": "dev"}}
    assert applicable_policies([strict], ["shop"], labels) == [strict]
    assert applicable_policies([strict], ["sandbox"], labels) == []
    assert applicable_policies([strict], ["sandbox"], None) == [strict]


def test_cross_namespace_needs_every_policy_to_allow_it() -> None:
    spec = experiment_spec(target={"namespaces": ["payments"], "mode": "one"})
    assert rules(static_refusals(spec, "shop", combine([]), OPTED_IN)) == ["cross-namespace"]
    both = combine([policy("a", allowCrossNamespace=True), policy("b", allowCrossNamespace=True)])
    assert rules(static_refusals(spec, "shop", both, OPTED_IN)) == []
    one = combine([policy("a", allowCrossNamespace=True), policy("b")])
    assert rules(static_refusals(spec, "shop", one, OPTED_IN)) == ["cross-namespace"]


def test_steady_state_required_and_suspension() -> None:
    effective = combine([policy(requireSteadyState=True, suspend=True)])
    assert rules(static_refusals(experiment_spec(), "shop", effective, OPTED_IN)) == [
        "require-steady-state",
        "suspended",
    ]


def test_concurrency() -> None:
    effective = combine([policy(maxConcurrentExperiments=2)])
    assert concurrency_refusal(effective, 1) is None
    refusal = concurrency_refusal(effective, 2)
    assert refusal is not None and refusal.rule == "max-concurrent-experiments"
    assert concurrency_refusal(combine([]), 100) is None


def test_windows_and_blackouts() -> None:
    effective = combine(
        [
            policy(
                windows=[{"cron": "0 10 * * MON-THU", "duration": "6h", "timeZone": "Europe/Berlin"}],
                blackouts=[
                    {
                        "start": "2026-12-20T00:00:00Z",
                        "end": "2027-01-04T00:00:00Z",
                        "reason": "holiday freeze",
                    }
                ],
            )
        ]
    )
    tuesday = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    assert time_refusal(effective, tuesday) is None
    friday = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    refusal = time_refusal(effective, friday)
    assert refusal is not None and refusal.rule == "window"
    assert "next allowed start is 2026-11-30T10:00:00+01:00" in refusal.message
    holiday_tuesday = datetime(2026, 12, 22, 11, 0, tzinfo=UTC)
    refusal = time_refusal(effective, holiday_tuesday)
    assert refusal is not None and refusal.rule == "blackout" and "holiday freeze" in refusal.message
