"""The operator's garbage collection (runtime.collector): survivors frozen, thawed once a period."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from chaosguard.runtime.collector import FreezeSurvivors


@pytest.fixture
def policy() -> Iterator[list[float]]:
    now = [1000.0]
    installed = FreezeSurvivors(thaw_seconds=60.0, clock=lambda: now[0])
    gc.callbacks.append(installed)
    try:
        yield now
    finally:
        gc.callbacks.remove(installed)
        gc.unfreeze()


def test_what_survives_a_full_collection_is_frozen(policy: list[float]) -> None:
    survivors = [[index] for index in range(1000)]
    gc.collect(2)
    assert gc.get_freeze_count() >= len(survivors)


def test_a_younger_collection_freezes_nothing(policy: list[float]) -> None:
    gc.collect(0)
    assert gc.get_freeze_count() == 0


def test_a_cycle_that_becomes_garbage_after_being_frozen_is_freed_after_the_thaw(policy: list[float]) -> None:
    class Node:
        other: Node

    first, second = Node(), Node()
    first.other, second.other = second, first
    alive = weakref.ref(first)
    gc.collect(2)
    del first, second
    gc.collect(2)
    assert alive() is not None, "a frozen cycle was walked"
    policy[0] += 60.0  # the period is over: this collection's end thaws everything
    gc.collect(2)
    gc.collect(2)
    assert alive() is None
