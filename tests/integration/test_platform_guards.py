"""The cluster owners' guards (ChaosPolicy.spec.steadyState) against a real Prometheus that holds
Sloth- and Pyrra-shaped recording rules and an alerting rule, all fed by the metrics endpoint the
tests flip; policies and experiments go in with `kubectl apply`, the operator runs as a process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaosguard.api.models import ErrorBudgetGate
from chaosguard.cli.main import main
from chaosguard.clients.kube import Cluster
from chaosguard.decisions.platform_guards import budget_query, burn_rate_query
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    experiment_yaml,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals, prometheus_available
from localcluster.wait import wait_for
from tests.integration.test_operator_slo import kills_so_far, run_of

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.prometheus,
    pytest.mark.skipif(not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)"),
]


def _as(label: str, expr: str) -> str:
    """`expr` with the scraped `app` label copied into `label` (every test's app is its namespace)."""
    return f'label_replace({expr}, "{label}", "$1", "app", "(.+)")'


# Series named and labelled as Sloth and Pyrra record them, computed from the flipped gauge
# demo_error_ratio{app}: a 99% SLO, so a 1% budget. Sloth's period budget is counted over a rolling
# 10 s window here (30 days in real life), so that a spent budget recovers within a test.
RULE_GROUPS: list[dict[str, Any]] = [
    {
        "name": "sloth-shaped",
        "rules": [
            {
                "record": "slo:sli_error:ratio_rate5m",
                "expr": _as("sloth_id", _as("sloth_service", "demo_error_ratio")),
                "labels": {"sloth_slo": "availability", "sloth_window": "5m"},
            },
            {
                "record": "slo:error_budget:ratio",
                "expr": _as("sloth_id", _as("sloth_service", "demo_error_ratio * 0 + 0.01")),
                "labels": {"sloth_slo": "availability"},
            },
            {
                "record": "slo:period_error_budget_remaining:ratio",
                "expr": _as("sloth_id", _as("sloth_service", "1 - avg_over_time(demo_error_ratio[10s]) / 0.01")),
                "labels": {"sloth_slo": "availability"},
            },
        ],
    },
    {
        "name": "pyrra-shaped",
        "rules": [
            {"record": "pyrra_objective", "expr": _as("slo", "demo_error_ratio * 0 + 0.99")},
            {"record": "pyrra_availability", "expr": _as("slo", "1 - demo_error_ratio")},
            {"record": "demo_requests:burnrate5m", "expr": _as("slo", "demo_error_ratio")},
        ],
    },
    {
        "name": "incidents",
        "rules": [
            {
                "alert": "CheckoutSlow",
                "expr": _as("namespace", "demo_latency_seconds > 1"),
                "labels": {"severity": "critical"},
            }
        ],
    },
]


@pytest.fixture(scope="module")
def target() -> Iterator[MetricsTarget]:
    with MetricsTarget() as metrics:
        yield metrics


@pytest.fixture(scope="module")
def prometheus(target: MetricsTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [target], rule_groups=RULE_GROUPS) as server:
        yield server


@pytest.fixture
def policies(control_plane: ControlPlane) -> Iterator[list[str]]:
    """Names of the ChaosPolicies a test applies; deleted at its end."""
    names: list[str] = []
    yield names
    for name in names:
        control_plane.kubectl("delete", "chaospolicy", name, "--ignore-not-found")


@dataclass
class Scene:
    """One test's world: the API, its opted-in shop namespace (healthy metrics), the flipped
    metrics, the rule-holding Prometheus, and the policies it applied (deleted at its end)."""

    k8s: client.ApiClient
    plane: ControlPlane
    shop: str
    target: MetricsTarget
    prometheus: PrometheusServer
    policies: list[str]

    def policy(self, guards: dict[str, Any]) -> str:
        return apply_policy(self.plane, self.policies, self.shop, self.prometheus.url, guards)

    def apply(self, manifest: str) -> None:
        apply_yaml(self.plane, manifest, self.shop)


@pytest.fixture
def scene(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
    policies: list[str],
) -> Scene:
    target.set_error_ratio(0.001, app=shop)
    target.set_latency(0.1, app=shop)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{shop}"}}', equals(0.001))
    return Scene(k8s, control_plane, shop, target, prometheus, policies)


def apply_policy(control_plane: ControlPlane, names: list[str], shop: str, url: str, guards: dict[str, Any]) -> str:
    """A policy covering only this test's namespace, applied as YAML (JSON is YAML) with kubectl;
    its guards ask `url` every second."""
    name = f"guards-{shop}"[:63]
    steady_state = {"prometheus": {"url": url, "timeout": "500ms"}, "interval": "1s", **guards}
    body = {
        "apiVersion": "chaosguard.dev/v1alpha1",
        "kind": "ChaosPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"chaosguard.dev/test": shop}},
            "steadyState": steady_state,
        },
    }
    apply_yaml(control_plane, json.dumps(body))
    names.append(name)
    return name


