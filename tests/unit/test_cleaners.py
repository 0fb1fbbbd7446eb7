"""Which clean-up container takes a carrier out of a pod (`cleaner_for_carrier`), and the stop file each
stressor watches: names a pod already holds are never taken again, and a pause's clean-up never reaches
the carrier a resume puts in after it."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from chaosguard.decisions import stress
from chaosguard.runtime.faults.injector import (
    carrier_of,
    cleaner_for_carrier,
    clear_container,
    container_name,
    run_cleaners,
)
from chaosguard.runtime.faults.stress import stress_clear_container

RUN = "Run-7"
FIRST, RESUMED = container_name(RUN, "stress"), container_name(f"{RUN}-p1", "stress")


@pytest.fixture(autouse=True)
def image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSGUARD_INJECTOR_IMAGE", "img:1")


def stress_cleaner(attempt: int, carrier: str) -> dict[str, Any]:
    return stress_clear_container(RUN, "shop/x", attempt, "img:1", carrier)


def test_the_run_s_clean_ups_are_found_by_their_real_names() -> None:
    names = ["debugger", "chaosguard-latency-run-7", "chaosguard-clear1-run-7", "chaosguard-clear1-run-77"]
    assert run_cleaners(names, RUN) == {"chaosguard-clear1-run-7": 1}
    assert container_name(RUN, "clear1") == "chaosguard-clear1-run-7"


def latency_cleaner(attempt: int, carrier: str) -> dict[str, Any]:
    return clear_container(RUN, "shop/x", attempt, "img:1", carrier)


def test_a_carrier_already_cleared_reuses_its_clean_up_wherever_the_pod_lists_it() -> None:
    carrier = container_name(RUN, "latency")
    pod = [latency_cleaner(1, carrier), {"name": carrier, "command": ["inject"]}]  # the API's merge order
    build = partial(latency_cleaner, carrier=carrier)
    assert cleaner_for_carrier(pod, carrier, RUN, build) == ("chaosguard-clear1-run-7", None)


def test_a_carrier_added_after_the_run_s_first_clean_up_gets_the_next_attempt() -> None:
    # A latency run paused (clear1), resumed (a `-p1` injector), then aborted: a second `clear1` would be
    # merged into the first by the API server and never run.
    first, resumed = container_name(RUN, "latency"), container_name(f"{RUN}-p1", "latency")
    pod = [{"name": resumed}, latency_cleaner(1, first), {"name": first}]
    name, cleaner = cleaner_for_carrier(pod, resumed, RUN, partial(latency_cleaner, carrier=resumed))
    assert name == "chaosguard-clear2-run-7" and cleaner == latency_cleaner(2, resumed)
    assert carrier_of(pod[1]) == first and carrier_of(cleaner) == resumed


def test_a_clean_up_from_before_clean_ups_named_their_carrier_is_not_trusted() -> None:
    carrier = container_name(RUN, "latency")
    legacy = latency_cleaner(1, "")
    name, cleaner = cleaner_for_carrier(
        [legacy, {"name": carrier}], carrier, RUN, partial(latency_cleaner, carrier=carrier)
    )
    assert name == "chaosguard-clear2-run-7" and cleaner is not None  # clearing twice is harmless


def test_a_clean_up_for_another_stressor_does_not_count_for_this_one() -> None:
    pod = [stress_cleaner(2, FIRST), {"name": RESUMED}, stress_cleaner(1, FIRST), {"name": FIRST}]
    name, cleaner = cleaner_for_carrier(pod, RESUMED, RUN, lambda attempt: stress_cleaner(attempt, RESUMED))
    assert name == "chaosguard-clear3-run-7" and cleaner is not None
    assert cleaner["command"] == stress.clear_command(stress.stop_file(RESUMED))
    pod.append(cleaner)
    assert cleaner_for_carrier(pod, RESUMED, RUN, lambda attempt: stress_cleaner(attempt, RESUMED)) == (name, None)


def test_a_carrier_the_pod_never_got_still_gets_a_clean_up() -> None:
    assert cleaner_for_carrier([], FIRST, RUN, lambda a: stress_cleaner(a, FIRST))[0] == "chaosguard-clear1-run-7"


def test_each_stressor_watches_a_stop_file_of_its_own() -> None:
    assert stress.stop_file(FIRST) == "/dev/shm/chaosguard-stress-stop-run-7"
    assert stress.stop_file(RESUMED) == "/dev/shm/chaosguard-stress-stop-run-7-p1"
    assert stress_cleaner(1, FIRST)["command"][-1] == stress.stop_file(FIRST)
    assert stress_cleaner(2, RESUMED)["command"][-1] == stress.stop_file(RESUMED)
