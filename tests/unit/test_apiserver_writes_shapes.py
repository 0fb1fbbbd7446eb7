"""bench/apiserver_writes: the statuses and patches it times must be the ones the operator writes, or its
figures say nothing about the operator's abort."""

from __future__ import annotations

import pytest

from bench.apiserver_writes import aborted_status, running_status, verdict_operations, wire
from chaosguard.api.models import ChaosExperimentStatus, Phase
from chaosguard.decisions.mergepatch import apply_merge_patch, merge_patch
from chaosguard.decisions.run_record import run_seal_problem
from tests.unit.test_mergepatch_ops import apply_operations, without_nulls

KEY = b"k" * 32
UID = "4b6aaa37-07d8-4f1f-b846-ca298c0172ec"
SPEC = {"action": "pod-kill", "duration": "1h", "target": {"mode": "one", "selector": {"matchLabels": {"app": "web"}}}}


def test_the_running_status_is_a_sealed_guarded_run_as_the_operator_reads_it() -> None:
    running = running_status(7, "writes", UID, SPEC, KEY)
    read_back = ChaosExperimentStatus.model_validate(wire(running))
    run = read_back.current_run
    assert read_back.phase is Phase.RUNNING and run is not None and read_back.last_run is None
    assert run.kills_total == 1 and len(run.kills) == 1 and run.slis[0].trend is not None
    assert run_seal_problem(KEY, UID, run) is None


def test_the_verdict_patch_tests_the_run_id_then_turns_the_running_status_into_the_aborted_one() -> None:
    running = running_status(7, "writes", UID, SPEC, KEY)
    aborted = aborted_status(running, UID, KEY)
    operations = verdict_operations(wire(running), wire(aborted))

    assert running.current_run is not None
    assert operations[0] == {"op": "test", "path": "/status/currentRun/id", "value": running.current_run.id}
    stored = apply_operations({"status": without_nulls(wire(running))}, operations[1:], "")
    assert stored["status"] == without_nulls(wire(aborted))
    ended = aborted.last_run
    assert aborted.phase is Phase.ABORTED and aborted.current_run is None and ended is not None
    assert ended.phase is Phase.ABORTED and ended.abort is not None and run_seal_problem(KEY, UID, ended) is None
    # Only the verdict's fields: conditions and the rest follow in a routine write.
    assert {op["path"].split("/")[2] for op in operations[1:]} <= {"phase", "message", "currentRun", "lastRun"}


def test_the_reset_between_bursts_puts_the_running_status_back() -> None:
    status = running_status(7, "writes", UID, SPEC, KEY)
    running, aborted = wire(status), wire(aborted_status(status, UID, KEY))
    assert apply_merge_patch(without_nulls(aborted), merge_patch(aborted, running)) == without_nulls(running)


def test_a_status_without_a_current_run_has_no_verdict_to_write() -> None:
    with pytest.raises(ValueError, match="currentRun"):
        verdict_operations({"phase": "Completed"}, {"phase": "Completed"})
