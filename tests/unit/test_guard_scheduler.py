"""The one guard scheduler for all runs, with Prometheus replaced by a scripted answerer (pure logic:
the real Prometheus is in the integration tests): queries shared, verdicts fanned out, a breach
acted on without waiting for other runs' slow queries, a failing tick judged as no data."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

from chaosguard.api.models import ChaosPolicy, SteadyStateSpec
from chaosguard.clients.prometheus import QueryBatcher, QueryRequest
from chaosguard.decisions.platform_guards import Phase, platform_guards
from chaosguard.decisions.slo import GuardState, QueryOutcome, UnavailableKind, Verdict, ok, unavailable
from chaosguard.decisions.slo import Sample as SloSample
from chaosguard.runtime.guard import GuardedRun, GuardScheduler, SteadyStateProbe
from chaosguard.runtime.lanes import ApiLanes


class ScriptedPrometheus:
    """Answers each query with a value; a query in `held` waits until released."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values
        self.asked: Counter[str] = Counter()
        self.held: dict[str, asyncio.Event] = {}

    async def query(self, request: QueryRequest) -> QueryOutcome:
        self.asked[request.query] += 1
        gate = self.held.get(request.query)
        if gate is not None:
            await gate.wait()
        return ok(SloSample({}, self.values[request.query]))


def probe(prometheus: ScriptedPrometheus, query: str, interval: str = "1s") -> SteadyStateProbe:
    spec = SteadyStateSpec.model_validate(
        {
            "prometheus": {"url": "http://prometheus.test:9090"},
            "interval": interval,
            "conditions": [{"name": "errors", "query": query, "operator": "<", "threshold": 0.05}],
        }
    )
    return SteadyStateProbe(cast(ApiLanes, None), cast(QueryBatcher, prometheus), "shop", spec)


class Verdicts:
    def __init__(self) -> None:
        self.by_run: dict[str, list[Verdict]] = {}
        self.changed = asyncio.Event()

    def run(self, key: str, scheduler_probe: SteadyStateProbe) -> GuardedRun:
        async def on_verdict(verdict: Verdict) -> None:
            self.by_run.setdefault(key, []).append(verdict)
            self.changed.set()

        return GuardedRun(key, scheduler_probe, 1.0, GuardState, on_verdict)

    async def until(self, predicate: Any) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout=10)


def now() -> datetime:
    return datetime.now(UTC)


def test_identical_queries_of_many_runs_are_asked_once_per_tick_and_each_run_gets_its_verdict() -> None:
    async def scenario() -> None:
        prometheus = ScriptedPrometheus({"shared": 0.01, "own": 0.01})
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        for index in range(50):
            scheduler.add(verdicts.run(f"run-{index}", probe(prometheus, "shared")))
        scheduler.add(verdicts.run("loner", probe(prometheus, "own")))
        await verdicts.until(lambda: len(verdicts.by_run) == 51)
        await scheduler.close()
        assert prometheus.asked == Counter({"shared": 1, "own": 1})
        assert all(not v[0].abort for v in verdicts.by_run.values())

    asyncio.run(scenario())


def test_a_breach_is_acted_on_while_another_runs_query_still_hangs() -> None:
    async def scenario() -> None:
        prometheus = ScriptedPrometheus({"breaching": 0.5, "slow": 0.01})
        prometheus.held["slow"] = asyncio.Event()
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        scheduler.add(verdicts.run("slow-run", probe(prometheus, "slow")))
        scheduler.add(verdicts.run("breached", probe(prometheus, "breaching")))
        await verdicts.until(lambda: "breached" in verdicts.by_run)
        assert verdicts.by_run["breached"][0].abort
        assert "slow-run" not in verdicts.by_run  # its query is still out: nobody waited for it
        prometheus.held["slow"].set()
        await verdicts.until(lambda: "slow-run" in verdicts.by_run)
        await scheduler.close()

    asyncio.run(scenario())


def test_a_removed_run_gets_no_more_ticks_and_a_failing_tick_counts_as_no_data() -> None:
    async def scenario() -> None:
        prometheus = ScriptedPrometheus({"fine": 0.01})
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        broken = probe(prometheus, "missing")  # the scripted Prometheus raises KeyError for it
        run = verdicts.run("broken", broken)
        scheduler.add(run)
        await verdicts.until(lambda: "broken" in verdicts.by_run)
        [verdict] = verdicts.by_run["broken"]
        assert verdict.abort and verdict.unavailable  # fail-safe: judged as not queried
        scheduler.remove("broken", run)
        assert "broken" not in scheduler
        await scheduler.close()

    asyncio.run(scenario())


def test_runs_judged_together_fail_alone_a_run_whose_judgement_fails_counts_as_no_data() -> None:
    async def scenario() -> None:
        prometheus = ScriptedPrometheus({"shared": 0.01})
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        broken = probe(prometheus, "shared")
        judge = broken.judge

        def failing_once(outcomes: dict[str, QueryOutcome], state: GuardState, at: datetime) -> Verdict:
            if outcomes:  # the scheduler's own fail-safe judgement (no outcomes) must still work
                raise RuntimeError("a bug in one run's judgement")
            return judge(outcomes, state, at)

        broken.judge = failing_once  # type: ignore[method-assign]
        scheduler.add(verdicts.run("broken", broken))
        scheduler.add(verdicts.run("healthy", probe(prometheus, "shared")))
        await verdicts.until(lambda: "broken" in verdicts.by_run and "healthy" in verdicts.by_run)
        await scheduler.close()
        assert verdicts.by_run["broken"][0].abort and verdicts.by_run["broken"][0].unavailable
        assert not verdicts.by_run["healthy"][0].abort

    asyncio.run(scenario())