def wait_for_refusal(k8s: client.ApiClient, shop: str, name: str, rule: str) -> dict[str, Any]:
    """The experiment's status once it waits on `rule` instead of starting."""
    return wait_for(
        lambda: (s := status_of(k8s, shop, name)) and f"REFUSED {rule}" in s.get("message", "") and s,
        timeout=30,
        what=f"{shop}/{name} to wait on {rule}",
        describe=lambda: str(status_of(k8s, shop, name).get("message")),
    )


def test_a_spent_budget_keeps_a_run_waiting_until_it_recovers(scene: Scene) -> None:
    budget = f'slo:period_error_budget_remaining:ratio{{sloth_service="{scene.shop}"}}'
    scene.target.set_error_ratio(0.05, app=scene.shop)  # 5x the budget: spent within the (10 s) window
    scene.prometheus.wait_for_value(budget, lambda value: value < 0)
    policy = scene.policy(
        {
            "errorBudgets": [
                {"name": "checkout", "sloth": {"service": scene.shop, "slo": "availability"}, "minBudgetRemaining": 50}
            ],
        },
    )
    scene.apply(experiment_yaml("budget", duration="3s"))

    waiting = wait_for_refusal(scene.k8s, scene.shop, "budget", "error-budget")
    message = waiting["message"]
    assert waiting["phase"] == "Scheduled" and not waiting.get("currentRun"), waiting
    assert f"ChaosPolicy/{policy}" in message and "minimum of 50%" in message, message
    assert "of the 30d budget left" in message and "burn rate 5x over 5m" in message, message
    assert "not recovering" in message, message  # burning as fast as the budget went: no start in sight
    started = {c["type"]: c for c in waiting["conditions"]}["Started"]
    assert started["status"] == "False" and started["reason"] == "ErrorBudgetLow"
    event = wait_for_event(scene.k8s, scene.shop, "budget", "Waiting")
    assert event.type == "Warning" and "error budget checkout" in event.message

    scene.target.set_error_ratio(0.0, app=scene.shop)  # no more errors: the old ones leave the window
    recovered_after = datetime.now().astimezone()
    status = wait_for_phase(scene.k8s, scene.shop, "budget", {"Completed", "Aborted", "Failed"}, timeout=60)
    assert status["phase"] == "Completed", status["message"]
    started_at = datetime.fromisoformat(run_of(status)["startedAt"])
    assert started_at >= recovered_after, (started_at, recovered_after)


def test_a_burn_rate_above_the_maximum_aborts_a_running_run_naming_the_policy(scene: Scene) -> None:
    scene.prometheus.wait_for_value(f'demo_requests:burnrate5m{{slo="{scene.shop}"}}', equals(0.001))
    policy = scene.policy(
        {
            "errorBudgets": [
                {
                    "name": "checkout",
                    "pyrra": {"slo": scene.shop, "metric": "demo_requests"},
                    "minBudgetRemaining": 10,
                    "maxBurnRate": 10,
                }
            ],
        },
    )
    scene.apply(experiment_yaml("burn", duration="2m", interval="2s"))
    wait_for(lambda: kills_so_far(scene.k8s, scene.shop, "burn") >= 1, timeout=30, what="a first kill")
    scene.target.set_error_ratio(0.5, app=scene.shop)  # 50x the budget's sustainable rate
    status = wait_for_phase(scene.k8s, scene.shop, "burn", "Aborted", timeout=20)
    run = run_of(status)
    abort = run["abort"]
    assert abort["policy"] == policy and abort["condition"] == f"{policy}/checkout:burn-rate", abort
    assert abort["value"] == "50" and abort["threshold"] == 10, abort
    assert run["reason"] == "BurnRateExceeded"
    assert f"ChaosPolicy/{policy}" in status["message"] and "burns at 50x" in status["message"], status["message"]
    event = wait_for_event(scene.k8s, scene.shop, "burn", "BurnRateExceeded")
    assert event.type == "Warning" and policy in event.message


