"""When a standby ends a breaching run itself, pure: every replica guards every run, and the leader ends
the runs it judges breaching. A standby that judges the same breach first gives the leader a short
grace, so that a living leader's abort is the only one the API server has to write. When a thousand
runs breach at once, the leader's writes land over several seconds, far past any short grace, and
a standby that then wrote its own abort for each would double the API server's queue (a read, a
refused patch and a second read per run), delaying every `Aborted` it was meant to speed up. So the
standby waits on while the leader is seen ending other runs: a leader whose ends keep arriving is alive
and working through the burst. A dead leader's ends stop, and within one grace of its last one the
standby acts; a leader that was never seen ending anything gets just the grace, as before.

The runs' faults do not wait for this: the leader takes them out before it writes anything (a breach
moment to faults out within a second at a thousand runs), and a standby acting later takes out what
is left. `patience` bounds the wait for the case of a living leader that never judges this run as
breaching (another Prometheus answer at the threshold's edge): the standby's own verdict stands then.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StandbyWait:
    grace: float = 0.4  # seconds a living leader gets to end a breaching run
    patience: float = 30.0  # the longest a standby waits while the leader keeps ending other runs

    def acts_at(self, waiting_since: float, last_leader_end: float | None) -> float:
        """When a standby that has waited since `waiting_since` for the leader to end a breaching run ends
        it itself, unless the leader is seen ending another run before then; `last_leader_end`: when this
        standby last saw the leader end some run (None: never), all on one monotonic clock."""
        leader_alive_until = waiting_since + self.grace if last_leader_end is None else last_leader_end + self.grace
        return max(waiting_since + self.grace, min(waiting_since + self.patience, leader_alive_until))

    def acts_now(self, now: float, waiting_since: float, last_leader_end: float | None) -> bool:
        return now >= self.acts_at(waiting_since, last_leader_end)


class RunEnds:
    """When this replica last saw a run end that another replica ended: its watch of the experiments
    feeds `observe` with each object's current run, and a standby marks the runs it ends itself
    (`ending_here`), so that its own ends never count as a sign of the leader."""

    def __init__(self) -> None:
        self.last_leader_end: float | None = None
        self._current: dict[str, str | None] = {}  # experiment key -> its current run's id, as last seen
        self._ending_here: set[str] = set()  # ids of the runs this replica is ending

    def ending_here(self, run_id: str) -> None:
        self._ending_here.add(run_id)

    def observe(self, key: str, current_run: str | None, now: float) -> None:
        previous = self._current.get(key)
        self._current[key] = current_run
        if previous is None or previous == current_run:
            return
        if previous in self._ending_here:
            self._ending_here.discard(previous)
            return
        self.last_leader_end = now

    def forget(self, key: str) -> None:
        """The experiment is gone (its runs end with it: no sign of anyone)."""
        self._current.pop(key, None)
