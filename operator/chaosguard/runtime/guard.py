"""Asks Prometheus about the steady state of every running experiment: one scheduler for all runs.

`SteadyStateProbe` knows one experiment's conditions: it resolves their endpoints (bearer tokens
and CAs from Secrets, read once per run) into query requests, and hands the answers to the pure
`slo.evaluate`. A Secret that cannot be read makes its conditions unavailable, which is an abort
by default.

`GuardScheduler` is the one task that drives every run's guard. Each run has its own interval
and its next tick on the loop's clock. When ticks fall due, the scheduler gathers the due runs'
requests, starts each distinct (endpoint, query) once, and judges each run as soon as *its own*
answers are in (the runs that asked the same queries together, in one pass), so a breach is acted on
without waiting for other runs' slower queries. Every
query is bounded by its endpoint's timeout, so a tick is bounded too. A run whose previous tick is
still being judged (a slow Prometheus, an abort in progress) skips the tick rather than stack up.
Runs with the same interval tick on one shared grid of the wall clock (in every replica alike), so that
their identical queries go out once.
How late each tick started is measured (`chaosguard_guard_tick_lateness_seconds`).

In the operator the scheduler has a thread and an event loop of its own (`on_own_thread`), with its
own QueryBatcher: kopf's loop handles every object's events, and at a thousand experiments that
work alone delayed ticks past their interval. So a breach is *decided* on the guard's thread,
whatever kopf's loop is doing: the judgement there is pure (`probe.judge`), and a breaching verdict
raises the run's `BreachFlag` at once, which the driver's gates read, so no fault starts for it
from that moment. The verdict then crosses to kopf's loop (one `call_soon_threadsafe` for all the
verdicts of a turn of the guard's loop), where the
driver applies it (status, the abort): one at a time per run and in order, while the next tick goes
on without waiting for it (it judges the state the verdict leaves). The lateness
histogram is now taken on the guard's loop; how long verdicts wait for kopf's loop is
`chaosguard_guard_verdict_handover_seconds`. Should the guard's loop stop altogether, `stalled`
says so and the drivers start no fault (fault deadlines in the pods still end what is in).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from chaosguard.api.models import OnUnavailable, PrometheusEndpoint, SecretKeyRef, SteadyStateCondition, SteadyStateSpec
from chaosguard.clients.kube import Cluster
from chaosguard.clients.prometheus import Endpoint, QueryBatcher, QueryRequest
from chaosguard.decisions.slo import GuardState, QueryOutcome, UnavailableKind, Verdict, evaluate, unavailable
from chaosguard.runtime import metrics
from chaosguard.runtime.lanes import ApiLanes

Asked = tuple[dict[str, QueryRequest], dict[str, QueryOutcome]]  # (condition -> request, condition -> known)

logger = logging.getLogger("chaosguard.guard")  # a fixed name: log filters select on it

# A tick this close to its time is taken with the ticks due now, so runs that share an interval
# share their queries instead of drifting into separate ticks a few milliseconds apart.
COALESCE_SECONDS = 0.005
MIN_INTERVAL_SECONDS = 0.1  # the models refuse 0; this keeps the grid arithmetic safe whatever comes in
# Ticks this overdue mean the guard's loop has stopped, not that it is busy: a busy loop still
# wakes and moves every run's next tick on (skipping ticks), so this is far beyond any lateness seen.
STALL_SECONDS = 5.0


class SteadyStateProbe:
    """One experiment's conditions, ready to be asked: requests out, a verdict back.

    `extra_conditions` are the cluster owners' (ChaosPolicy guards): they carry their own endpoint,
    their Secrets are read in `extra_secrets_namespace` (the operator's, never the author's), and
    their unavailability always aborts, whatever the author's `onUnavailable` says.

    `author_timeout_cap` (seconds), set when policy guards apply to the run: the author's queries are
    asked with a timeout no longer than it (the run's guard interval). The scheduler judges a run
    once all its answers are in, so an author's slow endpoint (`timeout: 10m`) would otherwise hold
    back the owners' verdict; with the cap a policy breach is acted on at most one interval late.

    A run's guard probe asks `requests` on the guard's thread: Secrets are read through `ApiLanes`
    (thread pools, awaitable from any loop), and its endpoint cache is only ever touched there, one
    tick at a time (a busy run skips ticks); the before- and after-checks build probes of their own."""

    def __init__(
        self,
        api: ApiLanes,
        batcher: QueryBatcher,
        namespace: str,
        spec: SteadyStateSpec | None,
        extra_conditions: Sequence[SteadyStateCondition] = (),
        extra_secrets_namespace: str | None = None,
        author_timeout_cap: float | None = None,
    ) -> None:
        self.api = api
        self.batcher = batcher
        self.namespace = namespace
        self.spec = spec
        self.conditions = [*(spec.conditions if spec is not None else ()), *extra_conditions]
        self.extra = frozenset(condition.name for condition in extra_conditions)
        self.extra_secrets_namespace = extra_secrets_namespace  # None: unknown, so such Secrets are not read
        self._endpoints: dict[tuple[str | None, int, bool], Endpoint] = {}
        self.author_timeout_cap = author_timeout_cap if self.extra else None

    @property
    def on_unavailable(self) -> OnUnavailable:
        return self.spec.on_unavailable if self.spec is not None else OnUnavailable.ABORT

    async def _secret(self, namespace: str | None, ref: SecretKeyRef | None) -> str | None:
        if ref is None or namespace is None:
            return None
        return await self.api.call(Cluster.secret_value, namespace, ref.name, ref.key)

    async def _endpoint(self, spec: PrometheusEndpoint, namespace: str | None, capped: bool) -> Endpoint | str:
        """The endpoint (its timeout capped at `author_timeout_cap` when `capped`), or a reason it
        cannot be used (a Secret that cannot be read)."""
        if namespace is None and (spec.bearer_token_secret or spec.ca_secret):
            # Never the author's namespace instead: the owners' credentials are theirs alone.
            return (
                f"the ChaosPolicy credentials for {spec.url} live in the operator's namespace, which this "
                "operator does not know: set CHAOSGUARD_NAMESPACE"
            )
        # By identity: the probe's conditions hold their endpoint specs for its whole life, and this
        # runs on every tick of every run, so no serialising here.
        key = (namespace, id(spec), capped)
        if key not in self._endpoints:
            try:
                token = await self._secret(namespace, spec.bearer_token_secret)
                ca = await self._secret(namespace, spec.ca_secret)
                endpoint = Endpoint.from_spec(spec, bearer_token=token, ca=ca)
                cap = self.author_timeout_cap
                if capped and cap is not None and endpoint.timeout > cap:
                    endpoint = dataclasses.replace(endpoint, timeout=cap)
                self._endpoints[key] = endpoint
            except Exception as error:  # a missing Secret must not crash the guard: it is "unavailable"
                return f"cannot read the Prometheus credentials for {spec.url} in namespace {namespace}: {error}"
        return self._endpoints[key]

    def _where(self, condition: SteadyStateCondition) -> tuple[PrometheusEndpoint, str | None, bool]:
        """The condition's endpoint, the namespace of its Secrets, and whether its timeout is capped."""
        endpoint_spec = condition.prometheus or (self.spec.prometheus if self.spec is not None else None)
        assert endpoint_spec is not None  # the models refuse conditions without an endpoint
        owners = condition.name in self.extra
        return endpoint_spec, self.extra_secrets_namespace if owners else self.namespace, not owners

    def ready_requests(self) -> tuple[dict[str, QueryRequest], dict[str, QueryOutcome]] | None:
        """What `requests` answers, without awaiting anything, once every endpoint has been resolved (from
        the first tick on); None before. A thousand runs ask on every tick: no coroutine each."""
        to_ask: dict[str, QueryRequest] = {}
        for condition in self.conditions:
            endpoint_spec, namespace, capped = self._where(condition)
            endpoint = self._endpoints.get((namespace, id(endpoint_spec), capped))
            if endpoint is None:
                return None
            to_ask[condition.name] = QueryRequest(endpoint, condition.query)
        return to_ask, {}

    async def requests(self) -> tuple[dict[str, QueryRequest], dict[str, QueryOutcome]]:
        """(condition -> request to send, condition -> outcome already known without asking)."""
        ready = self.ready_requests()
        if ready is not None:
            return ready
        to_ask: dict[str, QueryRequest] = {}
        known: dict[str, QueryOutcome] = {}
        for condition in self.conditions:
            endpoint_spec, namespace, capped = self._where(condition)
            endpoint = await self._endpoint(endpoint_spec, namespace, capped=capped)
            if isinstance(endpoint, str):
                known[condition.name] = unavailable(UnavailableKind.INVALID_REQUEST, endpoint)
            else:
                to_ask[condition.name] = QueryRequest(endpoint, condition.query)
        return to_ask, known

    def judge(self, outcomes: dict[str, QueryOutcome], state: GuardState, now: datetime) -> Verdict:
        return evaluate(self.conditions, outcomes, state, now, self.on_unavailable, self.extra)

    async def check(self, state: GuardState, now: datetime) -> Verdict:
        """One check on its own (the before- and after-checks); identical queries in flight are shared."""
        to_ask, outcomes = await self.requests()
        names = list(to_ask)
        answers = await self.batcher.query_many([to_ask[name] for name in names])
        outcomes.update(zip(names, answers, strict=True))
        return self.judge(outcomes, state, now)


class BreachFlag:
    """Raised on the guard's thread the moment it judges a run in breach, before the verdict crosses
    to the driver's loop. The driver's gates read it next to `abort_requested`, so no fault starts for
    the run however late that loop gets round to the abort. One per run (`DriverBase.breach_flag`):
    a guard replaced mid-run (the policies' guards changed) keeps the run's flag."""

    def __init__(self) -> None:
        self._event = threading.Event()  # set on the guard's thread, read on the driver's
        self.decided_at: float | None = None  # time.monotonic() of the decision, on the guard's thread

    def raise_for_breach(self) -> None:
        if not self._event.is_set():
            self.decided_at = time.monotonic()  # written before the event: whoever sees it set sees this
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass(eq=False)
class GuardedRun:
    """One run under guard. `state` and `on_verdict` belong to the driver and are only ever called
    on the loop that added the run (`home`, kopf's): the scheduler judges each tick against
    `judged_state`, the state the previous verdict left (or `state()` as it was when the run was
    added, or when the latest verdict had been applied there), so the guard's thread never reads the
    driver's status while kopf's loop changes it."""

    key: str
    probe: SteadyStateProbe
    interval: float
    state: Callable[[], GuardState]
    on_verdict: Callable[[Verdict], Awaitable[None]]
    breach: BreachFlag = field(default_factory=BreachFlag, repr=False)
    next_due: float = 0.0
    busy: bool = field(default=False, repr=False)
    judged_state: GuardState = field(default_factory=GuardState, repr=False)
    home: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    context: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)
    # Across threads (see GuardScheduler._hand_over), under the scheduler's lock: verdicts judged so
    # far, the newest one not yet applied on kopf's loop (number, verdict, when judged), whether a
    # task there is applying the run's verdicts, and whether an abort was among them.
    judged: int = field(default=0, repr=False)
    unsent: tuple[int, Verdict, float] | None = field(default=None, repr=False)
    applying: bool = field(default=False, repr=False)
    abort_handed: bool = field(default=False, repr=False)


