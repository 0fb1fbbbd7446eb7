"""Whether this replica leads, and since when: what an experiment driver asks before anything only the
leader may do (admit, start a run, kill, inject).

Every replica runs kopf (its watches, the admission webhooks and one driver per experiment) and guards
every running run; the Lease (`leader`) decides which one leads. A replica that is not leading still
aborts a run whose guard breaches: an abort only ever takes faults out.

`since` is the wall-clock moment leadership was gained: a run that started before it was resumed from
status, and the new leader judges a fresh guard tick (one dated after `since`) before it kills or
injects anything for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from chaosguard.runtime import metrics


class NotLeading(Exception):
    """A leader-only action was about to start after this replica stopped leading."""


class Leadership:
    def __init__(self, leading: bool = False, since: datetime | None = None) -> None:
        self.leading = leading
        self.since = since if leading else None
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.LEADING.set(1 if leading else 0)

    @classmethod
    def sole(cls, at: datetime) -> Leadership:
        """A process without leader election leads from its start."""
        return cls(True, at)

    def gain(self, at: datetime) -> None:
        self.leading, self.since = True, at
        metrics.LEADING.set(1)

    def lose(self) -> None:
        self.leading, self.since = False, None
        metrics.LEADING.set(0)

    @contextlib.asynccontextmanager
    async def acting(self) -> AsyncIterator[None]:
        """Around one leader-only action (an eviction, an injector): refused once leadership is gone,
        and counted, so that a stepping-down leader releases the Lease only after its last one returned."""
        if not self.leading:
            raise NotLeading("this replica no longer leads")
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def quiesce(self, timeout: float) -> bool:
        """Waits until no leader-only action is in flight (True), or `timeout` seconds (False)."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