def test_an_interval_of_zero_cannot_stop_the_scheduler() -> None:
    async def scenario() -> None:
        prometheus = ScriptedPrometheus({"fine": 0.01})
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        run = verdicts.run("zero", probe(prometheus, "fine"))
        run.interval = 0.0  # the models refuse it; the scheduler must survive it anyway
        scheduler.add(run)
        await verdicts.until(lambda: len(verdicts.by_run.get("zero", [])) >= 3)
        await scheduler.close()

    asyncio.run(scenario())


class RecordingLanes:
    """Stands in for the API lanes: records which Secrets are read, and where."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []

    async def call(self, _function: Any, namespace: str, name: str, _key: str) -> str:
        self.reads.append((namespace, name))
        return "token"


def test_policy_guards_read_their_secrets_in_the_operator_namespace_and_never_the_authors() -> None:
    owners = ChaosPolicy.model_validate(
        {
            "metadata": {"name": "payments"},
            "spec": {
                "steadyState": {
                    "prometheus": {"url": "http://prom.platform:9090", "bearerTokenSecret": {"name": "t", "key": "k"}},
                    "conditions": [{"name": "errors", "query": "q", "operator": "<", "threshold": 1}],
                }
            },
        }
    )
    extra = [g.condition for g in platform_guards([owners], ["shop"]).at(Phase.DURING)]
    lanes = RecordingLanes()
    known = SteadyStateProbe(cast(ApiLanes, lanes), cast(QueryBatcher, None), "shop", None, extra, "chaosguard-system")
    to_ask, _ = asyncio.run(known.requests())
    assert list(to_ask) == ["payments/errors"] and lanes.reads == [("chaosguard-system", "t")]

    unknown = SteadyStateProbe(cast(ApiLanes, lanes), cast(QueryBatcher, None), "shop", None, extra, None)
    to_ask, outcomes = asyncio.run(unknown.requests())
    assert not to_ask and lanes.reads == [("chaosguard-system", "t")]  # nothing read in "shop"
    outcome = outcomes["payments/errors"]
    assert getattr(outcome, "kind", None) is UnavailableKind.INVALID_REQUEST
    assert "CHAOSGUARD_NAMESPACE" in getattr(outcome, "detail", "")


class TimingOutPrometheus(ScriptedPrometheus):
    """Like the real batcher: a query not answered within its endpoint's timeout is unavailable."""

    async def query(self, request: QueryRequest) -> QueryOutcome:
        try:
            return await asyncio.wait_for(super().query(request), timeout=request.endpoint.timeout)
        except TimeoutError:
            return unavailable(UnavailableKind.TIMEOUT, f"no answer within {request.endpoint.timeout}s")


def test_an_authors_slow_endpoint_cannot_hold_back_a_policy_abort_beyond_one_interval() -> None:
    """The author's endpoint allows 10m and `onUnavailable: continue`; the author's query hangs. The
    policy's guard breaches: its abort must come within about one guard interval, not 10 minutes."""

    async def scenario() -> None:
        prometheus = TimingOutPrometheus({"author": 0.01, "owners": 0.5})
        prometheus.held["author"] = asyncio.Event()  # never answered
        spec = SteadyStateSpec.model_validate(
            {
                "prometheus": {"url": "http://prometheus.test:9090", "timeout": "10m"},
                "interval": "10s",
                "onUnavailable": "continue",
                "conditions": [{"name": "errors", "query": "author", "operator": "<", "threshold": 0.05}],
            }
        )
        owners = ChaosPolicy.model_validate(
            {
                "metadata": {"name": "payments"},
                "spec": {
                    "steadyState": {
                        "prometheus": {"url": "http://prom.platform:9090"},
                        "interval": "1s",
                        "conditions": [{"name": "errors", "query": "owners", "operator": "<", "threshold": 0.05}],
                    }
                },
            }
        )
        guards = platform_guards([owners], ["shop"])
        extra = [g.condition for g in guards.at(Phase.DURING)]
        interval = 0.3  # the run's interval: the shorter of the author's and the policy's
        probed = SteadyStateProbe(
            cast(ApiLanes, None), cast(QueryBatcher, prometheus), "shop", spec, extra, None, author_timeout_cap=interval
        )
        scheduler = GuardScheduler(cast(QueryBatcher, prometheus), now)
        verdicts = Verdicts()
        run = verdicts.run("guarded", probed)
        run.interval = interval
        loop = asyncio.get_running_loop()
        started = loop.time()
        scheduler.add(run)
        await verdicts.until(lambda: "guarded" in verdicts.by_run)
        elapsed = loop.time() - started
        await scheduler.close()
        verdict = verdicts.by_run["guarded"][0]
        assert verdict.abort and [b.condition for b in verdict.breaches] == ["payments/errors"]
        assert elapsed < 2 * interval, elapsed  # one interval of waiting for the author, plus slack

    asyncio.run(scenario())