class GuardScheduler:
    """See the module docstring. `on_own_thread` (the operator) ticks on a thread and loop of its own;
    a scheduler built directly ticks on the loop of its first `add` (tests, benches of one loop)."""

    def __init__(self, batcher: QueryBatcher, now: Callable[[], datetime]) -> None:
        self.batcher = batcher
        self.now = now
        # add/remove/in come from kopf's loop while the guard's loop ticks: the table of runs and the
        # earliest wake-up are shared between the two threads, under this lock (held for dict work only,
        # never across an await, so neither loop ever waits on the other for long).
        self._lock = threading.Lock()
        self._runs: dict[str, GuardedRun] = {}
        self._wake_at = math.inf  # loop time the scheduler must next run by (see `stalled`)
        self._stall_reported = False
        self._guard_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._changed = asyncio.Event()  # only ever touched on the guard's loop
        self._task: asyncio.Task[None] | None = None
        self._judging: set[asyncio.Task[None]] = set()
        # Runs whose verdicts wait to cross to their home loop, gathered over one turn of the guard's
        # loop so that one wake-up of kopf's loop carries them all (guard's loop only).
        self._outbox: dict[asyncio.AbstractEventLoop, list[GuardedRun]] = {}
        self._applying: set[asyncio.Task[None]] = set()  # on the home loop (kopf's) only

    @classmethod
    def on_own_thread(cls, now: Callable[[], datetime]) -> GuardScheduler:
        """The operator's scheduler: its own thread, event loop and QueryBatcher (aiohttp sessions
        belong to one loop), so that kopf's handling of every object's events never delays a tick."""
        scheduler = cls(QueryBatcher(), now)
        started = threading.Event()
        scheduler._thread = threading.Thread(
            target=scheduler._serve, args=(started,), name="chaosguard-guard", daemon=True
        )
        scheduler._thread.start()
        started.wait()
        return scheduler

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._guard_loop = loop
        self._task = loop.create_task(self._run_forever(), name="chaosguard guard scheduler")
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def add(self, run: GuardedRun) -> None:
        """Guards `run` from now on; its first tick is due at once. Replaces a run with the same key.
        Call it on the driver's loop: its verdicts are applied there."""
        run.home, run.context = asyncio.get_running_loop(), contextvars.copy_context()
        run.judged_state = run.state()
        run.interval = max(run.interval, MIN_INTERVAL_SECONDS)
        with self._lock:
            if self._thread is None and (self._task is None or self._task.done()):
                # No thread of its own: it ticks on this loop from now on (again, after a close).
                self._guard_loop, self._changed = run.home, asyncio.Event()
                self._task = asyncio.create_task(self._run_forever(), name="chaosguard guard scheduler")
            loop = self._guard_loop
            assert loop is not None
            run.next_due = loop.time()
            self._runs[run.key] = run
            self._wake_at = min(self._wake_at, run.next_due)
        with contextlib.suppress(RuntimeError):  # a guard loop that died: `stalled` says so, the gates hold
            loop.call_soon_threadsafe(self._changed.set)

    def remove(self, key: str, run: GuardedRun | None = None) -> None:
        """Stops guarding `key` (only if it is still `run`, when given). A tick being judged
        finishes, and its verdict reaches the driver, which knows whether the run still counts."""
        with self._lock:
            if run is None or self._runs.get(key) is run:
                self._runs.pop(key, None)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._runs

    def guarded_count(self) -> int:
        """How many runs are guarded now."""
        with self._lock:
            return len(self._runs)

    def stalled(self) -> bool:
        """Whether ticks are overdue by more than STALL_SECONDS: the guard's loop has stopped (a dead
        thread, a blocking call on it). The drivers then start no fault: nothing would notice a breach."""
        with self._lock:
            wake_at, loop = self._wake_at, self._guard_loop
        overdue = loop.time() - wake_at if loop is not None else 0.0  # loop.time() is monotonic: any thread
        stalled = overdue > STALL_SECONDS
        if stalled and not self._stall_reported:
            logger.error("the guard's loop has not ticked for %.1fs: no fault starts until it does", overdue)
        self._stall_reported = stalled
        return stalled

    async def close(self) -> None:
        loop = self._guard_loop
        if self._thread is None or loop is None:
            await self._cancel_tasks()
            return
        if self._thread.is_alive():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close_here(), loop))
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(self._thread.join)

    async def _close_here(self) -> None:
        await self._cancel_tasks()
        # The queries still in flight (the batcher's own tasks) end with the loop, quietly.
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self.batcher.aclose()  # its sessions belong to this loop

    async def _cancel_tasks(self) -> None:
        for task in [self._task, *self._judging]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._schedule()
            except asyncio.CancelledError:
                raise
            except Exception:  # the guards of every run depend on this loop: it must go on
                logger.exception("the guard scheduler failed; it starts over")
                await asyncio.sleep(0.1)  # a bug that repeats must not spin a core

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            with self._lock:
                runs = list(self._runs.values())
                wake = min((run.next_due for run in runs), default=math.inf)
                self._wake_at = wake
            if not runs:
                await self._changed.wait()
                continue
            delay = wake - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
                continue  # re-read: runs may have come or gone while waiting
            now = loop.time()
            wall = time.time() - now  # the wall clock's offset from the loop's
            due = [run for run in runs if run.next_due <= now + COALESCE_SECONDS]
            for run in due:
                metrics.GUARD_TICK_LATENESS.observe(max(0.0, now - run.next_due))
                # On a grid of the wall clock, shared by every run with this interval, so that their ticks
                # coincide and share queries; no drift, and a tick missed entirely is skipped, never fired
                # late. The wall clock, not the loop's: every replica, on whatever node, ticks at the same
                # moments, so a standby judges a breach when the leader does, and its grace for the leader
                # (decisions.standby) starts from the leader's own tick, not up to an interval before it.
                run.next_due = (math.floor((now + wall) / run.interval) + 1) * run.interval - wall
            ready = [run for run in due if not run.busy]
            if ready:
                task = asyncio.create_task(self._tick(ready), name="chaosguard guard tick")
                self._judging.add(task)
                task.add_done_callback(self._judging.discard)

    async def _tick(self, runs: list[GuardedRun]) -> None:
        for run in runs:
            run.busy = True
        try:
            asked: list[Asked | BaseException | None] = [run.probe.ready_requests() for run in runs]
            unresolved = [index for index, requests in enumerate(asked) if requests is None]
            if unresolved:  # a first tick: endpoints to resolve, Secrets to read
                found = await asyncio.gather(*(runs[i].probe.requests() for i in unresolved), return_exceptions=True)
                for index, resolved in zip(unresolved, found, strict=True):
                    asked[index] = resolved
            answers: dict[QueryRequest, asyncio.Future[QueryOutcome]] = {}
            # Runs that ask the same queries are judged together, once those answers are in: at a thousand
            # runs sharing fifty queries, fifty waits per tick instead of a task and a wait for every run.
            alike: dict[tuple[QueryRequest, ...], list[tuple[GuardedRun, Asked | BaseException]]] = {}
            for run, requests in zip(runs, asked, strict=True):
                assert requests is not None
                wanted = tuple(requests[0].values()) if not isinstance(requests, BaseException) else ()
                for request in wanted:
                    if request not in answers:
                        answers[request] = asyncio.ensure_future(self.batcher.query(request))
                alike.setdefault(wanted, []).append((run, requests))
            metrics.GUARD_TICK_QUERIES.observe(len(answers))
            await asyncio.gather(
                *(self._judge(wanted, members, answers) for wanted, members in alike.items()),
                return_exceptions=True,
            )
        finally:
            for run in runs:
                run.busy = False

    async def _judge(
        self,
        wanted: tuple[QueryRequest, ...],
        members: list[tuple[GuardedRun, Asked | BaseException]],
        answers: dict[QueryRequest, asyncio.Future[QueryOutcome]],
    ) -> None:
        """Judges the runs that asked `wanted` as soon as its answers are in, each on its own: one run's
        failure must never stop the others' guards."""
        got = await asyncio.gather(*(answers[request] for request in wanted), return_exceptions=True)
        failed = next((answer for answer in got if isinstance(answer, BaseException)), None)
        answered = dict(zip(wanted, got, strict=True))
        now = self.now()
        applying: list[Awaitable[None]] = []
        for run, asked in members:
            try:
                if isinstance(asked, BaseException):
                    raise asked
                if failed is not None:
                    raise failed
                to_ask, known = asked
                outcomes = {
                    **known,
                    **{name: cast(QueryOutcome, answered[request]) for name, request in to_ask.items()},
                }
                verdict = run.probe.judge(outcomes, run.judged_state, now)
                metrics.GUARD_CHECKS.labels(verdict.kind.value).inc()
            except Exception:
                logger.exception("the guard tick of %s failed; judging it as not queried", run.key)
                # Fail-safe: a tick that could not be judged counts as no data (an abort, by default).
                verdict = run.probe.judge({}, run.judged_state, self.now())
            handed = self._hand_over(run, verdict)
            if handed is not None:
                applying.append(handed)
        await asyncio.gather(*applying, return_exceptions=True)

    def _hand_over(self, run: GuardedRun, verdict: Verdict) -> Awaitable[None] | None:
        """Gets `verdict` applied on the run's home loop. On this loop (no thread of its own) it is applied
        before the tick ends, so the run stays busy meanwhile: the task doing it is returned for the tick to
        wait for. Across threads the tick does not wait (None):
        a busy kopf loop must not hold back the next tick's decision (a run kept busy until its verdict
        was applied there would skip ticks for as long as that loop lags). The next tick judges the
        state this verdict leaves (`verdict.state`); `_flush` takes the verdicts over, `_apply_in_order`
        applies them there in order."""
        if verdict.abort:
            run.breach.raise_for_breach()  # before kopf's loop hears of it: from now on no fault starts
        home = run.home
        if home is None or home is asyncio.get_running_loop():
            return asyncio.ensure_future(self._apply_here(run, verdict))
        with self._lock:
            run.judged_state = verdict.state
            run.judged += 1
            if run.abort_handed:
                return None  # the run is being aborted: nothing judged after that needs to reach the driver
            run.abort_handed = verdict.abort
            # The newest verdict replaces one still waiting for kopf's loop: a loop that slow thins the
            # samples rather than queue an ever longer backlog (an abort replaces anything, and stays).
            run.unsent = (run.judged, verdict, time.monotonic())
            if run.applying:
                return None  # the task applying the run's verdicts takes this one next
            run.applying = True
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.setdefault(home, []).append(run)
        return None

    async def _apply_here(self, run: GuardedRun, verdict: Verdict) -> None:
        try:
            run.judged_state = await self._apply(run, verdict, time.monotonic())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("applying a guard verdict of %s failed", run.key)

    def _flush(self) -> None:
        """Hands every run with a verdict waiting to its home loop: one cross-thread call for all the
        verdicts judged in one turn of the guard's loop (a thousand runs share fifty answers), where a
        call and a future per verdict cost the guard's thread a third of its time."""
        outbox, self._outbox = self._outbox, {}
        for home, runs in outbox.items():
            with contextlib.suppress(RuntimeError):  # kopf's loop is closed: the operator is exiting
                home.call_soon_threadsafe(self._start_applying, runs)

    def _start_applying(self, runs: list[GuardedRun]) -> None:
        for run in runs:
            # In the context the run was added from (the driver's kopf daemon): kopf.event and the
            # driver's log lines read their context variables. On kopf's loop, so closing the guard's
            # loop never cancels an abort half-way.
            task = asyncio.get_running_loop().create_task(
                self._apply_in_order(run), name=f"chaosguard guard verdicts {run.key}", context=run.context.copy()
            )
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)

    async def _apply_in_order(self, run: GuardedRun) -> None:
        """Applies `run`'s verdicts on its home loop one at a time (never two of a run at once), and takes
        up the state the driver holds once one is applied (a standby may have taken up the leader's
        meanwhile), unless a newer verdict was judged in the meantime."""
        while True:
            with self._lock:
                taken, run.unsent = run.unsent, None
                if taken is None:
                    run.applying = False
                    return
            number, verdict, judged_at = taken
            try:
                state = await self._apply(run, verdict, judged_at)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("applying a guard verdict of %s failed", run.key)
                if verdict.abort:
                    with self._lock:
                        run.abort_handed = False  # the next breaching tick tries the abort again
                continue
            with self._lock:
                if number == run.judged:
                    run.judged_state = state

    @staticmethod
    async def _apply(run: GuardedRun, verdict: Verdict, judged_at: float) -> GuardState:
        metrics.GUARD_VERDICT_HANDOVER.observe(time.monotonic() - judged_at)
        await run.on_verdict(verdict)
        return run.state()
