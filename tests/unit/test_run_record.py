"""The sealed run record: what the seal covers, and what a forger can and cannot change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chaosguard.api.models import (
    FaultRecord,
    FaultState,
    KillRecord,
    KillResult,
    RunStatus,
    SliSummary,
    SliTrend,
    TargetRecord,
)
from chaosguard.decisions.run_record import run_seal_problem, seal_run

KEY = b"k" * 32
UID = "exp-uid-1"
START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def sealed_run() -> RunStatus:
    run = RunStatus(
        id="r1-20261206T100000Z",
        started_at=START,
        deadline=START + timedelta(minutes=5),
        next_round_at=START,
        spec_hash="sha256:" + "a" * 64,
        target_namespaces=["shop"],
        targets=[TargetRecord(namespace="shop", name="checkout-1", uid="pod-1")],
        faults=[
            FaultRecord(
                namespace="shop",
                name="checkout-1",
                uid="pod-1",
                container="chaosguard-latency-r1-20261206t100000z",
                state=FaultState.ACTIVE,
            )
        ],
        kills=[KillRecord(namespace="shop", name="checkout-2", uid="pod-2", at=START, result=KillResult.KILLED)],
    )
    run.seal = seal_run(KEY, UID, run)
    return run


def test_the_operators_own_record_verifies_also_after_a_round_trip_through_the_api() -> None:
    run = sealed_run()
    assert run_seal_problem(KEY, UID, run) is None
    assert run_seal_problem(KEY, UID, RunStatus.model_validate(run.to_wire())) is None


def test_what_only_describes_may_change_without_breaking_the_seal() -> None:
    run = sealed_run()
    run.faults[0].state, run.faults[0].message = FaultState.REMOVED, "removed by the abort"
    run.phase, run.message, run.rounds_done, run.next_round_at = run.phase, "ended", 3, None
    trend = SliTrend(start=START, step=2.0, statuses="HHB", values="0.01 0.01 0.5")
    run.slis = [SliSummary(name="errors", status="Breached", value="0.5", samples=6, breaching=1, trend=trend)]
    assert run_seal_problem(KEY, UID, run) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda run: setattr(run, "id", "r9-forged"),
        lambda run: setattr(run, "deadline", START + timedelta(hours=1)),
        lambda run: setattr(run, "started_at", START + timedelta(minutes=1)),
        lambda run: setattr(run, "spec_hash", "sha256:" + "b" * 64),
        lambda run: run.target_namespaces.append("kube-system"),
        lambda run: setattr(run.targets[0], "namespace", "kube-system"),
        lambda run: setattr(run.faults[0], "namespace", "kube-system"),
        lambda run: setattr(run.faults[0], "uid", "someone-elses-pod"),
        lambda run: setattr(run.faults[0], "container", "chaosguard-partition-r1"),
        lambda run: run.faults.append(run.faults[0].model_copy(update={"name": "db-0", "uid": "db"})),
        lambda run: run.kills.clear(),  # "no kill happened yet": the next round would kill again
    ],
)
def test_any_change_to_what_decides_an_action_breaks_the_seal(forge: object) -> None:
    run = sealed_run()
    forge(run)  # type: ignore[operator]
    problem = run_seal_problem(KEY, UID, run)
    assert problem is not None and "does not verify" in problem


def test_a_seal_is_bound_to_its_experiment_and_its_key() -> None:
    run = sealed_run()
    problem = run_seal_problem(KEY, "another-experiment", run)
    assert problem is not None and "does not verify" in problem
    problem = run_seal_problem(b"x" * 32, UID, run)
    assert problem is not None and "another signing key" in problem


def test_an_unsealed_record_and_a_missing_key_each_say_what_is_wrong() -> None:
    run = sealed_run()
    run.seal = ""
    problem = run_seal_problem(KEY, UID, run)
    assert problem is not None and "carries no seal: the operator did not write it" in problem
    problem = run_seal_problem(None, UID, sealed_run())
    assert problem is not None and "no signing key" in problem and "--signing-key-file" in problem
