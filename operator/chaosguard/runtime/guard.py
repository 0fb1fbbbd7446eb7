"""Asks Prometheus about the steady state of every running experiment: one scheduler for all runs.

`SteadyStateProbe` knows one experiment's conditions: it resolves their endpoints (bearer tokens
and CAs from Secrets, read once per run) into query requests, and hands the answers to the pure
`slo.evaluate`. A Secret that cannot be read makes its conditions unavailable, which is an abort
by default.

`GuardScheduler` is the one task that drives every run's guard. Each run has its own interval
and its next tick on the loop's clock. When ticks fall due, the scheduler gathers the due runs'
requests, starts each distinct (endpoint, query) once, and judges each run as soon as *its own*
answers are in, so a breach is acted on without waiting for other runs' slower queries. Every
query is bounded by its endpoint's timeout, so a tick is bounded too. A run whose previous tick is
still being judged (a slow Prometheus, an abort in progress) skips the tick rather than stack up.
Runs with the same interval tick on one shared grid, so that their identical queries go out once.
How late each tick started is measured (`chaosguard_guard_tick_lateness_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from chaosguard.api.models import OnUnavailable, PrometheusEndpoint, SecretKeyRef, SteadyStateCondition, SteadyStateSpec
from chaosguard.clients.kube import Cluster
from chaosguard.clients.prometheus import Endpoint, QueryBatcher, QueryRequest
from chaosguard.decisions.slo import GuardState, QueryOutcome, UnavailableKind, Verdict, evaluate, unavailable
from chaosguard.runtime import metrics
from chaosguard.runtime.lanes import ApiLanes

logger = logging.getLogger("chaosguard.guard")  # a fixed name: log filters select on it

# A tick this close to its time is taken with the ticks due now, so runs that share an interval
# share their queries instead of drifting into separate ticks a few milliseconds apart.
COALESCE_SECONDS = 0.005
MIN_INTERVAL_SECONDS = 0.1  # the models refuse 0; this keeps the grid arithmetic safe whatever comes in


class SteadyStateProbe:
    """One experiment's conditions, ready to be asked: requests out, a verdict back.

    `extra_conditions` are the cluster owners' (ChaosPolicy guards): they carry their own endpoint,
    their Secrets are read in `extra_secrets_namespace` (the operator's, never the author's), and
    their unavailability always aborts, whatever the author's `onUnavailable` says.

    `author_timeout_cap` (seconds), set when policy guards apply to the run: the author's queries are
    asked with a timeout no longer than it (the run's guard interval). The scheduler judges a run
    once all its answers are in, so an author's slow endpoint (`timeout: 10m`) would otherwise hold
    back the owners' verdict; with the cap a policy breach is acted on at most one interval late."""

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
        self._endpoints: dict[tuple[str | None, int, bool], Endpoint | str] = {}
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

    async def requests(self) -> tuple[dict[str, QueryRequest], dict[str, QueryOutcome]]:
        """(condition -> request to send, condition -> outcome already known without asking)."""
        to_ask: dict[str, QueryRequest] = {}
        known: dict[str, QueryOutcome] = {}
        for condition in self.conditions:
            endpoint_spec = condition.prometheus or (self.spec.prometheus if self.spec is not None else None)
            assert endpoint_spec is not None  # the models refuse conditions without an endpoint
            owners = condition.name in self.extra
            namespace = self.extra_secrets_namespace if owners else self.namespace
            endpoint = await self._endpoint(endpoint_spec, namespace, capped=not owners)
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


@dataclass(eq=False)
class GuardedRun:
    """One run under guard. `state` and `on_verdict` belong to the driver: the scheduler only
    reads the state to judge and hands the verdict back."""

    key: str
    probe: SteadyStateProbe
    interval: float
    state: Callable[[], GuardState]
    on_verdict: Callable[[Verdict], Awaitable[None]]
    next_due: float = 0.0
    busy: bool = field(default=False, repr=False)


class GuardScheduler:
    def __init__(self, batcher: QueryBatcher, now: Callable[[], datetime]) -> None:
        self.batcher = batcher
        self.now = now
        self._runs: dict[str, GuardedRun] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._judging: set[asyncio.Task[None]] = set()

    def add(self, run: GuardedRun) -> None:
        """Guards `run` from now on; its first tick is due at once. Replaces a run with the same key."""
        run.next_due = asyncio.get_running_loop().time()
        run.interval = max(run.interval, MIN_INTERVAL_SECONDS)
        self._runs[run.key] = run
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="chaosguard guard scheduler")

    def remove(self, key: str, run: GuardedRun | None = None) -> None:
        """Stops guarding `key` (only if it is still `run`, when given). A tick being judged
        finishes, and its verdict reaches the driver, which knows whether the run still counts."""
        if run is None or self._runs.get(key) is run:
            self._runs.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._runs

    async def close(self) -> None:
        for task in [self._task, *self._judging]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self) -> None:
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
            if not self._runs:
                await self._changed.wait()
                continue
            wake = min(run.next_due for run in self._runs.values())
            delay = wake - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=delay)
                continue  # re-read: runs may have come or gone while waiting
            now = loop.time()
            due = [run for run in self._runs.values() if run.next_due <= now + COALESCE_SECONDS]
            for run in due:
                metrics.GUARD_TICK_LATENESS.observe(max(0.0, now - run.next_due))
                # On a grid shared by every run with this interval, so that their ticks coincide and
                # share queries; no drift, and a tick missed entirely is skipped, never fired late.
                run.next_due = (math.floor(now / run.interval) + 1) * run.interval
            ready = [run for run in due if not run.busy]
            if ready:
                task = asyncio.create_task(self._tick(ready), name="chaosguard guard tick")
                self._judging.add(task)
                task.add_done_callback(self._judging.discard)

    async def _tick(self, runs: list[GuardedRun]) -> None:
        for run in runs:
            run.busy = True
        try:
            asked = await asyncio.gather(*(run.probe.requests() for run in runs), return_exceptions=True)
            answers: dict[QueryRequest, asyncio.Task[QueryOutcome]] = {}
            for result in asked:
                if isinstance(result, BaseException):
                    continue
                for request in result[0].values():
                    if request not in answers:
                        answers[request] = asyncio.ensure_future(self.batcher.query(request))
            metrics.GUARD_TICK_QUERIES.observe(len(answers))
            await asyncio.gather(
                *(self._judge(run, result, answers) for run, result in zip(runs, asked, strict=True)),
                return_exceptions=True,
            )
        finally:
            for run in runs:
                run.busy = False

    async def _judge(
        self,
        run: GuardedRun,
        asked: tuple[dict[str, QueryRequest], dict[str, QueryOutcome]] | BaseException,
        answers: dict[QueryRequest, asyncio.Task[QueryOutcome]],
    ) -> None:
        try:
            if isinstance(asked, BaseException):
                raise asked
            to_ask, outcomes = asked
            names = list(to_ask)
            results = await asyncio.gather(*(answers[to_ask[name]] for name in names))
            outcomes = {**outcomes, **dict(zip(names, results, strict=True))}
            verdict = run.probe.judge(outcomes, run.state(), self.now())
            metrics.GUARD_CHECKS.labels(verdict.kind.value).inc()
            await run.on_verdict(verdict)
        except asyncio.CancelledError:
            raise
        except Exception:  # one run's failure must never stop the others' guards
            logger.exception("the guard tick of %s failed; judging it as not queried", run.key)
            # Fail-safe: a tick that could not be judged counts as no data (an abort, by default).
            await run.on_verdict(run.probe.judge({}, run.state(), self.now()))
