"""The Grafana dashboard and the alerting rules (deploy/monitoring, and the Helm chart's copies).

- Every dashboard query (panels and annotations) and every rule expression is evaluated by a real
  Prometheus scraping a real operator (as job chaosguard-metrics, the Service's name) after real runs
  (one Completed, one aborted when its SLI, served by the same Prometheus, breaches mid-run), and
  returns without error; the ones that must say something do (one replica leading, the breach abort
  counted by the alert's expression, the kill's recovery time).
- `promtool check rules` passes on the rule file.
- `helm template` with the ServiceMonitor, the PrometheusRule and the dashboard switched on renders
  objects the API server accepts in a server-side dry run with the Prometheus Operator's CRDs installed
  (monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml of prometheus-operator v0.85.0, vendored
  in tests/support/prometheus-operator-crds from the Go module proxy's module zip, Apache-2.0).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localcluster.controlplane import ControlPlane, default_bin_dir
from localcluster.operator import REPO, OperatorProcess, apply_yaml, experiment_yaml, wait_for_phase
from localcluster.prometheus import MetricsTarget, PrometheusServer, prometheus_available
from tests.integration.test_helm_chart import CHART, NAMESPACE, helm, render
from tests.integration.test_operator_ops import OperatorMetrics

pytestmark = pytest.mark.controlplane
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "chaosguard-rules.yaml"
DASHBOARD = MONITORING / "chaosguard-dashboard.json"
OPERATOR_CRDS = Path(__file__).resolve().parents[1] / "support" / "prometheus-operator-crds"
JOB = "chaosguard-metrics"
# Grafana's variables, as Grafana would fill them in for "All jobs" over the last 10 minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m", "$job": ".*"}
needs_prometheus = pytest.mark.skipif(
    not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)"
)


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, by panel (or annotation) title."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {f"{p['title']} [{t['refId']}]": t["expr"] for p in dashboard["panels"] for t in p["targets"]}
    queries |= {f"annotation {a['name']}": a["expr"] for a in dashboard["annotations"]["list"]}
    return queries


def filled(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not fill in: {expr}"
    return expr


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


@pytest.fixture(scope="module")
def demo() -> Iterator[MetricsTarget]:
    """The guarded service's own metrics: its error ratio, which the test flips to breach the SLI."""
    with MetricsTarget() as target:
        yield target


@pytest.fixture(scope="module")
def prometheus(
    demo: MetricsTarget, chaos_operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    operator = OperatorMetrics(chaos_operator)
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [demo], jobs={JOB: [operator]}) as server:
        yield server


def guarded(experiment: str, prometheus: PrometheusServer) -> str:
    return experiment + (
        "  steadyState:\n"
        f"    prometheus: {{url: '{prometheus.url}'}}\n"
        "    interval: 1s\n"
        "    conditions:\n"
        "      - {name: error-ratio, query: 'max(demo_error_ratio)', operator: '<', threshold: 0.05}\n"
    )


# --------------------------------------------------------------------------- files


