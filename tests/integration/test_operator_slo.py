"""The SLI guard against a real Prometheus (1 s scrapes of a metrics endpoint the test flips),
on the local control plane with the operator as a process: before, during and after every run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client, watch

from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    GROUP,
    VERSION,
    OperatorProcess,
    apply_yaml,
    experiment_yaml,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals, prometheus_available
from localcluster.wait import wait_for
from tests.integration.test_operator_podkill import kills
from tests.support.slis import sli_of, trend_of

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.prometheus,
    pytest.mark.skipif(not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)"),
]


@pytest.fixture(scope="module")
def target() -> Iterator[MetricsTarget]:
    with MetricsTarget() as metrics:
        yield metrics


@pytest.fixture(scope="module")
def prometheus(target: MetricsTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [target]) as server:
        yield server


@pytest.fixture
def healthy(shop: str, target: MetricsTarget, prometheus: PrometheusServer) -> str:
    """The shop's error ratio, healthy and visible in Prometheus; the series is the test's own."""
    target.set_error_ratio(0.001, app=shop)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{shop}"}}', equals(0.001))
    return shop


def guarded(
    name: str,
    shop: str,
    prometheus: PrometheusServer,
    *,
    duration: str,
    interval: str | None = "2s",
    for_: str = "0",
    on_unavailable: str = "abort",
    recovery: str = "20s",
) -> str:
    return experiment_yaml(name, duration=duration, interval=interval) + (
        "  steadyState:\n"
        f"    prometheus: {{url: {prometheus.url}, timeout: 500ms}}\n"
        "    interval: 1s\n"
        f"    onUnavailable: {on_unavailable}\n"
        f"    recovery: {{timeout: {recovery}}}\n"
        "    conditions:\n"
        "      - name: error-ratio\n"
        f'        query: demo_error_ratio{{app="{shop}"}}\n'
        '        operator: "<"\n'
        "        threshold: 0.05\n"
        f"        for: {for_}\n"
    )


def run_of(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status.get("lastRun") or status.get("currentRun") or {})


def kills_so_far(k8s: client.ApiClient, shop: str, name: str) -> int:
    return int((status_of(k8s, shop, name).get("currentRun") or {}).get("killsTotal", 0))


def test_a_healthy_run_completes_with_its_sli_evidence(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    prometheus: PrometheusServer,
) -> None:
    apply_yaml(control_plane, guarded("healthy", healthy, prometheus, duration="4s"), healthy)
    status = wait_for_phase(k8s, healthy, "healthy", "Completed", timeout=60)
    run = run_of(status)
    summary = sli_of(run, "error-ratio")
    assert summary["samples"] >= 2 and summary["breaching"] == 0 and summary["status"] == "Holding", summary
    assert summary["value"] == "0.001" and (summary["operator"], summary["threshold"]) == ("<", 0.05), summary
    points = trend_of(run, "error-ratio")
    assert len(points) >= 2 and all(point.status == "Holding" and point.raw == "0.001" for point in points), points
    assert run["steadyStateAfter"].startswith("held again")
    assert kills(status, "Killed")
    # one copy of the trend in the object: lastRun has it, its history entry keeps only the summary
    [past] = status["history"]
    assert past["id"] == status["lastRun"]["id"] and "trend" not in sli_of(past, "error-ratio")
    assert sli_of(past, "error-ratio")["samples"] == summary["samples"]


def test_a_breach_mid_run_aborts_and_no_further_pod_is_killed(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    apply_yaml(control_plane, guarded("breach", healthy, prometheus, duration="2m"), healthy)
    wait_for(lambda: kills_so_far(k8s, healthy, "breach") >= 1, timeout=30, what="a first kill")
    target.set_error_ratio(0.5, app=healthy)
    status = wait_for_phase(k8s, healthy, "breach", "Aborted", timeout=20)
    run = run_of(status)
    abort = run["abort"]
    assert abort["condition"] == "error-ratio" and abort["value"] == "0.5" and abort["threshold"] == 0.05
    assert abort["query"] == f'demo_error_ratio{{app="{healthy}"}}' and abort["operator"] == "<"
    assert run["reason"] == "SLIBreached" and "error-ratio breached" in status["message"]
    aborted_at = datetime.fromisoformat(run["finishedAt"])
    assert all(datetime.fromisoformat(k["at"]) <= aborted_at for k in run["kills"])
    event = wait_for_event(k8s, healthy, "breach", "SLIBreached")
    assert event.type == "Warning" and "0.5" in event.message
    killed = run["killsTotal"]
    # Kills every 2 s would have continued; a fresh read after another guard interval shows none.
    wait_for(
        lambda: 'chaosguard_aborts_total{reason="SLIBreached"}' in chaos_operator.metrics(),
        timeout=10,
        what="the abort metric",
    )
    assert run_of(status_of(k8s, healthy, "breach"))["killsTotal"] == killed


def test_a_breach_before_the_run_prevents_it(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    target.set_error_ratio(0.3, app=healthy)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{healthy}"}}', equals(0.3))
    apply_yaml(control_plane, guarded("unhealthy-start", healthy, prometheus, duration="10s"), healthy)
    status = wait_for_phase(k8s, healthy, "unhealthy-start", "Aborted", timeout=30)
    assert run_of(status)["reason"] == "SteadyStateNotHeld"
    assert "does not hold before the run" in status["message"] and "0.3" in status["message"]
    assert kills(status) == []


def test_a_breach_shorter_than_for_does_not_abort(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    apply_yaml(control_plane, guarded("blip", healthy, prometheus, duration="10s", for_="6s"), healthy)
    wait_for_phase(k8s, healthy, "blip", "Running", timeout=30)
    target.set_error_ratio(0.5, app=healthy)
    wait_for(
        lambda: sli_of(run_of(status_of(k8s, healthy, "blip")), "error-ratio").get("breaching", 0) > 0,
        timeout=15,
        what="the guard to see the blip as a pending breach",
    )
    target.set_error_ratio(0.001, app=healthy)
    status = wait_for_phase(k8s, healthy, "blip", {"Completed", "Aborted", "Failed"}, timeout=60)
    assert status["phase"] == "Completed", status["message"]


def test_prometheus_down_mid_run_aborts_by_default(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    prometheus: PrometheusServer,
) -> None:
    apply_yaml(control_plane, guarded("blind", healthy, prometheus, duration="2m"), healthy)
    wait_for_phase(k8s, healthy, "blind", "Running", timeout=30)
    prometheus.stop()
    try:
        status = wait_for_phase(k8s, healthy, "blind", "Aborted", timeout=30)
    finally:
        prometheus.start()
    assert run_of(status)["reason"] == "SLIUnavailable"
    assert "Unreachable" in status["message"] or "unreachable" in status["message"].lower()


def test_prometheus_down_with_continue_does_not_abort(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    prometheus: PrometheusServer,
) -> None:
    apply_yaml(
        control_plane, guarded("carry-on", healthy, prometheus, duration="6s", on_unavailable="continue"), healthy
    )
    wait_for_phase(k8s, healthy, "carry-on", "Running", timeout=30)
    prometheus.stop()
    try:
        status = wait_for_phase(k8s, healthy, "carry-on", {"Completed", "Aborted", "Failed"}, timeout=60)
    finally:
        prometheus.start()
    assert status["phase"] == "Completed", status["message"]
    points = trend_of(run_of(status), "error-ratio")
    assert any(point.status == "Unavailable" for point in points), points
    assert sli_of(run_of(status), "error-ratio")["unavailable"] >= 1
    assert "could not be checked" in run_of(status)["steadyStateAfter"]


def test_a_system_that_stays_broken_after_the_run_fails(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    manifest = guarded("no-recovery", healthy, prometheus, duration="5s", for_="1m", recovery="4s")
    apply_yaml(control_plane, manifest, healthy)
    wait_for_phase(k8s, healthy, "no-recovery", "Running", timeout=30)
    target.set_error_ratio(0.5, app=healthy)
    status = wait_for_phase(k8s, healthy, "no-recovery", {"Completed", "Aborted", "Failed"}, timeout=60)
    assert status["phase"] == "Failed", status["message"]
    assert "did not come back" in status["message"] and "error-ratio" in status["message"]
    assert run_of(status)["reason"] == "DidNotRecover"


def test_an_abort_writes_its_verdict_alone_first_and_history_follows_in_a_second_write(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
) -> None:
    """Every write of the object, in the API server's order (a watch from before the breach): the first
    that says Aborted has the run in lastRun and nothing else of the end; history and the Finished
    condition come after it, so at scale each abort's verdict costs one small write before any bookkeeping."""
    apply_yaml(control_plane, guarded("verdict-first", healthy, prometheus, duration="2m"), healthy)
    wait_for(lambda: kills_so_far(k8s, healthy, "verdict-first") >= 1, timeout=30, what="a first kill")
    custom = client.CustomObjectsApi(k8s)
    before = custom.get_namespaced_custom_object(GROUP, VERSION, healthy, "chaosexperiments", "verdict-first")
    run_id = before["status"]["currentRun"]["id"]
    target.set_error_ratio(0.5, app=healthy)

    writes: list[dict[str, Any]] = []
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        healthy,
        "chaosexperiments",
        field_selector="metadata.name=verdict-first",
        resource_version=before["metadata"]["resourceVersion"],
        timeout_seconds=30,
    ):
        status = event["object"].get("status") or {}
        writes.append(status)
        if any(past.get("id") == run_id for past in status.get("history") or []):
            stream.stop()
    phases = [status.get("phase") for status in writes]
    assert "Aborted" in phases, phases
    verdict = writes[phases.index("Aborted")]
    assert "currentRun" not in verdict and verdict["lastRun"]["id"] == run_id, verdict
    assert verdict["lastRun"]["phase"] == "Aborted" and verdict["lastRun"]["abort"]["condition"] == "error-ratio"
    assert all(past.get("id") != run_id for past in verdict.get("history") or []), "history came with the verdict"
    finished = [c for c in verdict.get("conditions") or [] if c["type"] == "Finished" and c["status"] == "True"]
    assert not finished, "the Finished condition came with the verdict"
    after = writes[-1]
    assert any(past.get("id") == run_id for past in after["history"]), after
    assert any(c["type"] == "Finished" and c["status"] == "True" for c in after["conditions"]), after["conditions"]
    assert after["phase"] == "Aborted" and after["lastRun"]["abort"] == verdict["lastRun"]["abort"]
