"""Pause and resume of a stress through the paths a user takes: `kubectl apply` of examples/stress-cpu.yaml
and `chaosguard pause|resume|abort`, on a real API server with kwok-simulated pods and the operator as a
process (no stressor runs here; each one's stop is the clean-up container that creates its stop file, as
tests/e2e/test_stress.py shows on a real kubelet).

A pause adds the clean-up container that stops each stressor within the guard interval + 1 s and keeps the
deadline; a resume puts a new stressor in (a new container name, watching a stop file of its own, so the
pause's clean-up cannot stop it) for the rest of the run; the run's end stops that one with a clean-up of
its own (the run's next clean-up name, not a second `clear1` that the API server would merge into the
first); an abort while paused leaves nothing running."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from chaosguard.decisions import stress
from localcluster.controlplane import ControlPlane
from localcluster.operator import OperatorProcess, apply_yaml, status_of, wait_for_phase
from tests.integration.test_operator_latency import ephemeral
from tests.integration.test_operator_pause import DEFAULT_GUARD_INTERVAL, cli, moment, run_of
from tests.integration.test_operator_stress import faults_in, stress_shop  # noqa: F401 (fixture)

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "stress-cpu.yaml").read_text()
NAME = "checkout-cpu-stress"


def example(duration: str) -> str:
    assert "duration: 2m" in EXAMPLE
    return EXAMPLE.replace("duration: 2m", f"duration: {duration}")


def stressors_left_running(containers: list[dict[str, Any]]) -> list[str]:
    """The stressors of a pod that no clean-up container asked to stop (through their own stop file; the
    API server does not keep a pod's ephemeral containers in the order they were added)."""
    asked = [c["command"] for c in containers if c["name"].startswith("chaosguard-clear")]
    return [
        c["name"]
        for c in containers
        if c["name"].startswith("chaosguard-stress-") and stress.clear_command(stress.stop_file(c["name"])) not in asked
    ]


def pause_in_time(k8s: client.ApiClient, control_plane: ControlPlane, shop: str) -> list[dict[str, Any]]:
    """`chaosguard pause`, which waits until every fault is out: each stressor got its clean-up in time."""
    asked = time.monotonic()
    assert cli(control_plane, "pause", NAME, "-n", shop) == 0
    took = time.monotonic() - asked
    print(f"chaosguard pause -> every stressor asked to stop: {took:.2f}s")
    assert took <= DEFAULT_GUARD_INTERVAL + 1
    run = run_of(status_of(k8s, shop, NAME))
    assert run["faults"] and all(f["state"] == "Removed" for f in run["faults"]), run["faults"]
    assert all(f["removedBy"].startswith("pause (clear container") for f in run["faults"]), run["faults"]
    return list(run["faults"])


def test_a_paused_stress_is_stopped_and_a_resume_puts_a_stressor_of_its_own_in_until_the_deadline(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    stress_shop: str,  # noqa: F811
) -> None:
    apply_yaml(control_plane, example("40s"), stress_shop)
    first = faults_in(k8s, stress_shop, NAME, 2)
    run = run_of(status_of(k8s, stress_shop, NAME))
    run_id, deadline = run["id"], run["deadline"]

    removed = pause_in_time(k8s, control_plane, stress_shop)
    for fault in removed:
        containers = ephemeral(k8s, stress_shop)[fault["uid"]]
        by_name = {c["name"]: c for c in containers}
        assert set(by_name) == {fault["container"], f"chaosguard-clear1-{run_id.lower()}"}
        cleaner = by_name[f"chaosguard-clear1-{run_id.lower()}"]
        assert cleaner["command"] == stress.clear_command(stress.stop_file(fault["container"]))
        assert stressors_left_running(containers) == []
    assert run_of(status_of(k8s, stress_shop, NAME))["deadline"] == deadline

    assert cli(control_plane, "resume", NAME, "-n", stress_shop) == 0
    again = faults_in(k8s, stress_shop, NAME, 2)
    assert {f["uid"] for f in again} == {f["uid"] for f in first}
    for fault in again:
        assert fault["container"] == f"chaosguard-stress-{run_id.lower()}-p1", fault
        assert fault["deadline"] == deadline
        by_name = {c["name"]: c for c in ephemeral(k8s, stress_shop)[fault["uid"]]}
        resumed, paused = by_name[fault["container"]], by_name[f"chaosguard-stress-{run_id.lower()}"]  # really in
        assert resumed["command"][5] == stress.stop_file(fault["container"]) != paused["command"][5]
        assert resumed["command"][4] == paused["command"][4], "the same absolute deadline"
        assert stressors_left_running(list(by_name.values())) == [fault["container"]]

    status = wait_for_phase(k8s, stress_shop, NAME, "Completed", timeout=60)
    run = status["lastRun"]
    assert run["deadline"] == deadline and moment(run["finishedAt"]) - moment(deadline) < timedelta(seconds=5)
    for fault in (f for f in run["faults"] if f["container"].endswith("-p1")):
        assert fault["state"] == "Removed" and "clear container" in fault["removedBy"], fault
        containers = ephemeral(k8s, stress_shop)[fault["uid"]]
        assert f"(clear container chaosguard-clear2-{run_id.lower()})" in fault["removedBy"], fault
        assert len(containers) == 4 and stressors_left_running(containers) == [], containers


def test_an_abort_while_paused_leaves_no_stressor_and_adds_none(
    k8s: client.ApiClient,
    control_plane: ControlPlane,
    chaos_operator: OperatorProcess,
    stress_shop: str,  # noqa: F811
) -> None:
    apply_yaml(control_plane, EXAMPLE, stress_shop)
    faults_in(k8s, stress_shop, NAME, 2)
    removed = pause_in_time(k8s, control_plane, stress_shop)
    before = ephemeral(k8s, stress_shop)
    assert cli(control_plane, "abort", NAME, "-n", stress_shop, "--reason", "game day over") == 0
    status = wait_for_phase(k8s, stress_shop, NAME, "Aborted", timeout=30)
    assert [f["container"] for f in status["lastRun"]["faults"]] == [f["container"] for f in removed]
    assert all(f["state"] == "Removed" for f in status["lastRun"]["faults"])
    after = ephemeral(k8s, stress_shop)
    assert after == before, "nothing new goes in after an abort while paused"
    assert all(stressors_left_running(containers) == [] for containers in after.values())
