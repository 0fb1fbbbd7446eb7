"""Pause and resume (spec.paused) through the paths a user takes: `kubectl apply` of examples/pause.yaml
and `chaosguard pause|resume`, on a real API server with kwok-simulated pods and the operator as a
process. A pause takes the run's faults out and stops its rounds within the guard interval + 1 s, the
deadline never moves, a resume continues the run, a paused game day records each skipped slot, the
guard still aborts a paused run, and a pause holds across an operator killed and restarted."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kubernetes import client

from chaosguard.cli import main as cli_main
from localcluster.controlplane import ControlPlane
from localcluster.operator import (
    OperatorProcess,
    apply_yaml,
    events_for,
    experiment_yaml,
    status_of,
    wait_for_event,
    wait_for_phase,
)
from localcluster.prometheus import MetricsTarget, PrometheusServer, prometheus_available
from localcluster.wait import wait_for
from tests.integration.test_operator_latency import ephemeral, latency_yaml
from tests.integration.test_operator_slo import guarded, healthy, prometheus, target  # noqa: F401 (fixtures)

pytestmark = pytest.mark.controlplane
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = (EXAMPLES / "pause.yaml").read_text()
NAME = "checkout-pausable"
DEFAULT_GUARD_INTERVAL = 5.0
BERLIN = ZoneInfo("Europe/Berlin")


def cli(control_plane: ControlPlane, *argv: str) -> int:
    return cli_main.main([*argv, "--kubeconfig", str(control_plane.kubeconfig)])


def run_of(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status.get("currentRun") or status.get("lastRun") or {})


def kills_total(k8s: client.ApiClient, namespace: str, name: str) -> int:
    return int(run_of(status_of(k8s, namespace, name)).get("killsTotal", 0))


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def unchanged_for(seconds: float, observe: Callable[[], Any], what: str) -> Any:
    """Watches `observe` for `seconds` (an absence can only be shown over time) and fails at the first change."""
    first = observe()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        now = observe()
        assert now == first, f"{what} changed while it had to hold: {first!r} -> {now!r}"
        time.sleep(0.2)
    return first


def paused_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Paused"), {})


def test_pause_from_the_cli_stops_the_kills_keeps_the_deadline_and_resume_continues(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, EXAMPLE, shop)
    wait_for(lambda: kills_total(k8s, shop, NAME) >= 1, timeout=30, what="a first kill")
    deadline = run_of(status_of(k8s, shop, NAME))["deadline"]

    asked = datetime.now().astimezone()
    assert cli(control_plane, "pause", NAME, "-n", shop) == 0
    status = status_of(k8s, shop, NAME)
    run = run_of(status)
    [pause] = run["pauses"]
    assert status["phase"] == "Running" and pause.get("resumedAt") is None
    assert moment(pause["pausedAt"]) - asked <= timedelta(seconds=DEFAULT_GUARD_INTERVAL + 1), pause
    assert paused_condition(status)["status"] == "True"
    row = control_plane.kubectl("get", "chaosexperiment", NAME, "-n", shop, "--no-headers").stdout.split()
    assert row[:5] == [NAME, "Running", "pod-kill", str(run["killsTotal"]), "true"], row
    assert all(moment(k["at"]) <= moment(pause["pausedAt"]) for k in run["kills"]), run["kills"]
    # Rounds every 2 s would have gone on: three slots pass without a kill.
    held = unchanged_for(6.0, lambda: kills_total(k8s, shop, NAME), "the kill count")
    assert run_of(status_of(k8s, shop, NAME))["deadline"] == deadline
    assert "paused by" in wait_for_event(k8s, shop, NAME, "Paused").message

    assert cli(control_plane, "resume", NAME, "-n", shop) == 0
    wait_for(lambda: kills_total(k8s, shop, NAME) > held, timeout=10, what="kills again after the resume")
    assert "resumed by" in wait_for_event(k8s, shop, NAME, "Resumed").message
    status = wait_for_phase(k8s, shop, NAME, "Completed", timeout=60)
    run = status["lastRun"]
    assert run["deadline"] == deadline, "a pause never moves the deadline"
    assert moment(run["finishedAt"]) - moment(deadline) < timedelta(seconds=5), run
    [pause] = run["pauses"]
    assert not any(moment(pause["pausedAt"]) < moment(k["at"]) < moment(pause["resumedAt"]) for k in run["kills"])
    assert any(moment(k["at"]) > moment(pause["resumedAt"]) for k in run["kills"])
    assert status["observedGeneration"] == 3, "pause and resume are generations of their own, not edits"


def test_pausing_a_latency_run_takes_its_faults_out_in_time_and_resume_by_kubectl_apply_puts_them_back(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    text = latency_yaml("slow-db", duration="90s")
    apply_yaml(control_plane, text, shop)
    injected = wait_for(
        lambda: (
            len([f for f in run_of(status_of(k8s, shop, "slow-db")).get("faults", []) if f["state"] == "Active"]) == 2
        ),
        timeout=30,
        what="two active latency faults",
    )
    assert injected
    deadline = run_of(status_of(k8s, shop, "slow-db"))["deadline"]

    # The pause is timed from the API call (kubectl's own start-up is not the operator's latency); the
    # resume below goes through `kubectl apply` of the YAML.
    started = time.monotonic()
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "slow-db", {"spec": {"paused": True}}
    )
    removed = wait_for(
        lambda: (
            (faults := run_of(status_of(k8s, shop, "slow-db"))["faults"])
            and all(f["state"] == "Removed" for f in faults)
            and faults
        ),
        timeout=DEFAULT_GUARD_INTERVAL + 1,
        interval=0.05,
        what="every fault taken out by the pause",
    )
    took = time.monotonic() - started
    print(f"pause -> every latency fault removed: {took:.2f}s")
    assert took <= DEFAULT_GUARD_INTERVAL + 1
    assert all(f["removedBy"].startswith("pause (clear container") for f in removed), removed
    for fault in removed:
        names = [c["name"] for c in ephemeral(k8s, shop)[fault["uid"]]]
        assert fault["container"] in names and any(n.startswith("chaosguard-clear") for n in names), names

    apply_yaml(control_plane, text + "  paused: false\n", shop)
    again = wait_for(
        lambda: [f for f in run_of(status_of(k8s, shop, "slow-db"))["faults"] if f["state"] == "Active"],
        timeout=15,
        what="the latency back in after the resume",
    )
    run = run_of(status_of(k8s, shop, "slow-db"))
    assert run["deadline"] == deadline
    assert {f["uid"] for f in again} <= {f["uid"] for f in removed}
    assert all(f["container"].endswith("-p1") for f in again), again  # a new carrier: names are never reused
    assert all(moment(f["deadline"]) <= moment(deadline) for f in again)
    for fault in again:  # really in the pod: a carrier of the first name would be merged into the first one
        assert fault["container"] in [c["name"] for c in ephemeral(k8s, shop)[fault["uid"]]]

    # The abort takes the new injectors out with the run's next clean-up (a second clear1 would never run).
    client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
        "chaosguard.dev", "v1alpha1", shop, "chaosexperiments", "slow-db",
        {"metadata": {"annotations": {"chaosguard.dev/abort": "drill over"}}},
    )  # fmt: skip
    status = wait_for_phase(k8s, shop, "slow-db", "Aborted", timeout=30)
    run_id = status["lastRun"]["id"].lower()
    for fault in (f for f in status["lastRun"]["faults"] if f["container"].endswith("-p1")):
        assert fault["removedBy"].endswith(f"(clear container chaosguard-clear2-{run_id})"), fault
        assert f"chaosguard-clear2-{run_id}" in [c["name"] for c in ephemeral(k8s, shop)[fault["uid"]]]
    control_plane.kubectl("delete", "chaosexperiment", "slow-db", "-n", shop)


def test_a_run_paused_past_its_deadline_ends_at_its_deadline(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, experiment_yaml("short", duration="8s", interval="2s"), shop)
    wait_for(lambda: kills_total(k8s, shop, "short") >= 1, timeout=30, what="a first kill")
    control_plane.kubectl(
        "patch", "chaosexperiment", "short", "-n", shop, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    status = wait_for_phase(k8s, shop, "short", "Completed", timeout=30)
    run = status["lastRun"]
    assert run["reason"] == "RunCompleted"
    assert timedelta(0) <= moment(run["finishedAt"]) - moment(run["deadline"]) < timedelta(seconds=3), run
    [pause] = run["pauses"]
    assert all(moment(k["at"]) <= moment(pause["pausedAt"]) for k in run["kills"])
    assert pause.get("resumedAt") is None and "the run ended while paused (RunCompleted)" in pause["message"]


def test_a_paused_game_day_skips_its_slot_and_records_the_skip_in_history(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    shop: str,
    operator_at: Callable[[datetime], OperatorProcess],
) -> None:
    daily = experiment_yaml("gameday", duration="2s") + (
        '  schedule: {cron: "0 14 * * *", timeZone: Europe/Berlin, historyLimit: 3}\n  paused: true\n'
    )
    operator_at(datetime(2026, 11, 24, 13, 59, 50, tzinfo=BERLIN))
    apply_yaml(control_plane, daily, shop)
    skipped = wait_for_event(k8s, shop, "gameday", "RunSkipped", timeout=40)
    assert "the schedule is paused" in skipped.message
    status = status_of(k8s, shop, "gameday")
    [entry] = status["history"]
    assert entry["phase"] == "Skipped" and entry["reason"] == "Paused" and entry["trigger"] == "schedule"
    assert moment(entry["finishedAt"]) == datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN)
    assert status["runsTotal"] == 0 and status["phase"] == "Scheduled"
    assert moment(status["nextRunAt"]) == datetime(2026, 11, 25, 14, 0, tzinfo=BERLIN)
    assert paused_condition(status)["status"] == "True"
    assert "RunStarted" not in [e.reason for e in events_for(k8s, shop, "gameday")]


@pytest.mark.prometheus
@pytest.mark.skipif(not prometheus_available(), reason="Debian's prometheus is not installed (make system-deps)")
def test_a_breach_while_paused_still_aborts_the_run(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    healthy: str,  # noqa: F811
    target: MetricsTarget,  # noqa: F811
    prometheus: PrometheusServer,  # noqa: F811
) -> None:
    apply_yaml(control_plane, guarded("paused-breach", healthy, prometheus, duration="2m"), healthy)
    wait_for(lambda: kills_total(k8s, healthy, "paused-breach") >= 1, timeout=30, what="a first kill")
    assert cli(control_plane, "pause", "paused-breach", "-n", healthy) == 0
    target.set_error_ratio(0.5, app=healthy)
    status = wait_for_phase(k8s, healthy, "paused-breach", "Aborted", timeout=20)
    run = status["lastRun"]
    assert run["reason"] == "SLIBreached" and run["abort"]["condition"] == "error-ratio"
    assert run["pauses"] and all(moment(k["at"]) <= moment(run["pauses"][0]["pausedAt"]) for k in run["kills"])


def test_an_operator_killed_while_paused_acts_on_nothing_after_its_restart_until_resumed(
    k8s: client.ApiClient, control_plane: ControlPlane, chaos_operator: OperatorProcess, shop: str
) -> None:
    apply_yaml(control_plane, EXAMPLE, shop)
    wait_for(lambda: kills_total(k8s, shop, NAME) >= 1, timeout=30, what="a first kill")
    assert cli(control_plane, "pause", NAME, "-n", shop) == 0
    deadline = run_of(status_of(k8s, shop, NAME))["deadline"]
    chaos_operator.kill()
    chaos_operator.start()
    held = unchanged_for(6.0, lambda: kills_total(k8s, shop, NAME), "the kill count after the restart")
    status = status_of(k8s, shop, NAME)
    assert status["phase"] == "Running" and paused_condition(status)["status"] == "True"
    assert run_of(status)["deadline"] == deadline and len(run_of(status)["pauses"]) == 1

    assert cli(control_plane, "resume", NAME, "-n", shop) == 0
    wait_for(lambda: kills_total(k8s, shop, NAME) > held, timeout=10, what="kills again after the resume")
    status = wait_for_phase(k8s, shop, NAME, "Completed", timeout=60)
    assert status["lastRun"]["deadline"] == deadline
