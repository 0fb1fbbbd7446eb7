"""Where an experiment's Prometheus queries and credentials may go, and the Secrets it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chaosguard.api.models import ChaosPolicySpec
from chaosguard.cli.main import main
from chaosguard.decisions.policy import combine
from chaosguard.decisions.prometheus_access import (
    endpoint_refusals,
    named_secrets,
    secrets_without_author,
    url_within,
)

from .helpers import experiment_spec, policy

TOKEN = {"name": "prometheus-token", "key": "token"}
OPERATOR_URL = "http://prometheus.monitoring:9090"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def guarded(url: str, *, token: bool = False, condition_url: str | None = None, **endpoint: Any) -> Any:
    prometheus = {"url": url, **endpoint, **({"bearerTokenSecret": TOKEN} if token else {})}
    condition: dict[str, Any] = {"name": "errors", "query": "up", "operator": "<", "threshold": 1}
    if condition_url is not None:
        condition["prometheus"] = {"url": condition_url, "caSecret": {"name": "prometheus-ca", "key": "ca.crt"}}
    return experiment_spec(steadyState={"prometheus": prometheus, "conditions": [condition]})


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("http://prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),
        ("http://prometheus.monitoring:9090/", "http://prometheus.monitoring:9090"),
        ("http://Prometheus.Monitoring:9090", "HTTP://prometheus.monitoring:9090/"),
        ("http://prometheus.monitoring", "http://prometheus.monitoring:80"),
        ("https://thanos.example", "https://thanos.example:443/"),
        ("http://p:9090/team-a", "http://p:9090/team-a"),
        ("http://p:9090/team-a/sub", "http://p:9090/team-a/"),
        ("http://[::1]:9090", "http://[::1]:9090"),
    ],
)
def test_a_url_within_its_prefix(url: str, prefix: str) -> None:
    assert url_within(url, prefix)


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("https://prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),  # scheme
        ("http://prometheus.monitoring:9091", "http://prometheus.monitoring:9090"),  # port
        ("http://prometheus.monitoring", "http://prometheus.monitoring:9090"),  # default port 80
        ("http://prometheus.monitoring.evil.example:9090", "http://prometheus.monitoring:9090"),  # host suffix
        ("http://evil-prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),
        ("http://prometheus.monitoring:9090@evil.example", "http://prometheus.monitoring:9090"),  # user info
        ("http://user:pw@prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),
        ("http://p:9090/team-ab", "http://p:9090/team-a"),  # not on a segment boundary
        ("http://p:9090", "http://p:9090/team-a"),
        ("http://p:9090/team-a/../team-b", "http://p:9090/team-a"),  # dot segments
        ("http://p:9090/team-a/%2e%2e/team-b", "http://p:9090/team-a"),  # encoded
        ("http://p:9090/team-a%2f..%2fteam-b", "http://p:9090/team-a"),
        ("http://p:9090/team-a\\..\\team-b", "http://p:9090/team-a"),  # backslashes
        ("http://p:9090/?x=/team-a", "http://p:9090"),  # query
        ("http://p:9090/#frag", "http://p:9090"),  # fragment
        ("http://p:99999", "http://p:99999"),  # no such port
        ("http://2130706433:9090", "http://127.0.0.1:9090"),  # another spelling of an address: fails closed
    ],
)
def test_a_url_outside_its_prefix(url: str, prefix: str) -> None:
    assert not url_within(url, prefix)


def test_without_any_list_a_token_goes_only_to_the_operators_prometheus() -> None:
    effective = combine([policy()])
    assert endpoint_refusals(guarded(OPERATOR_URL, token=True), effective, OPERATOR_URL) == []
    [refusal] = endpoint_refusals(guarded("http://collector.attacker.example", token=True), effective, OPERATOR_URL)
    assert refusal.rule == "prometheus-credentials-url"
    assert refusal.field == "spec.steadyState.prometheus.bearerTokenSecret"
    assert "would send a token to http://collector.attacker.example" in refusal.message
    assert f"a token goes only to the operator's own Prometheus, {OPERATOR_URL}" in refusal.message
    assert "spec.allowedPrometheusURLs" in refusal.message
    # With no operator URL configured, no token goes anywhere; the message says how to configure one.
    [unconfigured] = endpoint_refusals(guarded(OPERATOR_URL, token=True), effective, None)
    assert "none is configured (chaosguard run --prometheus-url)" in unconfigured.message


def test_without_any_list_a_url_without_credentials_may_be_anything() -> None:
    effective = combine([])
    assert endpoint_refusals(guarded("http://anything.example:1234"), effective, None) == []
    # a CA bundle is not sent anywhere: it is not a credential for this rule (its Secret is checked)
    assert endpoint_refusals(guarded("http://x", condition_url="https://y"), effective, None) == []


def test_a_policy_list_governs_every_url_and_every_listing_policy_must_allow_it() -> None:
    team = policy("team", allowedPrometheusURLs=["http://prometheus.monitoring:9090", "https://thanos.example/shop"])
    platform = policy("platform", allowedPrometheusURLs=["https://thanos.example"])
    silent = policy("silent")
    effective = combine([team, silent])
    assert endpoint_refusals(guarded("https://thanos.example/shop", token=True), effective, None) == []
    assert endpoint_refusals(guarded(OPERATOR_URL), effective, None) == []
    [refusal] = endpoint_refusals(guarded("http://other.example:9090"), effective, OPERATOR_URL)
    assert refusal.rule == "prometheus-url" and refusal.field == "spec.steadyState.prometheus.url"
    assert refusal.message.startswith(
        "spec.steadyState.prometheus.url http://other.example:9090 is not among the Prometheus URLs "
        "ChaosPolicy/team allows (http://prometheus.monitoring:9090, https://thanos.example/shop); "
    )
    # A list replaces the operator's URL as the place a token may go.
    assert [r.rule for r in endpoint_refusals(guarded("http://x:1", token=True), effective, "http://x:1")] == [
        "prometheus-url"
    ]
    both = combine([team, platform])
    assert endpoint_refusals(guarded("https://thanos.example/shop"), both, None) == []
    [refusal] = endpoint_refusals(guarded(OPERATOR_URL), both, None)
    assert "ChaosPolicy/platform allows (https://thanos.example)" in refusal.message
    # Each endpoint is judged, a condition's own included, and named by its field.
    [refusal] = endpoint_refusals(guarded(OPERATOR_URL, condition_url="https://other.example"), effective, None)
    assert refusal.field == "spec.steadyState.conditions[0].prometheus.url"
    # An empty list allows none.
    nothing = combine([policy(allowedPrometheusURLs=[])])
    assert "allows (none)" in endpoint_refusals(guarded(OPERATOR_URL), nothing, None)[0].message


def test_an_unmatchable_url_says_why() -> None:
    effective = combine([policy(allowedPrometheusURLs=["http://p:9090"])])
    [refusal] = endpoint_refusals(guarded("http://p:9090@evil.example"), effective, None)
    assert "(it carries user info (user@host); put credentials in bearerTokenSecret)" in refusal.message


def test_every_named_secret_with_its_field() -> None:
    spec = guarded(OPERATOR_URL, token=True, condition_url="https://y")
    assert [(field, ref.name) for field, ref in named_secrets(spec)] == [
        ("spec.steadyState.prometheus.bearerTokenSecret", "prometheus-token"),
        ("spec.steadyState.conditions[0].prometheus.caSecret", "prometheus-ca"),
    ]
    assert named_secrets(experiment_spec()) == []


def test_a_named_secret_needs_a_known_author() -> None:
    assert secrets_without_author(guarded(OPERATOR_URL), "no author stamp") is None
    refusal = secrets_without_author(guarded(OPERATOR_URL, token=True), "no author stamp")
    assert refusal is not None and refusal.rule == "secret-author-unknown"
    assert refusal.field == "spec.steadyState.prometheus.bearerTokenSecret"
    assert "the author is unknown (no author stamp)" in refusal.message and "--webhook-port" in refusal.message


@pytest.mark.parametrize(
    "prefix",
    ["ftp://p", "http://u@p:9090", "http://p:9090/?q=1", "http://p:9090/#f", "http://p/a/../b", "http://p/%2e%2e"],
)
def test_a_policy_refuses_a_prefix_that_cannot_be_matched_safely(prefix: str) -> None:
    with pytest.raises(ValidationError) as error:
        ChaosPolicySpec.model_validate({"allowedPrometheusURLs": [prefix]})
    assert "allowedPrometheusURLs" in str(error.value)


def test_validate_judges_urls_as_the_operator_does(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    experiment = tmp_path / "experiment.yaml"
    body = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": "guarded", "namespace": "shop"},
        "spec": {
            **experiment_spec().to_wire(),
            "steadyState": guarded(OPERATOR_URL, token=True).steady_state.to_wire(),
        },
    }
    experiment.write_text(yaml.safe_dump(body))
    assert main(["validate", "-f", str(experiment), "--prometheus-url", OPERATOR_URL]) == 0
    code = main(["validate", "-f", str(experiment), "--prometheus-url", "http://prometheus.other:9090"])
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED prometheus-credentials-url: spec.steadyState.prometheus.bearerTokenSecret" in out
    # The example policy lists the operator's Prometheus, so it allows this URL whatever --prometheus-url says.
    policy_file = str(EXAMPLES / "policy-prometheus-urls.yaml")
    assert main(["validate", "-f", str(experiment), "--policy", policy_file, "--prometheus-url", ""]) == 0
    body["spec"]["steadyState"]["prometheus"]["url"] = "http://collector.example:9090"
    experiment.write_text(yaml.safe_dump(body))
    assert main(["validate", "-f", str(experiment), "--policy", policy_file]) == 1
    out = capsys.readouterr().out
    assert "REFUSED prometheus-url: spec.steadyState.prometheus.url http://collector.example:9090 is not among" in out
    assert "ChaosPolicy/prometheus-endpoints allows (http://prometheus.monitoring:9090, " in out


def test_a_host_header_cannot_steer_the_query_elsewhere() -> None:
    effective = combine([policy(allowedPrometheusURLs=[OPERATOR_URL])])
    [refusal] = endpoint_refusals(guarded(OPERATOR_URL, headers={"HOST": "vault.internal"}), effective, None)
    assert refusal.rule == "prometheus-host-header" and refusal.field == "spec.steadyState.prometheus.headers"
    assert endpoint_refusals(guarded(OPERATOR_URL, headers={"X-Scope-OrgID": "shop"}), effective, None) == []
