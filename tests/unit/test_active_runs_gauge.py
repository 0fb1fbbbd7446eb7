"""chaosguard_active_runs counts each run once in the process that started or took it up."""

from chaosguard.runtime import metrics


def gauge() -> float:
    return metrics.ACTIVE_RUNS._value.get()  # type: ignore[attr-defined]


def test_a_standby_ending_a_run_it_never_counted_leaves_the_gauge_at_zero_or_more() -> None:
    before = gauge()
    metrics.count_run("run-of-the-leader", active=False)  # a standby's abort
    assert gauge() == before


def test_a_run_started_and_taken_up_again_counts_once_and_ends_once() -> None:
    before = gauge()
    metrics.count_run("run-a", active=True)
    metrics.count_run("run-a", active=True)  # resumed after a restart of its driver
    assert gauge() == before + 1
    metrics.count_run("run-a", active=False)
    metrics.count_run("run-a", active=False)  # its end seen twice (a race between two writers)
    assert gauge() == before
