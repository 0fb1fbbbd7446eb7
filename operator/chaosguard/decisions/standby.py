"""When a standby ends a breaching run itself, pure: every replica guards every run, and the leader ends
the runs it judges breaching. A standby that judges the same breach (at the same tick: every replica
ticks on the wall clock's grid) first gives the leader a short grace, so that a living leader's abort
is the only one the API server has to write. A standby that wrote an abort for every run of a burst
would double the API server's queue (a read, a refused patch and a second read per run) and delay
every `Aborted` it was meant to speed up; so:

- When more runs wait at once than the leader sends at once (a burst), the grace is longer: the
  leader's first writes of a burst land later (it takes every run's faults out before it writes any).
- Once this standby has seen the leader end a run while it waited, it waits on while those ends keep
  coming: a leader whose ends keep arriving is alive and working through the burst. When they stop
  for `silence`, the standby acts; `silence` is longer than the grace because the standby's own loop
  may stall (a collection of its garbage, a burst of events) and would then see no end for a moment.
- A leader never seen ending a run during the wait (dead at the breach) gets just the grace.
- `patience` bounds the wait for a living leader that never judges this run as breaching (another
  Prometheus answer at the threshold's edge): the standby's own verdict stands then.

The runs' faults do not wait for the writes: the leader takes them out before it writes anything, and
a standby acting later takes out what is left.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StandbyWait:
    grace: float = 0.4  # seconds a living leader gets to end a breaching run
    burst: int = 8  # more runs waiting at once than this is a burst (the urgent writes the leader sends at once)
    burst_grace: float = 0.8
    silence: float = 2.0  # once the leader was seen ending runs: how long without another before acting
    patience: float = 30.0  # the longest a standby waits while the leader keeps ending other runs

    def acts_at(self, waiting_since: float, last_leader_end: float | None, waiting_runs: int = 1) -> float:
        """When a standby that has waited since `waiting_since` for the leader to end a breaching run ends
        it itself, unless the leader is seen ending another run before then. `last_leader_end`: when this
        standby last saw the leader end some run (None: never), on the same monotonic clock;
        `waiting_runs`: how many runs this standby leaves to the leader right now."""
        acts = waiting_since + (self.burst_grace if waiting_runs > self.burst else self.grace)
        if last_leader_end is None or last_leader_end < waiting_since:
            return acts
        return max(acts, min(waiting_since + self.patience, last_leader_end + self.silence))

    def acts_now(self, now: float, waiting_since: float, last_leader_end: float | None, waiting_runs: int = 1) -> bool:
        return now >= self.acts_at(waiting_since, last_leader_end, waiting_runs)


class RunEnds:
    """When this replica last saw a run end that another replica ended: its watch of the experiments
    feeds `observe` with each object's current run, and a standby marks the runs it ends itself
    (`ending_here`), so that its own ends never count as a sign of the leader."""

    def __init__(self) -> None:
        self.last_leader_end: float | None = None
        self._current: dict[str, str | None] = {}  # experiment key -> its current run's id, as last seen
        # (experiment key, run id) of the runs this replica is ending: run ids repeat across experiments
        self._ending_here: set[tuple[str, str]] = set()

    def ending_here(self, key: str, run_id: str) -> None:
        self._ending_here.add((key, run_id))

    def observe(self, key: str, current_run: str | None, now: float) -> None:
        previous = self._current.get(key)
        self._current[key] = current_run
        if previous is None or previous == current_run:
            return
        if (key, previous) in self._ending_here:
            self._ending_here.discard((key, previous))
            return
        self.last_leader_end = now

    def forget(self, key: str) -> None:
        """The experiment is gone (its runs end with it: no sign of anyone), and so are its marks."""
        self._current.pop(key, None)
        self._ending_here = {mark for mark in self._ending_here if mark[0] != key}