def test_promtool_accepts_the_rule_file() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make system-deps` installs Debian's prometheus package, which has it"
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in result.stdout


def test_the_chart_carries_the_same_dashboard_and_rules() -> None:
    for path in (RULES, DASHBOARD):
        assert (CHART / "files" / path.name).read_bytes() == path.read_bytes(), f"{path.name}: run `make helm-sync`"


def test_every_dashboard_panel_says_what_it_answers() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "chaosguard"
    for panel in dashboard["panels"]:
        assert panel["description"], panel["title"]
        assert all(re.search(r'job=~"\$job"', t["expr"]) for t in panel["targets"]), panel["title"]


# --------------------------------------------------------------------------- a real Prometheus, a real operator


@pytest.mark.prometheus
@needs_prometheus
def test_every_dashboard_query_and_rule_evaluates_on_prometheus_scraping_the_operator(
    control_plane: ControlPlane, k8s: client.ApiClient, shop: str, demo: MetricsTarget, prometheus: PrometheusServer
) -> None:
    apply_yaml(control_plane, experiment_yaml("watched", duration="2s"), shop)
    wait_for_phase(k8s, shop, "watched", "Completed", timeout=60)
    demo.set_error_ratio(0.0)
    prometheus.wait_for_value("max(demo_error_ratio)", lambda v: v == 0.0)
    apply_yaml(control_plane, guarded(experiment_yaml("breached", duration="1m", interval="5s"), prometheus), shop)
    wait_for_phase(k8s, shop, "breached", "Running", timeout=60)
    demo.set_error_ratio(0.5)
    aborted = wait_for_phase(k8s, shop, "breached", "Aborted", timeout=60)
    assert aborted["lastRun"]["reason"] == "SLIBreached", aborted["lastRun"]

    aborts = rule_expressions()["ChaosguardRunAbortedByBreach"]
    fired = prometheus.wait_for_series(aborts, lambda series: len(series) >= 1, timeout=30)
    assert {labels["reason"] for labels, _ in fired} <= {"SLIBreached", "SLIUnavailable"}
    leading = prometheus.wait_for_value(filled(dashboard_queries()["Operator up and leading [B]"]), lambda v: v >= 1)
    assert leading == 1.0
    prometheus.wait_for_series(
        filled(dashboard_queries()["Runs by phase [A]"]),
        lambda series: any(labels.get("result") == "Completed" and value >= 1 for labels, value in series),
        timeout=30,
    )

    answers: dict[str, Any] = {}
    for title, expr in dashboard_queries().items():
        answers[title] = prometheus.query(filled(expr))  # raises on any error Prometheus reports
    for alert, expr in rule_expressions().items():
        answers[alert] = prometheus.query(expr)
    assert answers["ChaosguardOperatorDown"] == [] and answers["ChaosguardNotLeading"] == []
    assert answers["ChaosguardSplitBrain"] == [] and answers["ChaosguardFaultPastDeadline"] == []
    recovery = answers["Recovery time after a kill [B]"]
    assert recovery and recovery[0][1] > 0, answers


# --------------------------------------------------------------------------- the chart, judged by the API server


@pytest.fixture
def prometheus_operator_crds(control_plane: ControlPlane) -> Iterator[None]:
    files = sorted(OPERATOR_CRDS.glob("*.yaml"))
    for path in files:
        control_plane.kubectl("apply", "--server-side", "-f", str(path))
    for name in ("servicemonitors", "prometheusrules"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com")
    yield
    for path in files:
        control_plane.kubectl("delete", "-f", str(path), "--ignore-not-found")


def test_the_monitoring_objects_of_the_chart_are_accepted_by_the_api_server(
    chaosguard_crds: ControlPlane, prometheus_operator_crds: None
) -> None:
    bin_dir = default_bin_dir()  # the pinned helm
    switches = ["metrics.serviceMonitor.enabled", "alerting.prometheusRule.enabled", "grafana.dashboard.enabled"]
    values = [arg for switch in switches for arg in ("--set", f"{switch}=true")]
    helm(bin_dir, "lint", "--strict", str(CHART), *values)
    objects = render(bin_dir, *values)
    defaults = render(bin_dir)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects} - {
        (o["kind"], o["metadata"]["name"]) for o in defaults
    }
    wanted = {("ServiceMonitor", "chaosguard"), ("PrometheusRule", "chaosguard"), ("ConfigMap", "chaosguard-dashboard")}
    assert kinds == wanted, "off by default, on with the switches"

    monitoring = [o for o in objects if (o["kind"], o["metadata"]["name"]) in wanted]
    rule = next(o for o in monitoring if o["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    dashboard = next(o for o in monitoring if o["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["chaosguard.json"]) == json.loads(DASHBOARD.read_text())

    chaosguard_crds.kubectl("create", "namespace", NAMESPACE, check=False)
    result = chaosguard_crds.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(monitoring))
    assert result.stdout.count("(server dry run)") == len(monitoring), result.stdout
    assert "Warning" not in result.stderr, result.stderr

    kustomized = chaosguard_crds.kubectl("kustomize", str(MONITORING)).stdout
    result = chaosguard_crds.kubectl("apply", "--dry-run=server", "-f", "-", input=kustomized)
    assert "configmap/chaosguard-dashboard created (server dry run)" in result.stdout, result.stdout
