"""The guard thread's BreachFlag as the driver's gates see it: raised for the current run, it halts
every further kill and injection before kopf's loop has applied the verdict; raised late for a run
that has ended, it never halts the next one."""

from __future__ import annotations

import logging
from typing import Any

from chaosguard.api.models import RunStatus
from chaosguard.runtime.engine import ExperimentDriver

BODY: dict[str, Any] = {
    "apiVersion": "chaosguard.dev/v1alpha1",
    "kind": "ChaosExperiment",
    "metadata": {"name": "checkout-pod-kill", "namespace": "shop", "uid": "u-1", "generation": 1},
    "spec": {},
    "status": {"phase": "Running", "currentRun": {"id": "r1", "phase": "Running", "trigger": "apply"}},
}


def driver() -> ExperimentDriver:
    return ExperimentDriver(None, BODY, logging.getLogger("t"))  # type: ignore[arg-type]


def test_a_breach_decided_on_the_guard_thread_halts_the_run_before_its_verdict_arrives() -> None:
    experiment = driver()
    flag = experiment.breach_flag("r1")
    assert not experiment.halted
    flag.raise_for_breach()  # what the guard's thread does when it judges the breach
    assert experiment.halted and experiment.breach_decided
    assert not experiment.abort_requested.is_set()  # kopf's loop has not applied the verdict yet
    assert experiment.breach_flag("r1") is flag  # a guard replaced mid-run keeps the run's flag


def test_a_late_breach_of_an_ended_run_does_not_halt_the_next_run() -> None:
    experiment = driver()
    old = experiment.breach_flag("r1")
    experiment.status.current_run = RunStatus.model_validate({"id": "r2", "phase": "Running", "trigger": "apply"})
    fresh = experiment.breach_flag("r2")
    old.raise_for_breach()  # a tick of r1 judged after r1 ended
    assert fresh is not old
    assert not experiment.halted
    fresh.raise_for_breach()
    assert experiment.halted
