"""The pure decisions of pause and resume (decisions.pause), the stamps' view of a pause, and what the
CLI shows of one (`chaosguard pause|resume`, `apply --wait`, the report)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chaosguard.api.models import (
    ChaosExperimentStatus,
    FaultRecord,
    FaultState,
    KillRecord,
    KillResult,
    PauseRecord,
    Phase,
    RunStatus,
)
from chaosguard.cli.apply import Seen, live_line, new_events
from chaosguard.cli.pause import pause_outcome
from chaosguard.cli.report import runs_of, timeline
from chaosguard.decisions import pause, stamps
from chaosguard.decisions.pause import PauseStep

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "action": "pod-kill",
    "target": {"selector": {"matchLabels": {"app": "checkout"}}},
    "duration": "5m",
    "interval": "30s",
}


def run(**fields: Any) -> RunStatus:
    return RunStatus(id="r1", started_at=NOW, deadline=NOW + timedelta(minutes=5), **fields)


def test_the_spec_hash_ignores_paused_but_nothing_else() -> None:
    plain = stamps.spec_hash(SPEC)
    assert stamps.spec_hash({**SPEC, "paused": True}) == plain == stamps.spec_hash({**SPEC, "paused": False})
    assert stamps.spec_hash({**SPEC, "paused": True, "duration": "6m"}) != plain
    assert stamps.spec_hash({"paused": True, "bogus": 1}) == stamps.spec_hash({"bogus": 1})  # invalid specs too


def test_a_pause_does_not_make_its_author_an_editor() -> None:
    author = stamps.AuthorStamp("alice", ("sre",), (), NOW)
    check = stamps.StampCheck(author)
    kept = stamps.stamp_for_update(check, stamps.Identity("bob"), SPEC, {**SPEC, "paused": True})
    assert kept == author
    edited = stamps.stamp_for_update(check, stamps.Identity("bob"), SPEC, {**SPEC, "duration": "6m"})
    assert edited is not None and edited.editors == ("bob",)


def test_the_step_follows_the_spec_and_the_open_pause() -> None:
    assert pause.pause_step(False, run()) is PauseStep.PLAY
    assert pause.pause_step(True, run()) is PauseStep.PAUSE
    held = run(pauses=[PauseRecord(paused_at=NOW)])
    assert pause.pause_step(True, held) is PauseStep.HOLD
    assert pause.pause_step(False, held) is PauseStep.RESUME
    closed = run(pauses=[PauseRecord(paused_at=NOW, resumed_at=NOW + timedelta(seconds=3))])
    assert pause.open_pause(closed) is None
    assert pause.pause_step(True, closed) is PauseStep.PAUSE


def test_only_a_pause_keeps_a_running_run_or_a_finished_outcome() -> None:
    digest = stamps.spec_hash(SPEC)
    current = run(spec_hash=digest)
    assert pause.only_pause_changed(Phase.RUNNING, current, None, digest)
    assert not pause.only_pause_changed(Phase.RUNNING, current, None, "sha256:other")
    assert pause.only_pause_changed(Phase.COMPLETED, None, current, digest)  # never re-run by a pause
    assert not pause.only_pause_changed(Phase.COMPLETED, None, current, "sha256:other")
    assert not pause.only_pause_changed(Phase.REJECTED, None, current, digest)  # re-admitted: no harm
    assert not pause.only_pause_changed(Phase.SCHEDULED, None, current, digest)
    assert not pause.only_pause_changed(None, None, None, digest)


def test_a_resume_continues_on_the_grid_or_puts_a_once_fault_back() -> None:
    paused = run(rounds_done=3, next_round_at=NOW + timedelta(seconds=90))
    assert pause.rounds_after_resume(paused, True, NOW) == (3, NOW + timedelta(seconds=90))
    assert pause.rounds_after_resume(paused, False, NOW) == (0, NOW)


def test_faults_a_pause_took_out_do_not_count_as_tried_and_carriers_get_new_names() -> None:
    out = FaultRecord(
        namespace="shop", name="a", uid="u1", state=FaultState.REMOVED, removed_by="pause (clear container x)"
    )
    aborted = FaultRecord(namespace="shop", name="b", uid="u2", state=FaultState.REMOVED, removed_by="abort on request")
    live = FaultRecord(namespace="shop", name="c", uid="u3", state=FaultState.ACTIVE)
    assert pause.counted_records([out, aborted, live]) == [aborted, live]
    kill = KillRecord(namespace="shop", name="a", uid="u1", at=NOW, result=KillResult.KILLED)
    assert pause.counted_records([kill]) == [kill]
    assert pause.carrier_label(run()) == "r1"
    assert pause.carrier_label(run(pauses=[PauseRecord(paused_at=NOW), PauseRecord(paused_at=NOW)])) == "r1-p2"


def test_a_skipped_slot_is_a_history_entry_that_says_why() -> None:
    entry = pause.skipped_slot(NOW, "bob", NOW + timedelta(days=1))
    assert entry.phase is Phase.SKIPPED and entry.reason == "Paused" and entry.trigger == "schedule"
    assert entry.finished_at == NOW and entry.id == "skipped-20261207T120000Z"
    assert "paused by bob" in entry.message and "2026-12-08T12:00:00+00:00" in entry.message


def test_paused_time_counts_open_and_closed_pauses() -> None:
    two = run(
        pauses=[
            PauseRecord(paused_at=NOW, resumed_at=NOW + timedelta(seconds=10)),
            PauseRecord(paused_at=NOW + timedelta(seconds=20)),
        ]
    )
    assert pause.paused_seconds(two, NOW + timedelta(seconds=25)) == 15.0


def test_the_webhook_stamps_who_set_or_cleared_paused_and_nobody_else_writes_it() -> None:
    old = {"spec": {**SPEC, "paused": False}}
    new = {"spec": {**SPEC, "paused": True}}
    assert pause.pause_stamp(old, new, "bob", {}) == "bob"
    assert pause.pause_stamp(new, old, "carol", {pause.PAUSED_BY: "bob"}) == "carol"
    assert pause.pause_stamp(new, new, "mallory", {pause.PAUSED_BY: "bob"}) == "bob"  # a forged one is reset
    assert pause.pause_stamp(None, new, "alice", {}) == "alice"  # created paused
    assert pause.pause_stamp(None, old, "alice", {}) is None
    assert pause.pauser({}) == pause.UNKNOWN_PAUSER and pause.pauser({pause.PAUSED_BY: "bob"}) == "bob"


def experiment(status: dict[str, Any], paused: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "x", "namespace": "shop"}, "spec": {**SPEC, "paused": paused}, "status": status}


def test_the_cli_waits_until_the_pause_is_recorded_and_every_fault_is_out() -> None:
    condition = {"type": "Paused", "status": "True", "message": "run r1 paused by bob"}
    active = {"state": "Active", "namespace": "shop", "name": "a"}
    removed = {"state": "Removed", "removedBy": "pause (clear container c)"}
    unrecorded = {"currentRun": {"id": "r1", "faults": [active]}}
    assert pause_outcome(experiment(unrecorded), True) is None
    recorded = {"currentRun": {"id": "r1", "pauses": [{"pausedAt": "x"}], "faults": [active]}}
    assert pause_outcome(experiment(recorded), True) is None
    done = {"conditions": [condition], "currentRun": {"id": "r1", "pauses": [{"pausedAt": "x"}], "faults": [removed]}}
    assert pause_outcome(experiment(done), True) == "run r1 paused by bob; 1 fault(s) taken out"
    scheduled = {"conditions": [condition], "message": "paused by bob: no run starts"}
    assert pause_outcome(experiment(scheduled), True) == "paused by bob: no run starts"
    resumed = {
        "conditions": [{**condition, "status": "False", "message": "resumed by bob"}],
        "currentRun": {"id": "r1"},
    }
    assert pause_outcome(experiment(resumed, False), False) == "resumed by bob"
    assert pause_outcome(experiment({"conditions": [condition], "currentRun": {"id": "r1"}}, False), False) is None
    waiting = {
        "conditions": [condition],
        "message": "resume waits, still paused: REFUSED quiet-alerts",
        "currentRun": {"id": "r1"},
    }
    assert pause_outcome(experiment(waiting, False), False) == waiting["message"]


def test_apply_wait_reports_the_pause_and_the_resume_once_each() -> None:
    seen = Seen()
    paused = {
        "phase": "Running",
        "conditions": [{"type": "Paused", "status": "True", "message": "run r1 paused by bob"}],
    }
    assert "paused: run r1 paused by bob" in new_events(seen, experiment(paused))
    assert not [line for line in new_events(seen, experiment(paused)) if line.startswith("paused")]
    resumed = {"phase": "Running", "conditions": [{"type": "Paused", "status": "False", "message": "resumed by bob"}]}
    assert "resumed: resumed by bob" in new_events(seen, experiment(resumed, False))
    assert "PAUSED" in live_line(experiment(paused), 3.0, NOW)
    assert "PAUSED" not in live_line(experiment(resumed, False), 3.0, NOW)


def test_the_report_shows_each_pause_and_leaves_skipped_slots_out_of_the_runs() -> None:
    paused = run(
        pauses=[PauseRecord(paused_at=NOW, paused_by="bob", resumed_at=NOW + timedelta(seconds=4), resumed_by="carol")]
    )
    texts = [entry.text for entry in timeline(paused, True, "shop")]
    assert any(text.startswith("paused by bob") for text in texts), texts
    assert "resumed by carol after 4.0s" in texts
    skipped = pause.skipped_slot(NOW, "bob", NOW + timedelta(days=1))
    status = ChaosExperimentStatus(history=[skipped], last_run=paused)
    assert [r.id for r in runs_of(status)] == ["r1"]


def test_status_marks_a_paused_experiment_in_its_phase() -> None:
    from chaosguard.cli.ops import status_rows

    [row] = status_rows([experiment({"phase": "Running", "currentRun": {"id": "r1"}})], NOW)
    assert row[3] == "Running (paused)"
    [row] = status_rows([experiment({"phase": "Running", "currentRun": {"id": "r1"}}, False)], NOW)
    assert row[3] == "Running"


def test_a_run_that_ends_while_paused_says_so_and_its_pause_stays_open() -> None:
    held = run(pauses=[PauseRecord(paused_at=NOW, message="paused by bob")])
    pause.ended_while_paused(held, "RunCompleted")
    assert held.pauses[0].resumed_at is None
    assert held.pauses[0].message == "paused by bob; the run ended while paused (RunCompleted)"
    pause.ended_while_paused(run(), "RunCompleted")  # never paused: nothing to say
