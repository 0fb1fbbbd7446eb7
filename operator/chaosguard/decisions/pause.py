"""Pause and resume (`spec.paused`), judged without I/O.

The pause lives in the spec, not in an annotation or in the operator's memory: the API server's RBAC
decides who may pause (whoever may patch the experiment), the admission webhook records who did (the
`paused-by` annotation it stamps), Git sees the change, and every replica, a restarted operator and a
new leader all read the same truth. `paused` is left out of the spec hash (decisions.stamps), so a pause
or a resume is not an edit: the run, its approvals and the author's stamp stay valid, and admission lets
anyone who may patch the experiment pause it, in or out of a time window. Resuming is judged by the
operator like a run's start (policy, the author's rights, the steady state) before any new fault.

A pause never moves the run's deadline: a run paused past its deadline ends as it would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from chaosguard.api.models import GROUP, PauseRecord, Phase, RunStatus

RecordT = TypeVar("RecordT")

#: Stamped by the admission webhook with the user who last set or cleared spec.paused.
PAUSED_BY = f"{GROUP}/paused-by"
#: The removal cause in a fault record taken out by a pause (FaultRecord.removed_by starts with it).
PAUSE_CAUSE = "pause"
UNKNOWN_PAUSER = "an unknown user (no admission webhook recorded who)"
#: Phases whose outcome stands for the spec as it was observed: a pause-only change must not re-run them.
_SETTLED = (Phase.COMPLETED, Phase.ABORTED, Phase.FAILED)


class PauseStep(StrEnum):
    PLAY = "play"  # not paused: rounds as usual
    PAUSE = "pause"  # just paused: record it, take the faults out
    HOLD = "hold"  # still paused: no round, the deadline counts
    RESUME = "resume"  # just resumed: re-check policy, then rounds again


def open_pause(run: RunStatus) -> PauseRecord | None:
    """The run's pause in progress, if any."""
    last = run.pauses[-1] if run.pauses else None
    return last if last is not None and last.resumed_at is None else None


def pause_step(paused: bool, run: RunStatus) -> PauseStep:
    held = open_pause(run) is not None
    if paused:
        return PauseStep.HOLD if held else PauseStep.PAUSE
    return PauseStep.RESUME if held else PauseStep.PLAY


def only_pause_changed(phase: Phase | None, current: RunStatus | None, last: RunStatus | None, hash_now: str) -> bool:
    """Whether a new generation changed nothing but `paused`, judged against the run the phase stands for
    (Running: the current run; Completed, Aborted, Failed: the last run): such a generation neither restarts
    a running run nor runs a finished experiment again. Elsewhere a new generation is re-admitted, which a
    pause leaves unchanged anyway."""
    if phase is Phase.RUNNING and current is not None:
        return current.spec_hash == hash_now
    if phase in _SETTLED and last is not None and current is None:
        return last.spec_hash == hash_now
    return False


def pauser(annotations: Mapping[str, str]) -> str:
    return annotations.get(PAUSED_BY) or UNKNOWN_PAUSER


def paused_run_message(run: RunStatus, who: str) -> str:
    deadline = run.deadline.isoformat() if run.deadline else "?"
    return (
        f"run {run.id} paused by {who}: its faults are taken out and no round plays; the deadline {deadline} "
        "still counts (resume with `chaosguard resume NAME` or spec.paused: false)"
    )


def paused_schedule_message(next_run_at: datetime | None, who: str) -> str:
    upcoming = f"; the slot at {next_run_at.isoformat()} will be skipped" if next_run_at else ""
    return f"paused by {who}: no run starts{upcoming} (resume with `chaosguard resume NAME` or spec.paused: false)"


def resumed_run_message(run: RunStatus, who: str, paused_for: float) -> str:
    deadline = run.deadline.isoformat() if run.deadline else "?"
    return f"run {run.id} resumed by {who} after {paused_for:.1f}s paused; it runs until its deadline {deadline}"


def skipped_slot(slot: datetime, who: str, next_run_at: datetime) -> RunStatus:
    """The history entry of a scheduled slot skipped because the schedule is paused."""
    return RunStatus(
        id=f"skipped-{slot:%Y%m%dT%H%M%SZ}",
        trigger="schedule",
        phase=Phase.SKIPPED,
        finished_at=slot,
        next_round_at=None,
        reason="Paused",
        message=f"the run due at {slot.isoformat()} was skipped: the schedule is paused by {who}; "
        f"next slot at {next_run_at.isoformat()}",
    )


def rounds_after_resume(run: RunStatus, repeats: bool, now: datetime) -> tuple[int, datetime | None]:
    """(rounds_done, next_round_at) for a run resumed at `now`: a repeating kind plays its next slot (at once
    if one passed while paused, on the run's own grid); a kind that acts once per run puts its fault back in
    now, for the rest of the run (its pause took it out)."""
    if repeats:
        return run.rounds_done, run.next_round_at
    return 0, now


def counted_records(records: Sequence[RecordT]) -> list[RecordT]:
    """A kind that acts once per run tries each pod once; a fault a pause took out does not count as tried."""
    return [r for r in records if not str(getattr(r, "removed_by", "")).startswith(PAUSE_CAUSE)]


def carrier_label(run: RunStatus) -> str:
    """What names a run's fault carriers: the run, and after a resume the pause count too, since an
    ephemeral container's name can never be reused in a pod."""
    return run.id if not run.pauses else f"{run.id}-p{len(run.pauses)}"


def paused_seconds(run: RunStatus, now: datetime) -> float:
    """How long the run has been paused in all."""
    total = 0.0
    for pause in run.pauses:
        end = pause.resumed_at or run.finished_at or now
        total += max(0.0, (end - pause.paused_at).total_seconds())
    return total


def pause_stamp(
    old: Mapping[str, object] | None, new: Mapping[str, object], requester: str, old_annotations: Mapping[str, str]
) -> str | None:
    """The paused-by annotation after an admission request: the requester when it sets or clears spec.paused
    (or creates the experiment paused), else what it was, so that nobody writes it by hand (None: absent)."""

    def paused(body: Mapping[str, object] | None) -> bool:
        spec = (body or {}).get("spec")
        return bool(spec.get("paused")) if isinstance(spec, Mapping) else False

    if paused(new) != paused(old):
        return requester
    return old_annotations.get(PAUSED_BY)


def ended_while_paused(run: RunStatus, reason: str) -> None:
    """A run that ends while paused (its deadline, an abort) says so in its open pause, which stays open:
    it was never resumed."""
    record = open_pause(run)
    if record is not None:
        record.message = f"{record.message}; the run ended while paused ({reason})"
