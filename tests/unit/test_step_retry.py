from chaosguard.runtime.driverbase import ACTIVE_POLL_SECONDS
from chaosguard.runtime.engine import MAX_STEP_RETRY_SECONDS, step_retry_delay


def test_a_first_failed_step_is_retried_after_one_poll_so_a_transient_error_barely_delays_a_safety_action() -> None:
    assert step_retry_delay(1) == ACTIVE_POLL_SECONDS


def test_failures_in_a_row_back_off_doubling_up_to_five_polls() -> None:
    delays = [step_retry_delay(n) for n in range(1, 7)]
    assert delays == sorted(delays)
    assert delays[:3] == [ACTIVE_POLL_SECONDS, 2 * ACTIVE_POLL_SECONDS, 4 * ACTIVE_POLL_SECONDS]
    assert delays[-1] == MAX_STEP_RETRY_SECONDS == 5 * ACTIVE_POLL_SECONDS
