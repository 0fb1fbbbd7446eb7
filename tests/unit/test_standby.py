"""When a standby ends a breaching run itself (decisions.standby)."""

from __future__ import annotations

from chaosguard.decisions.standby import RunEnds, StandbyWait

WAIT = StandbyWait(grace=0.4, burst=8, burst_grace=0.8, silence=2.0, patience=30.0)


def test_a_leader_never_seen_ending_a_run_gets_just_the_grace() -> None:
    assert not WAIT.acts_now(now=100.3, waiting_since=100.0, last_leader_end=None)
    assert WAIT.acts_now(now=100.4, waiting_since=100.0, last_leader_end=None)


def test_an_end_seen_before_the_wait_began_is_no_sign_of_life_now() -> None:
    assert WAIT.acts_now(now=100.4, waiting_since=100.0, last_leader_end=99.9)


def test_a_burst_gets_the_longer_grace() -> None:
    assert not WAIT.acts_now(now=100.5, waiting_since=100.0, last_leader_end=None, waiting_runs=9)
    assert WAIT.acts_now(now=100.8, waiting_since=100.0, last_leader_end=None, waiting_runs=9)
    assert WAIT.acts_now(now=100.4, waiting_since=100.0, last_leader_end=None, waiting_runs=8)


def test_a_leader_seen_ending_runs_is_waited_for_while_its_ends_keep_coming() -> None:
    assert not WAIT.acts_now(now=105.0, waiting_since=100.0, last_leader_end=104.8)
    assert not WAIT.acts_now(now=120.0, waiting_since=100.0, last_leader_end=118.5)


def test_a_leader_whose_ends_stop_is_given_the_silence_after_its_last() -> None:
    assert not WAIT.acts_now(now=106.9, waiting_since=100.0, last_leader_end=105.0)
    assert WAIT.acts_now(now=107.0, waiting_since=100.0, last_leader_end=105.0)


def test_the_grace_holds_even_after_an_early_end() -> None:
    assert WAIT.acts_at(waiting_since=100.0, last_leader_end=100.0, waiting_runs=9) == 102.0
    assert StandbyWait(silence=0.1).acts_at(waiting_since=100.0, last_leader_end=100.0) == 100.4


def test_patience_bounds_the_wait_for_a_busy_leader() -> None:
    assert WAIT.acts_now(now=130.0, waiting_since=100.0, last_leader_end=129.99)


def test_a_run_ending_is_a_sign_of_the_leader() -> None:
    ends = RunEnds()
    ends.observe("ns/a", "r1", now=1.0)
    ends.observe("ns/a", "r1", now=2.0)
    assert ends.last_leader_end is None  # the same run, still current: nothing ended
    ends.observe("ns/a", None, now=3.0)
    assert ends.last_leader_end == 3.0


def test_a_new_run_replacing_the_last_is_an_end_too() -> None:
    ends = RunEnds()
    ends.observe("ns/a", "r1", now=1.0)
    ends.observe("ns/a", "r2", now=2.0)
    assert ends.last_leader_end == 2.0


def test_a_first_sighting_is_no_end() -> None:
    ends = RunEnds()
    ends.observe("ns/a", None, now=1.0)
    ends.observe("ns/b", "r1", now=1.0)
    ends.observe("ns/a", "r2", now=2.0)
    assert ends.last_leader_end is None


def test_this_replicas_own_ends_are_not_the_leaders() -> None:
    ends = RunEnds()
    ends.observe("ns/a", "r1", now=1.0)
    ends.observe("ns/b", "r1", now=1.0)  # run ids repeat across experiments
    ends.ending_here("ns/a", "r1")
    ends.observe("ns/a", None, now=2.0)
    assert ends.last_leader_end is None
    ends.observe("ns/b", None, now=3.0)
    assert ends.last_leader_end == 3.0  # the other experiment's run of that id was the leader's to end
    ends.observe("ns/a", "r2", now=4.0)
    ends.observe("ns/a", None, now=5.0)
    assert ends.last_leader_end == 5.0  # only that one run was this replica's


def test_a_deleted_experiment_is_forgotten() -> None:
    ends = RunEnds()
    ends.observe("ns/a", "r1", now=1.0)
    ends.forget("ns/a")
    ends.observe("ns/a", None, now=2.0)
    assert ends.last_leader_end is None


def test_a_deleted_experiment_takes_its_marks_along() -> None:
    ends = RunEnds()
    ends.observe("ns/a", "r1", now=1.0)
    ends.ending_here("ns/a", "r1")
    ends.forget("ns/a")
    ends.observe("ns/a", "r1", now=2.0)  # a new experiment of that name, its first run of that id
    ends.observe("ns/a", None, now=3.0)
    assert ends.last_leader_end == 3.0
