"""How the operator's garbage is collected. At a thousand experiments the operator holds millions of
objects that live as long as the runs do (kopf's and the informers' copies of every object, the
drivers' models), and CPython's full collection walks them all: every thread, the guard's included,
stopped 0.3 to 0.5 s about every six seconds (`chaosguard_gc_pause_seconds`), and a guard tick that fell
in one was late by the rest of it.

So what survives a full collection is frozen (`gc.freeze`): later collections walk only what was
allocated since. Objects freed by their reference count are freed as ever; only cycles that become
garbage after being frozen wait, until every THAW_SECONDS everything is thawed and the next full
collection walks it all once (one long pause per period, not one every few seconds).
"""

from __future__ import annotations

import gc
import time
from typing import Any

THAW_SECONDS = 600.0


class FreezeSurvivors:
    """The gc callback that freezes what a full collection left, and thaws it all once a period."""

    def __init__(self, thaw_seconds: float = THAW_SECONDS, clock: Any = time.monotonic) -> None:
        self.thaw_seconds = thaw_seconds
        self.clock = clock
        self.thawed_at = clock()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self.clock()
        if now - self.thawed_at >= self.thaw_seconds:
            gc.unfreeze()  # the next full collection walks everything once
            self.thawed_at = now
        else:
            gc.freeze()


def freeze_survivors_of_full_collections(thaw_seconds: float = THAW_SECONDS) -> FreezeSurvivors:
    """Installs FreezeSurvivors (once per process) and returns it."""
    for callback in gc.callbacks:
        if isinstance(callback, FreezeSurvivors):
            return callback
    policy = FreezeSurvivors(thaw_seconds)
    gc.callbacks.append(policy)
    return policy
