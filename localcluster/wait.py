"""Bounded waiting for conditions in integration tests: poll until true, or fail saying what and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `condition` until it returns something truthy and return that.

    On timeout, raise AssertionError naming `what` was awaited, plus `describe()` (the state seen
    at the end) or the last value returned. Exceptions from `condition` propagate at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = describe() if describe is not None else f"last value: {value!r}"
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; {state}")
        time.sleep(interval)
