"""The guard scheduler on its own thread, as the operator builds it (`GuardScheduler.on_own_thread`):
a breach's abort is decided on time while kopf's loop is busy, and the verdict still reaches it.

The guard asks a real HTTP server on loopback that answers as Prometheus does (a server, not
Prometheus, so that the breach appears at one known instant rather than at the next scrape); the
test's own event loop stands for kopf's and is held by CPU-bound callbacks, hundreds of
milliseconds at a time, as kopf's handling of a thousand objects' events holds it."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from chaosguard.api.models import SteadyStateSpec
from chaosguard.clients.prometheus import QueryBatcher
from chaosguard.decisions.slo import GuardState, Verdict
from chaosguard.runtime.guard import STALL_SECONDS, GuardedRun, GuardScheduler, SteadyStateProbe
from chaosguard.runtime.lanes import ApiLanes
from localcluster.prometheus import RecordingServer

INTERVAL = 0.5
HOLD_SECONDS = 0.3  # each CPU-bound callback holds the loop this long
BUSY_SECONDS = 3.0
BREACH_AFTER = 0.7  # into the busy spell: the breach appears while the loop is held
# A tick falls due at most one interval after the breach; its query and judgement take milliseconds
# when nothing holds them. On kopf's loop, every step of a tick (its wake-up, the request, the
# answer, the judgement) waits for the next callback's release: several holds, well over this.
DECISION_BOUND = INTERVAL + 0.5


# Stands for kopf's own context variables (its settings, its Event queue): kopf.event needs them
# wherever the driver applies a verdict.
DAEMON = contextvars.ContextVar[str]("daemon")


def prometheus_answer(value: float) -> tuple[int, str, bytes]:
    vector = {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), str(value)]}]}
    return 200, "application/json", json.dumps({"status": "success", "data": vector}).encode()


def probe(url: str) -> SteadyStateProbe:
    spec = SteadyStateSpec.model_validate(
        {
            "prometheus": {"url": url, "timeout": "2s"},
            "interval": f"{INTERVAL}s",
            "conditions": [{"name": "errors", "query": "error_ratio", "operator": "<", "threshold": 0.05}],
        }
    )
    # No Secrets to read: the lanes are never called. The scheduler asks with its own batcher.
    return SteadyStateProbe(cast(ApiLanes, None), cast(QueryBatcher, None), "shop", spec)


def hold_the_loop(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:  # CPU-bound, holding the GIL as kopf's own work does
        pass


@dataclass
class Observed:
    breach_at: float  # time.monotonic() when the server started answering with the breaching value
    decided_at: float | None  # the BreachFlag's: on the guard's thread, when it judged the breach
    aborting_verdict_at: float  # when the breaching verdict was applied on the busy loop
    worst_loop_lag: float  # how late the busy loop ran a 10 ms timer, at worst
    flag_ahead_of_verdict: bool  # the flag was already up on the busy loop when the aborting verdict arrived


async def busy_loop_meets_a_breach(guard: GuardScheduler, prometheus: RecordingServer) -> Observed:
    applied: list[tuple[float, Verdict]] = []
    flag_when_applied: list[bool] = []  # for each aborting verdict: was the run's flag up when it arrived
    healthy, aborting = asyncio.Event(), asyncio.Event()

    async def on_verdict(verdict: Verdict) -> None:  # the driver's on_guard_verdict: on this loop
        assert DAEMON.get(None) == "shop/guarded", "a verdict must be applied in the context of the run's daemon"
        applied.append((time.monotonic(), verdict))
        if verdict.abort:
            flag_when_applied.append(run.breach.is_set())
        (aborting if verdict.abort else healthy).set()

    run = GuardedRun("shop/guarded", probe(prometheus.url), INTERVAL, GuardState, on_verdict)
    DAEMON.set("shop/guarded")
    guard.add(run)
    await asyncio.wait_for(healthy.wait(), timeout=10)

    busy_until = time.monotonic() + BUSY_SECONDS
    breach_at = 0.0

    async def hold_in_turns() -> None:
        nonlocal breach_at
        started = time.monotonic()
        while time.monotonic() < busy_until:
            if not breach_at and time.monotonic() - started >= BREACH_AFTER:
                prometheus.response = prometheus_answer(0.5)
                breach_at = time.monotonic()
            hold_the_loop(HOLD_SECONDS)
            await asyncio.sleep(0)  # lets one turn of other callbacks in, as kopf's loop does

    async def measure_lag() -> float:
        worst = 0.0
        while time.monotonic() < busy_until:
            asked = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - asked - 0.01)
        return worst

    _, worst_lag = await asyncio.gather(hold_in_turns(), measure_lag())
    await asyncio.wait_for(aborting.wait(), timeout=10)
    aborting_verdict_at = next(at for at, verdict in applied if verdict.abort)
    return Observed(breach_at, run.breach.decided_at, aborting_verdict_at, worst_lag, all(flag_when_applied))


def test_a_busy_kopf_loop_does_not_delay_a_breach_abort_decision() -> None:
    with RecordingServer(response=prometheus_answer(0.01)) as prometheus:
        guard = GuardScheduler.on_own_thread(lambda: datetime.now(UTC))

        async def scenario() -> Observed:
            try:
                return await busy_loop_meets_a_breach(guard, prometheus)
            finally:
                await guard.close()

        observed = asyncio.run(scenario())

    assert observed.breach_at, "the breach never appeared"
    assert observed.decided_at is not None, "the guard never decided the breach"
    decision = observed.decided_at - observed.breach_at
    assert observed.worst_loop_lag >= HOLD_SECONDS * 0.9, f"the loop was not held: lag {observed.worst_loop_lag:.3f}s"
    assert 0 <= decision <= DECISION_BOUND, (
        f"the abort was decided {decision:.3f}s after the breach (at most {DECISION_BOUND}s with a guard of its "
        f"own), while the busy loop ran late by up to {observed.worst_loop_lag:.3f}s"
    )
    # The verdict crossed back: kopf's loop applied it (the driver aborts there), after the decision.
    assert observed.aborting_verdict_at >= observed.decided_at
    # Between the two, the driver's gates (which read the flag) already saw it: no fault could start meanwhile.
    assert observed.flag_ahead_of_verdict, "an aborting verdict reached the driver before the BreachFlag was up"


def test_a_stalled_guard_loop_is_noticed_and_a_recovered_one_is_not() -> None:
    """Something blocking the guard's own loop (what the drivers' gates treat as "nothing would
    see a breach": `guard_stalled` halts the run) shows as `stalled()` once ticks are overdue by
    STALL_SECONDS, and clears once the loop ticks again."""
    with RecordingServer(response=prometheus_answer(0.01)) as prometheus:
        guard = GuardScheduler.on_own_thread(lambda: datetime.now(UTC))
        released = threading.Event()

        async def scenario() -> tuple[bool, bool, bool]:
            ticked = asyncio.Event()

            async def on_verdict(verdict: Verdict) -> None:
                ticked.set()

            try:
                guard.add(GuardedRun("shop/guarded", probe(prometheus.url), INTERVAL, GuardState, on_verdict))
                await asyncio.wait_for(ticked.wait(), timeout=10)
                healthy = guard.stalled()
                loop = guard._guard_loop
                assert loop is not None
                loop.call_soon_threadsafe(released.wait, 30)  # a blocking call on the guard's loop
                noticed = await until(guard.stalled, timeout=STALL_SECONDS + 10)
                released.set()
                recovered = await until(lambda: not guard.stalled(), timeout=10)
                return healthy, noticed, recovered
            finally:
                released.set()
                await guard.close()

        healthy, noticed, recovered = asyncio.run(scenario())
    assert not healthy, "a guard that ticks is not stalled"
    assert noticed, f"a guard loop blocked for over {STALL_SECONDS}s must read as stalled"
    assert recovered, "a guard loop that ticks again must no longer read as stalled"


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
