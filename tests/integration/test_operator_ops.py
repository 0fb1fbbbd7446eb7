"""Day-2 commands against the real control plane with the operator as a process: game-day reports
of real runs, `status`, `abort NAME`, the big red switch `abort --all`, and the operator's own
metrics, read directly and scraped by a real Prometheus.

The commands run in-process through `chaosguard.cli.ops.main` with the admin kubeconfig (or a
user's, for refusals); everything they claim is checked again through the API."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from chaosguard.api.models import ABORT_ANNOTATION
from chaosguard.cli import ops as cli_ops
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    create_policy,
    custom,
    delete_policy,
    experiment,
    experiment_yaml,
    scoped_policy,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, equals, prometheus_available
from localcluster.wait import wait_for
from tests.integration.test_operator_podkill import kills
from tests.support.htmlcheck import sample_circles, svgs, well_formed
from tests.support.slis import sli_of, trend_of

pytestmark = pytest.mark.controlplane
needs_prometheus = pytest.mark.skipif(
    not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)"
)
GROUP, VERSION = "chaosguard.dev", "v1alpha1"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(control_plane: ControlPlane, capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs `chaosguard ARGS… --kubeconfig <admin, or the user's>` in-process; returns code, stdout, stderr."""

    def run(*argv: str, user: str = "admin") -> Result:
        kubeconfig = control_plane.kubeconfig if user == "admin" else control_plane.kubeconfig_for(user)
        capsys.readouterr()
        code = cli_ops.main([*argv, "--kubeconfig", str(kubeconfig)])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def columns(table: str) -> list[dict[str, str]]:
    """Rows of a `status` table as dicts, cut at the header's column starts."""
    header, *lines = table.splitlines()
    names = [name.strip() for name in header.split("  ") if name.strip()]
    starts: list[int] = []
    for name in names:
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    bounds = [*starts[1:], None]
    return [
        {name: line[start:end].strip() for name, start, end in zip(names, starts, bounds, strict=True)}
        for line in lines
    ] or [dict.fromkeys(names, "")]


def secs(value: float) -> str:
    """How the report prints a duration under a minute."""
    return f"{value:.1f}s"


def long_run(name: str = "long-run") -> str:
    return experiment_yaml(name, duration="2m", interval="2s")


def wait_for_first_kill(k8s: client.ApiClient, namespace: str, name: str) -> None:
    wait_for(
        lambda: (status_of(k8s, namespace, name).get("currentRun") or {}).get("killsTotal", 0) >= 1,
        timeout=30,
        what=f"the first kill of {namespace}/{name}",
        describe=lambda: str(status_of(k8s, namespace, name)),
    )


# --------------------------------------------------------------------------- Prometheus, scraping the operator too


@dataclass(frozen=True)
class OperatorMetrics:
    """The session operator's /metrics endpoint as a scrape target for PrometheusServer."""

    operator: OperatorProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.operator.metrics_port}"


@pytest.fixture(scope="module")
def target() -> Iterator[MetricsTarget]:
    with MetricsTarget() as metrics:
        yield metrics


@pytest.fixture(scope="module")
def prometheus(
    target: MetricsTarget, chaos_operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    targets: list[Any] = [target, OperatorMetrics(chaos_operator)]
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets) as server:
        yield server