def test_an_alert_firing_keeps_a_run_from_starting_and_aborts_it_when_it_starts_firing(scene: Scene) -> None:
    firing = f'ALERTS{{alertname="CheckoutSlow",alertstate="firing",namespace="{scene.shop}"}}'
    scene.target.set_latency(2.0, app=scene.shop)
    scene.prometheus.wait_for_value(firing, equals(1.0))
    policy = scene.policy(
        {
            "quietAlerts": {"matchers": ['severity="critical"'], "targetNamespacesOnly": True},
        },
    )
    scene.apply(experiment_yaml("incident", duration="2m", interval="2s"))
    waiting = wait_for_refusal(scene.k8s, scene.shop, "incident", "quiet-alerts")
    assert "alert CheckoutSlow is firing" in waiting["message"] and policy in waiting["message"], waiting["message"]
    assert not waiting.get("currentRun")

    scene.target.set_latency(0.1, app=scene.shop)  # the incident is over: the run starts
    wait_for(lambda: kills_so_far(scene.k8s, scene.shop, "incident") >= 1, timeout=30, what="a first kill")
    scene.target.set_latency(2.0, app=scene.shop)  # a new incident while the run goes on
    status = wait_for_phase(scene.k8s, scene.shop, "incident", "Aborted", timeout=20)
    run = run_of(status)
    assert run["reason"] == "AlertFiring" and run["abort"]["policy"] == policy, run
    assert 'alertname="CheckoutSlow"' in run["abort"]["series"], run["abort"]
    assert "alert CheckoutSlow is firing" in status["message"] and f"ChaosPolicy/{policy}" in status["message"]
    wait_for_event(scene.k8s, scene.shop, "incident", "AlertFiring")
    scene.target.set_latency(0.1, app=scene.shop)


def test_an_author_cannot_drop_or_weaken_a_policy_condition(scene: Scene) -> None:
    query = f'demo_error_ratio{{app="{scene.shop}"}}'
    policy = scene.policy(
        {
            "conditions": [{"name": "error-ratio", "query": query, "operator": "<", "threshold": 0.05}],
        },
    )
    # The author redefines a condition of the same name, far looser, checked once a minute, and
    # tells the guard to carry on when it cannot tell: none of it touches the policy's condition.
    weakened = experiment_yaml("weakened", duration="2m", interval="2s") + (
        "  steadyState:\n"
        f"    prometheus: {{url: {scene.prometheus.url}}}\n"
        "    interval: 1m\n"
        "    onUnavailable: continue\n"
        "    conditions:\n"
        "      - name: error-ratio\n"
        f"        query: {query}\n"
        '        operator: "<"\n'
        "        threshold: 0.9\n"
    )
    scene.apply(weakened)
    wait_for(lambda: kills_so_far(scene.k8s, scene.shop, "weakened") >= 1, timeout=30, what="a first kill")
    scene.target.set_error_ratio(0.5, app=scene.shop)  # healthy by the author's 0.9, a breach by the policy's 0.05
    status = wait_for_phase(scene.k8s, scene.shop, "weakened", "Aborted", timeout=15)  # well inside the author's 1m
    run = run_of(status)
    abort = run["abort"]
    assert abort["condition"] == f"{policy}/error-ratio" and abort["policy"] == policy, abort
    assert abort["threshold"] == 0.05 and abort["value"] == "0.5", abort
    assert run["reason"] == "PolicySLIBreached"
    judged = [sli["name"] for sli in run["slis"]]
    assert "error-ratio" in judged and f"{policy}/error-ratio" in judged, judged


def test_a_policy_edited_into_one_the_model_refuses_keeps_its_guard_on_runs_and_refuses_new_ones(
    scene: Scene,
) -> None:
    """An edit the API server accepts but the model refuses (a gate named like a condition):
    the running run keeps the policy's guard (a breach still aborts it, naming the policy) and an
    experiment applied meanwhile waits, refused in the policy's name with the field and the rule."""
    query = f'demo_error_ratio{{app="{scene.shop}"}}'
    condition = {"name": "error-ratio", "query": query, "operator": "<", "threshold": 0.05}
    policy = scene.policy({"conditions": [condition]})
    scene.apply(experiment_yaml("guarded", duration="2m", interval="2s"))
    wait_for(lambda: kills_so_far(scene.k8s, scene.shop, "guarded") >= 1, timeout=30, what="a first kill")

    # A gate named like the condition: the model refuses repeated names, the CRD cannot tell.
    broken = {"name": "error-ratio", "ratioQuery": "avg_over_time(x[{{.window}}])", "objective": 99}
    broken |= {"minBudgetRemaining": 10}
    assert policy == scene.policy({"conditions": [condition], "errorBudgets": [broken]})  # the same policy, edited
    scene.apply(experiment_yaml("pending", duration="10s"))
    waiting = wait_for_refusal(scene.k8s, scene.shop, "pending", "invalid-policy")
    message = waiting["message"]
    assert f"ChaosPolicy/{policy} does not validate" in message, message
    assert "spec.steadyState: names must be unique" in message and "repeated: error-ratio" in message, message
    assert not waiting.get("currentRun"), waiting
    started = {c["type"]: c for c in waiting["conditions"]}["Started"]
    assert started["status"] == "False" and started["reason"] == "PolicyInvalid", started
    assert policy in wait_for_event(scene.k8s, scene.shop, "pending", "Waiting").message
    # The fresh read, right before every kill and injection, reports it instead of raising.
    cluster = Cluster(client.CoreV1Api(scene.k8s), client.AppsV1Api(scene.k8s), client.CustomObjectsApi(scene.k8s))
    valid, invalid = cluster.policies_checked()
    assert policy not in {p.metadata.name for p in valid} and "repeated: error-ratio" in invalid[policy], invalid

    scene.target.set_error_ratio(0.5, app=scene.shop)  # a breach of the (now unreadable) policy's condition
    status = wait_for_phase(scene.k8s, scene.shop, "guarded", "Aborted", timeout=20)
    abort = run_of(status)["abort"]
    assert abort["policy"] == policy and abort["condition"] == f"{policy}/error-ratio", abort


