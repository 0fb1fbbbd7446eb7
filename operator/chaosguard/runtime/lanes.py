"""Two lanes for the engine's blocking Kubernetes calls, so that aborts never wait behind routine work.

Every call runs on a thread (the `kubernetes` client is synchronous). Routine work (status
batches, target selection, kills, recovery tracking) goes to the routine lane; an abort or a
rollback — and everything the task doing it calls — goes to the urgent lane: its own threads and
its own connection pool, so a thousand routine calls in flight neither take its threads nor its
connections. The lane is chosen by context (`urgent()`), not by each call site, so that every call
an abort makes, however deep, stays in the fast lane, and tasks it starts inherit it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from chaosguard.clients.kube import Cluster
from chaosguard.runtime import metrics

P = ParamSpec("P")
T = TypeVar("T")

ROUTINE_WORKERS = 16
# Wide, because aborts come in bursts: one platform-wide breach aborts every run at once, and each
# abort's status write must not wait for another's (the threads only exist while there is work).
URGENT_WORKERS = 64

_urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("chaosguard_urgent_lane", default=False)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Within this block (and in tasks started from it), API calls take the urgent lane."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def in_urgent_lane() -> bool:
    return _urgent.get()


class _Lane:
    def __init__(self, name: str, cluster: Cluster, workers: int) -> None:
        self.name = name
        self.cluster = cluster
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"chaosguard-{name}")
        self.queued = metrics.API_CALLS_QUEUED.labels(name)

    async def run(self, call: Callable[Concatenate[Cluster, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.queued.inc()
        try:
            return await loop.run_in_executor(self.pool, functools.partial(call, self.cluster, *args, **kwargs))
        finally:
            self.queued.dec()
            name = getattr(call, "__name__", "call")
            metrics.API_CALL_SECONDS.labels(name, self.name).observe(time.perf_counter() - started)


class ApiLanes:
    """`await lanes.call(Cluster.kill, pod, ...)`: runs an unbound `Cluster` method on the lane the
    context asks for, with that lane's own client."""

    def __init__(
        self,
        routine: Cluster,
        urgent_cluster: Cluster,
        *,
        routine_workers: int = ROUTINE_WORKERS,
        urgent_workers: int = URGENT_WORKERS,
    ) -> None:
        self.routine = _Lane("routine", routine, routine_workers)
        self.urgent = _Lane("urgent", urgent_cluster, urgent_workers)

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> ApiLanes:
        return cls(
            Cluster.connect(kubeconfig, connections=ROUTINE_WORKERS),
            Cluster.connect(kubeconfig, connections=URGENT_WORKERS),
        )

    @property
    def cluster(self) -> Cluster:
        """The routine lane's client, for code that manages its own threads."""
        return self.routine.cluster

    async def call(self, call: Callable[Concatenate[Cluster, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        lane = self.urgent if _urgent.get() else self.routine
        return await lane.run(call, *args, **kwargs)

    def close(self) -> None:
        for lane in (self.routine, self.urgent):
            lane.pool.shutdown(wait=False, cancel_futures=True)


# Routine status writes one operator keeps in the API server at once. The API server works through
# what it is sent in parallel but not in order of importance; with a few routine writes in flight at
# most, an abort's write waits behind those few, not behind a thousand runs' sample batches.
ROUTINE_STATUS_WRITES_IN_FLIGHT = 12
# Urgent status writes one operator keeps in the API server at once. A burst of a thousand aborts goes
# through fastest a few at a time: at 8 in flight the local API server took ~200 verdict writes/s at
# ~8.3 ms of its CPU each; at 32 it took fewer (~178/s), spent ~9.4 ms each, and dropped watchers that
# fell behind (bench/apiserver_writes.py).
URGENT_STATUS_WRITES_IN_FLIGHT = 8


class StatusWriteOrder:
    """The order experiments' status writes reach the API server in: urgent ones (an abort's, a
    rollback's) at once; routine ones (samples, history, recovery updates, the rest of an end) only
    while no urgent write is waiting or in flight, and at most ROUTINE_STATUS_WRITES_IN_FLIGHT at a time.
    A routine write held here is late, never lost: the batch that follows carries it.
    One per operator process, used from the event loop of its drivers."""

    def __init__(
        self,
        routine_in_flight: int = ROUTINE_STATUS_WRITES_IN_FLIGHT,
        urgent_in_flight: int = URGENT_STATUS_WRITES_IN_FLIGHT,
    ) -> None:
        if routine_in_flight < 1 or urgent_in_flight < 1:
            raise ValueError("routine_in_flight and urgent_in_flight must be at least 1")
        self.routine_limit = routine_in_flight
        self.urgent_limit = urgent_in_flight
        # Taken around one write alone (`sending`), never around work that may write again.
        self._urgent_requests = asyncio.Semaphore(urgent_in_flight)
        self.urgent_pending = 0
        self.routine_in_flight = 0
        # Routine writers waiting their turn, first come first served. Each is woken alone when a slot is
        # free (a thousand runs' writes wait here at once: waking them all on every release would cost
        # the loop a thousand wake-ups per write).
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        # Events held back during a burst of aborts, each with the context it was emitted in (kopf's).
        self._held_events: list[tuple[contextvars.Context, Callable[[], None]]] = []

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        self.urgent_pending += 1
        try:
            yield
        finally:
            self.urgent_pending -= 1
            self._let_next_in()
            if self.urgent_pending == 0:
                self._post_held_events()

    def post_event(self, post: Callable[[], None]) -> None:
        """Posts an Event (`post` queues it) at once, unless a burst of aborts is being written (more urgent
        writes pending than are sent at once): then once the last of them is out, so that the API server
        spends the burst on the writes that say `Aborted` (a thousand Events would take a share of it)."""
        if self.urgent_pending <= self.urgent_limit:
            post()
            return
        self._held_events.append((contextvars.copy_context(), post))

    def _post_held_events(self) -> None:
        held, self._held_events = self._held_events, []
        for context, post in held:
            try:
                context.run(post)
            except Exception:  # one Event that cannot be queued must not keep back the others
                logging.getLogger("chaosguard.lanes").exception("a held-back Event could not be posted")

    @contextlib.asynccontextmanager
    async def routine(self) -> AsyncIterator[None]:
        if self._waiting or not self._may_start():
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # the slot is counted as ours once this resolves (see _let_next_in)
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self.routine_in_flight -= 1  # granted as we were cancelled: hand it on
                    self._let_next_in()
                raise
        else:
            self.routine_in_flight += 1
        try:
            yield
        finally:
            self.routine_in_flight -= 1
            self._let_next_in()

    def _may_start(self) -> bool:
        return self.urgent_pending == 0 and self.routine_in_flight < self.routine_limit

    def _let_next_in(self) -> None:
        while self._waiting and self._may_start():
            turn = self._waiting.popleft()
            if not turn.done():
                self.routine_in_flight += 1
                turn.set_result(None)

    @contextlib.asynccontextmanager
    async def unordered(self) -> AsyncIterator[None]:
        """Neither waits nor holds anything back (a record that an act follows at once)."""
        yield

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Around one status write (from its snapshot to its answer): inside `urgent()`, at most
        URGENT_STATUS_WRITES_IN_FLIGHT of them at once, first come first served (routine ones are few
        already). Never around anything that may write status again."""
        if not in_urgent_lane():
            yield
            return
        async with self._urgent_requests:
            yield

    def for_this_context(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The urgent order inside `urgent()` (an abort and everything it calls), else the routine one."""
        return self.urgent() if in_urgent_lane() else self.routine()


@contextlib.contextmanager
def routine() -> Iterator[None]:
    """Within this block, calls and status writes take the routine lane again, even inside `urgent()`:
    for the part of an abort that may wait (the second write of an end: history, conditions)."""
    token = _urgent.set(False)
    try:
        yield
    finally:
        _urgent.reset(token)