def metric(text: str, sample_name: str, **labels: str) -> float:
    """One sample's value from a /metrics text; 0 when the series does not exist yet."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# --------------------------------------------------------------------------- report


def test_report_of_a_completed_pod_kill_run_in_both_formats(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    slow_shop: str,
    cli: Any,
    tmp_path: Path,
) -> None:
    apply_yaml(control_plane, experiment_yaml("gameday", mode="fixed", value=2), slow_shop)
    status = wait_for_phase(k8s, slow_shop, "gameday", "Completed", timeout=90)
    run = status["lastRun"]
    killed = kills(status, "Killed")
    assert len(killed) == 2
    times = [k["recoveredAfterSeconds"] for k in killed]
    assert all(t > 5 for t in times), times  # pods take 8 s to be Ready again

    markdown = cli("report", "gameday", "-n", slow_shop)
    assert markdown.code == 0, markdown.err
    text = markdown.out
    assert text.startswith(f"# Game day: {slow_shop}/gameday, run {run['id']}\n")
    assert "| Outcome | **Completed** — reason `RunCompleted` |" in text
    for k in killed:
        row = next(line for line in text.splitlines() if line.startswith("| 1 |") and k["name"] in line)
        assert f"| Killed | eviction | {secs(k['recoveredAfterSeconds'])} |" in row, row
    assert f"p50 {secs(statistics.median(times))}, max {secs(max(times))}" in text
    assert "```mermaid\ngantt\n" in text and text.count(":milestone, k") == 2
    assert "back at full Ready strength" in text and "## What to look at next" in text

    page_path = tmp_path / "gameday.html"
    html = cli("report", "gameday", "-n", slow_shop, "-o", str(page_path))
    assert html.code == 0 and f"wrote {page_path}: html report of run {run['id']}" in html.err
    page = page_path.read_text()
    visible = well_formed(page)
    assert all(k["name"] in visible for k in killed)
    assert all(secs(t) in visible for t in times)

    by_id = cli("report", "gameday", "-n", slow_shop, "--run", run["id"], "--format", "markdown")
    assert by_id.code == 0 and by_id.out == text

    unknown = cli("report", "gameday", "-n", slow_shop, "--run", "r9-nope")
    assert unknown.code == 1 and "has no run 'r9-nope'" in unknown.err and run["id"] in unknown.err
    missing = cli("report", "no-such-experiment", "-n", slow_shop)
    assert missing.code == 1
    assert f"ChaosExperiment {slow_shop}/no-such-experiment not found" in missing.err
    assert f"chaosguard status -n {slow_shop}" in missing.err


@pytest.mark.prometheus
@needs_prometheus
def test_report_of_an_sli_abort_charts_every_sample_and_quotes_the_reason(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    target: MetricsTarget,
    prometheus: PrometheusServer,
    cli: Any,
) -> None:
    target.set_error_ratio(0.001, app=shop)
    prometheus.wait_for_value(f'demo_error_ratio{{app="{shop}"}}', equals(0.001))
    query = f'demo_error_ratio{{app="{shop}"}}'
    manifest = experiment_yaml("guarded", duration="2m", interval="2s") + (
        "  steadyState:\n"
        f"    prometheus: {{url: {prometheus.url}, timeout: 500ms}}\n"
        "    interval: 1s\n"
        "    conditions:\n"
        "      - name: error-ratio\n"
        f"        query: {query}\n"
        '        operator: "<"\n'
        "        threshold: 0.05\n"
    )
    apply_yaml(control_plane, manifest, shop)
    wait_for_first_kill(k8s, shop, "guarded")
    target.set_error_ratio(0.5, app=shop)
    status = wait_for_phase(k8s, shop, "guarded", "Aborted", timeout=30)
    run = status["lastRun"]
    assert run["reason"] == "SLIBreached"
    samples = sli_of(run, "error-ratio")["samples"]
    points = trend_of(run, "error-ratio")

    text = cli("report", "guarded", "-n", shop).out
    assert f"```text\n{run['message']}\n```" in text  # verbatim
    assert f"`{query}` returned 0.5" in text and "`< 0.05`" in text
    assert f"; {samples} sample(s)." in text

    page = cli("report", "guarded", "-n", shop, "--format", "html").out
    visible = well_formed(page)
    assert run["message"] in visible
    (chart,) = svgs(page)
    circles = sample_circles(chart)
    assert [c.get("data-value") for c in circles] == [point.raw for point in points]  # one per trend point
    assert circles[-1].get("class") == "sample Breached"


# --------------------------------------------------------------------------- status


def test_status_lists_experiments_with_phase_last_and_next_run(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
    cli: Any,
) -> None:
    create_policy(k8s, f"short-{shop}", scoped_policy(shop, maxDuration="1m"))
    isolated_policies.append(f"short-{shop}")
    apply_yaml(control_plane, experiment_yaml("dry", duration="1s", dry_run=True), shop)
    apply_yaml(control_plane, experiment_yaml("weekly") + '  schedule: {cron: "0 3 1 1 *"}\n', shop)
    apply_yaml(control_plane, experiment_yaml("too-long", duration="5m"), shop)
    wait_for_phase(k8s, shop, "dry", "Completed", timeout=30)
    weekly = wait_for_phase(k8s, shop, "weekly", "Scheduled", timeout=30)
    refused = wait_for_phase(k8s, shop, "too-long", "Rejected", timeout=30)
    assert len(refused["message"]) > cli_ops.MESSAGE_WIDTH

    result = cli("status", "-n", shop)
    assert result.code == 0, result.err
    table = columns(result.out)
    assert list(table[0]) == ["NAMESPACE", "NAME", "ACTION", "PHASE", "LAST RUN", "NEXT RUN", "MESSAGE"]
    rows = {row["NAME"]: row for row in table}
    assert sorted(rows) == ["dry", "too-long", "weekly"]
    assert all(row["NAMESPACE"] == shop for row in table)
    dry, scheduled, rejected = rows["dry"], rows["weekly"], rows["too-long"]
    assert (dry["ACTION"], dry["PHASE"], dry["NEXT RUN"]) == ("pod-kill (dry run)", "Completed", "-")
    assert re.fullmatch(r"Completed/RunCompleted (just now|\w+ ago), 0 killed", dry["LAST RUN"]), dry
    next_run = datetime.fromisoformat(weekly["nextRunAt"]).strftime("%Y-%m-%dT%H:%MZ")
    assert scheduled["PHASE"] == "Scheduled" and scheduled["NEXT RUN"].startswith(f"{next_run} (in ")
    assert scheduled["LAST RUN"] == "-" and scheduled["MESSAGE"].startswith("next run at ")
    assert rejected["PHASE"] == "Rejected" and rejected["MESSAGE"].startswith("REFUSED max-duration")
    assert len(rejected["MESSAGE"]) == cli_ops.MESSAGE_WIDTH and rejected["MESSAGE"].endswith("...")

    wide = cli("status", "-n", shop, "--wide")
    assert refused["message"] in wide.out

    everywhere = cli("status", "-A")
    assert everywhere.code == 0
    assert {line.split()[1] for line in everywhere.out.splitlines() if line.startswith(f"{shop} ")} == set(rows)

    empty = cli("status", "-n", f"{shop}-nothing-here")
    assert empty.code == 0 and empty.out == "" and f"No ChaosExperiments in namespace {shop}-nothing-here" in empty.err

    with pytest.raises(SystemExit) as usage:
        cli("status", "-n", shop, "-A")
    assert usage.value.code == 2


# --------------------------------------------------------------------------- abort NAME


def test_abort_by_name_ends_the_run_as_aborted_and_removes_the_annotation(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    cli: Any,
) -> None:
    apply_yaml(control_plane, long_run(), shop)
    wait_for_first_kill(k8s, shop, "long-run")

    refused = cli("abort", "long-run", "-n", shop, "--reason", "not mine to stop", user="mallory")
    assert refused.code == 1 and "refused by the API server (403)" in refused.err, refused.err
    assert status_of(k8s, shop, "long-run")["phase"] == "Running"

    result = cli("abort", "long-run", "-n", shop, "--reason", "game day over")
    assert result.code == 0, result.err
    assert f"abort requested for ChaosExperiment {shop}/long-run" in result.out
    assert "Aborted (AbortRequested): aborted on request: game day over" in result.out

    obj = experiment(k8s, shop, "long-run")
    assert ABORT_ANNOTATION not in (obj["metadata"].get("annotations") or {})
    status = obj["status"]
    assert status["phase"] == "Aborted" and status.get("currentRun") is None
    run = status["lastRun"]
    assert run["reason"] == "AbortRequested" and run["message"] == "aborted on request: game day over"
    finished = datetime.fromisoformat(run["finishedAt"])
    assert all(datetime.fromisoformat(k["at"]) <= finished for k in run["kills"])
    assert wait_for_event(k8s, shop, "long-run", "AbortRequested").message == "aborted on request: game day over"

    again = cli("abort", "long-run", "-n", shop)
    assert again.code == 1 and "has no run in progress (phase Aborted)" in again.err
    gone = cli("abort", "no-such-experiment", "-n", shop)
    assert gone.code == 1 and f"ChaosExperiment {shop}/no-such-experiment not found" in gone.err


# --------------------------------------------------------------------------- abort --all


@pytest.fixture
def emergency_cleanup(k8s: client.ApiClient) -> Iterator[None]:
    """Whatever the test leaves behind, no emergency stop outlives it (straight through the API)."""
    yield
    delete_policy(k8s, cli_ops.EMERGENCY_POLICY)
    for policy in custom(k8s).list_cluster_custom_object(GROUP, VERSION, "chaospolicies")["items"]:
        if cli_ops.EMERGENCY_ANNOTATION in (policy["metadata"].get("annotations") or {}):
            patch = {"metadata": {"annotations": {cli_ops.EMERGENCY_ANNOTATION: None}}, "spec": {"suspend": False}}
            custom(k8s).patch_cluster_custom_object(GROUP, VERSION, "chaospolicies", policy["metadata"]["name"], patch)


def policy_spec(k8s: client.ApiClient, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(k8s).get_cluster_custom_object(GROUP, VERSION, "chaospolicies", name)
    return obj


def test_abort_all_suspends_every_policy_aborts_the_running_and_undo_reverts_exactly_that(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    isolated_policies: list[str],
    emergency_cleanup: None,
    cli: Any,
) -> None:
    active, frozen = f"active-{shop}", f"frozen-{shop}"
    create_policy(k8s, active, scoped_policy(shop, maxPercentage=80))
    create_policy(k8s, frozen, scoped_policy(f"{shop}-elsewhere", suspend=True))
    isolated_policies.extend([active, frozen])
    apply_yaml(control_plane, long_run(), shop)
    wait_for_first_kill(k8s, shop, "long-run")

    result = cli("abort", "--all", "--reason", "incident 4711")
    assert result.code == 0, result.err
    assert "EMERGENCY STOP" in result.out
    assert f"ChaosPolicy/{active}" in result.out.split("suspended:")[1].splitlines()[0]
    assert f"ChaosPolicy/{frozen}" in result.out.split("already suspended")[1].splitlines()[0]
    assert f"created ChaosPolicy/{cli_ops.EMERGENCY_POLICY} with suspend: true" in result.out
    assert f"aborted: {shop}/long-run" in result.out
    assert "To undo: chaosguard abort --all --undo" in result.out

    status = status_of(k8s, shop, "long-run")
    assert status["phase"] == "Aborted" and status["lastRun"]["reason"] == "Suspended", status["message"]
    assert "REFUSED suspended" in status["lastRun"]["message"]
    stopped = policy_spec(k8s, active)
    assert stopped["spec"]["suspend"] is True
    assert "incident 4711" in stopped["metadata"]["annotations"][cli_ops.EMERGENCY_ANNOTATION]
    emergency = policy_spec(k8s, cli_ops.EMERGENCY_POLICY)
    assert emergency["spec"]["suspend"] is True and "namespaceSelector" not in emergency["spec"]  # everywhere
    assert cli_ops.EMERGENCY_ANNOTATION not in (policy_spec(k8s, frozen)["metadata"].get("annotations") or {})

    warned = cli("status", "-n", shop)
    assert "WARNING: chaos is suspended by" in warned.err and cli_ops.EMERGENCY_POLICY in warned.err

    again = cli("abort", "--all")
    assert again.code == 0 and "no experiment was running" in again.out

    undo = cli("abort", "--all", "--undo")
    assert undo.code == 0, undo.err
    assert f"deleted: ChaosPolicy/{cli_ops.EMERGENCY_POLICY}" in undo.out
    assert f"ChaosPolicy/{active}" in undo.out.split("suspend: false again:")[1].splitlines()[0]
    assert f"ChaosPolicy/{frozen}" in undo.out.split("still suspended")[1].splitlines()[0]
    with pytest.raises(ApiException) as gone:
        policy_spec(k8s, cli_ops.EMERGENCY_POLICY)
    assert gone.value.status == 404
    resumed = policy_spec(k8s, active)
    assert resumed["spec"]["suspend"] is False
    assert cli_ops.EMERGENCY_ANNOTATION not in (resumed["metadata"].get("annotations") or {})
    assert policy_spec(k8s, frozen)["spec"]["suspend"] is True

    # chaos runs again
    apply_yaml(control_plane, experiment_yaml("after-the-incident"), shop)
    assert kills(wait_for_phase(k8s, shop, "after-the-incident", "Completed", timeout=30), "Killed")


def test_abort_all_by_a_user_without_rights_is_refused_and_changes_nothing(
    k8s: client.ApiClient, control_plane: ControlPlane, emergency_cleanup: None, cli: Any
) -> None:
    refused = cli("abort", "--all", "--reason", "prank", user="mallory")
    assert refused.code == 1 and "listing ChaosPolicies: refused by the API server (403)" in refused.err
    with pytest.raises(ApiException) as absent:
        policy_spec(k8s, cli_ops.EMERGENCY_POLICY)
    assert absent.value.status == 404


# --------------------------------------------------------------------------- the operator's own metrics


@pytest.mark.prometheus
@needs_prometheus
def test_operator_metrics_count_runs_and_kills_and_prometheus_scrapes_them(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    shop: str,
    prometheus: PrometheusServer,
) -> None:
    before = chaos_operator.metrics()
    runs_before = metric(before, "chaosguard_runs_total", result="Completed")
    kills_before = metric(before, "chaosguard_pod_kills_total", result="Killed")

    apply_yaml(control_plane, experiment_yaml("counted", mode="fixed", value=2), shop)
    status = wait_for_phase(k8s, shop, "counted", "Completed", timeout=60)
    killed = len(kills(status, "Killed"))
    assert killed == 2

    after = chaos_operator.metrics()
    runs_after = metric(after, "chaosguard_runs_total", result="Completed")
    kills_after = metric(after, "chaosguard_pod_kills_total", result="Killed")
    assert runs_after >= runs_before + 1, (runs_before, runs_after)
    assert kills_after >= kills_before + killed, (kills_before, kills_after)
    assert "# TYPE chaosguard_active_runs gauge" in after

    instance = OperatorMetrics(chaos_operator).address
    up = prometheus.wait_for_value(f'up{{instance="{instance}"}}', equals(1.0))
    assert up == 1.0
    scraped = prometheus.wait_for_value(
        f'chaosguard_runs_total{{result="Completed",instance="{instance}"}}', lambda v: v >= runs_after
    )
    assert scraped >= runs_before + 1
    prometheus.wait_for_value(
        f'chaosguard_pod_kills_total{{result="Killed",instance="{instance}"}}', lambda v: v >= kills_before + killed
    )
