from __future__ import annotations

import pytest
from pydantic import ValidationError

from chaosguard.api.durations import DurationError, format_seconds, to_seconds
from chaosguard.api.models import ChaosExperimentSpec, LabelSelector

from .helpers import experiment_spec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("0", 0), ("1.5s", 1.5)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5 m", "m5", "-1s", "1d", "", "PT30S"])
def test_bad_durations_name_the_form(text: str) -> None:
    with pytest.raises(DurationError, match="number followed by ms, s, m or h"):
        to_seconds(text)


def test_format_seconds_round_trips() -> None:
    assert format_seconds(5400) == "1h30m"
    assert format_seconds(0.2) == "200ms"
    assert to_seconds(format_seconds(1800)) == 1800


def test_minimal_pod_kill_is_valid() -> None:
    spec = experiment_spec()
    assert spec.pod_kill_settings.respect_disruption_budgets is True
    assert spec.duration_seconds == 300


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"action": "latency"}, "spec.latency is required when action is latency"),
        ({"latency": {"delay": "100ms"}}, "spec.latency is only allowed when action is latency"),
        ({"target": {"mode": "fixed"}}, "target.value is required for mode fixed"),
        ({"target": {"mode": "one", "value": 2}}, "target.value must be omitted for mode one"),
        ({"target": {"mode": "fixed-percent", "value": 150}}, "use 1 to 100"),
        ({"duration": "5 minutes"}, "duration"),
        ({"duration": "0"}, "spec.duration must be longer than 0"),
        ({"podKill": {"gracePeriodSeconds": 0}}, "greater than or equal to 1"),
        ({"podKill": {"minAvailable": "50"}}, "percentage"),
        ({"schedule": {"cron": "every tuesday"}}, "5-field cron"),
        ({"schedule": {"cron": "0 14 * * TUE", "timeZone": "Mars/Olympus"}}, "IANA time zone"),
        ({"targett": {}}, "Extra inputs are not permitted"),
        ({"action": "latency", "latency": {"delay": "1s"}, "interval": "1m"}, "interval"),
        ({"action": "latency", "latency": {"delay": "0"}}, "adds no delay"),
        ({"action": "latency", "latency": {"delay": "100ms", "correlation": 25}}, "only correlates jitter"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        experiment_spec(**overrides)
    assert fragment in str(error.value)


def test_steady_state_needs_a_prometheus_for_every_condition() -> None:
    with pytest.raises(ValidationError, match="has no Prometheus"):
        experiment_spec(
            steadyState={"conditions": [{"name": "errors", "query": "up", "operator": "<", "threshold": 1}]}
        )


def test_a_guard_interval_of_zero_is_refused() -> None:
    condition = {"name": "errors", "query": "up", "operator": "<", "threshold": 1}
    with pytest.raises(ValidationError, match=r"steadyState.interval must be longer than 0"):
        experiment_spec(
            steadyState={"prometheus": {"url": "http://p:9090"}, "interval": "0s", "conditions": [condition]}
        )


def test_latency_cidrs_are_checked() -> None:
    with pytest.raises(ValidationError, match="not a CIDR"):
        ChaosExperimentSpec.model_validate(
            {
                "action": "latency",
                "latency": {"delay": "100ms", "destinationCIDRs": ["10.0.0.0/33"]},
                "target": {"mode": "one"},
                "duration": "1m",
            }
        )


def test_label_selector_semantics() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "checkout"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"app": "checkout", "tier": "web"})
    assert not selector.matches({"app": "checkout", "tier": "db"})
    assert not selector.matches({"app": "checkout", "tier": "web", "canary": "1"})
    assert not selector.matches({"tier": "web"})
    assert selector.to_label_selector_string() == "app=checkout,tier in (web,api),!canary"
    assert LabelSelector().matches({"anything": "x"})