def test_an_abort_decided_by_an_unavailable_policy_guard_is_that_policys(scene: Scene) -> None:
    """The author's condition and the policy's both lose their series at once; the author says
    continue, the policy's rule aborts: the abort names the policy's condition and the policy."""
    vanishing = f'demo_error_ratio{{app="{scene.shop}"}} < 0.2'  # no series once the ratio is 0.5
    policy = scene.policy({"conditions": [{"name": "errors", "query": vanishing, "operator": "<", "threshold": 1}]})
    authored = experiment_yaml("unmeasured", duration="2m", interval="2s") + (
        "  steadyState:\n"
        f"    prometheus: {{url: {scene.prometheus.url}}}\n"
        "    interval: 1s\n"
        "    onUnavailable: continue\n"
        "    conditions:\n"
        "      - name: mine\n"
        f"        query: '{vanishing}'\n"
        '        operator: "<"\n'
        "        threshold: 1\n"
    )
    scene.apply(authored)
    wait_for(lambda: kills_so_far(scene.k8s, scene.shop, "unmeasured") >= 1, timeout=30, what="a first kill")
    scene.target.set_error_ratio(0.5, app=scene.shop)
    status = wait_for_phase(scene.k8s, scene.shop, "unmeasured", "Aborted", timeout=20)
    run = run_of(status)
    abort = run["abort"]
    assert abort["condition"] == f"{policy}/errors" and abort.get("policy") == policy, abort
    assert f"ChaosPolicy/{policy}" in status["message"], status["message"]


def test_budget_and_burn_rate_queries_written_for_raw_metrics_run_in_prometheus(
    target: MetricsTarget, prometheus: PrometheusServer
) -> None:
    """The PromQL built from errorQuery/totalQuery and from ratioQuery is valid and means what it says."""
    app = "raw-queries"
    target.set_error_ratio(0.002, app=app)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{app}"}}', equals(0.002))
    ratio = ErrorBudgetGate.model_validate(
        {
            "name": "raw",
            "ratioQuery": f'max(max_over_time(demo_error_ratio{{app="{app}"}}[{{{{.window}}}}]))',
            "objective": 99,
            "window": "1h",
            "minBudgetRemaining": 50,
            "maxBurnRate": 10,
        }
    )
    assert prometheus.wait_for_value(budget_query(ratio), lambda v: abs(v - 0.8) < 1e-9)  # 0.2% of a 1% budget
    assert prometheus.wait_for_value(burn_rate_query(ratio), lambda v: abs(v - 0.2) < 1e-9)
    events = ErrorBudgetGate.model_validate(
        {
            "name": "events",
            "errorQuery": f'sum(max_over_time(demo_error_ratio{{app="{app}"}}[{{{{.window}}}}]))',
            "totalQuery": f'count(max_over_time(demo_error_ratio{{app="{app}"}}[{{{{.window}}}}]))',
            "objective": 99.9,
            "maxBurnRate": 10,
        }
    )
    assert prometheus.wait_for_value(burn_rate_query(events), lambda v: abs(v - 2.0) < 1e-6)


def test_plan_lists_the_guards_of_the_live_policies_as_checked_at_run_time(
    control_plane: ControlPlane,
    chaosguard_crds: ControlPlane,
    shop: str,
    policies: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = apply_policy(
        control_plane,
        policies,
        shop,
        "http://127.0.0.1:9",
        {"quietAlerts": {"matchers": ['severity="critical"']}},
    )
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        experiment_yaml("planned").replace(
            "metadata: {name: planned}", f"metadata: {{name: planned, namespace: {shop}}}"
        )
    )
    code = main(["plan", "-f", str(experiment), "--kubeconfig", str(control_plane.kubeconfig)])
    out = capsys.readouterr().out
    assert code == 0, out
    [guard] = [line.strip() for line in out.splitlines() if line.strip().startswith("GUARD")]
    assert guard.startswith(f"GUARD ChaosPolicy/{policy} quiet alerts") and guard.endswith("checked at run time"), out
