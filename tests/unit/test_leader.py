"""Leader election without a cluster: the pure decision (`decide`, `observe`, `renewal_overdue`), the
timings' validation, the Lease spec's wire format, and the elector's rounds against an in-memory Lease
with the API server's optimistic concurrency (a write with a stale resourceVersion is a conflict)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosguard.runtime.leader import (
    EXIT_LOST_LEASE,
    ElectionConfig,
    LeaderElector,
    LeaseConflict,
    LeaseLost,
    LeaseRecord,
    Observation,
    Verdict,
    campaign,
    decide,
    observe,
    record_from_spec,
    released,
    renewal_overdue,
    spec_from_record,
)
from chaosguard.runtime.leadership import Leadership, NotLeading
from chaosguard.runtime.runner import election_config

WALL = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
CONFIG = ElectionConfig(namespace="chaosguard-system", identity="me")


def held_by(holder: str, transitions: int = 4) -> LeaseRecord:
    return LeaseRecord(holder, 15, WALL - timedelta(minutes=5), WALL - timedelta(seconds=1), transitions)


# --------------------------------------------------------------------------- decide


def test_no_lease_is_created_held_by_us() -> None:
    decision = decide(None, "me", CONFIG, 100.0, WALL)
    assert decision.verdict is Verdict.CREATE
    assert decision.write == LeaseRecord("me", 15, WALL, WALL, 0)
    assert decision.holder == "me"


def test_our_own_lease_is_renewed_keeping_its_acquire_time_and_transitions() -> None:
    current = held_by("me")
    decision = decide(Observation(current, 0.0), "me", CONFIG, 1000.0, WALL)  # however long ago we saw it
    assert decision.verdict is Verdict.RENEW
    assert decision.write == LeaseRecord("me", 15, current.acquire_time, WALL, 4)


def test_a_lease_held_by_another_is_left_alone_until_it_has_been_unchanged_for_its_duration() -> None:
    seen = Observation(held_by("other"), 100.0)
    waiting = decide(seen, "me", CONFIG, 114.9, WALL)
    assert waiting.verdict is Verdict.WAIT and waiting.write is None
    assert waiting.holder == "other"
    assert waiting.wait == pytest.approx(0.1)
    taking = decide(seen, "me", CONFIG, 115.0, WALL)
    assert taking.verdict is Verdict.TAKE
    assert taking.write == LeaseRecord("me", 15, WALL, WALL, 5)  # one more transition
    assert "other has not renewed" in taking.reason


def test_the_holders_own_lease_duration_counts_not_ours() -> None:
    seen = Observation(LeaseRecord("other", 40, WALL, WALL, 0), 100.0)
    assert decide(seen, "me", CONFIG, 130.0, WALL).verdict is Verdict.WAIT
    assert decide(seen, "me", CONFIG, 140.0, WALL).verdict is Verdict.TAKE


def test_the_renew_time_written_by_another_clock_is_never_trusted() -> None:
    # The holder's clock may be ahead or behind: a renewTime far in the past means nothing until the
    # record has stayed unchanged for a lease duration on our own clock.
    stale = LeaseRecord("other", 15, WALL - timedelta(days=1), WALL - timedelta(days=1), 2)
    assert decide(Observation(stale, 100.0), "me", CONFIG, 100.5, WALL).verdict is Verdict.WAIT


def test_a_released_lease_is_taken_at_once() -> None:
    free = released(held_by("other"), WALL)
    assert free.holder == "" and free.duration_seconds == 1 and free.transitions == 4
    decision = decide(Observation(free, 100.0), "me", CONFIG, 100.0, WALL)
    assert decision.verdict is Verdict.TAKE
    assert decision.write is not None and decision.write.transitions == 5


def test_observe_restarts_the_clock_only_when_the_record_changes() -> None:
    first = observe(None, held_by("other"), 10.0)
    assert observe(first, held_by("other"), 20.0) is first
    renewed = LeaseRecord("other", 15, held_by("other").acquire_time, WALL, 4)
    assert observe(first, renewed, 20.0) == Observation(renewed, 20.0)
    rewritten = observe(first, held_by("other"), 30.0, version="8")  # the same fields, written again
    assert rewritten == Observation(held_by("other"), 30.0, "8")


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=400_000),
    st.integers(min_value=1, max_value=300),
    st.booleans(),
)
def test_a_held_lease_is_never_taken_before_its_duration_has_passed_on_our_clock(
    seen_at: int, elapsed_ms: int, duration: int, holder_present: bool
) -> None:
    elapsed = elapsed_ms / 1000
    record = LeaseRecord("other" if holder_present else "", duration, WALL, WALL, 1)
    decision = decide(Observation(record, seen_at), "me", CONFIG, seen_at + elapsed, WALL)
    if holder_present and elapsed < duration:
        assert decision.verdict is Verdict.WAIT and decision.write is None
    else:
        assert decision.verdict is Verdict.TAKE and decision.holder == "me"


def test_renewal_is_overdue_at_the_renew_deadline() -> None:
    assert not renewal_overdue(100.0, 109.99, CONFIG)
    assert renewal_overdue(100.0, 110.0, CONFIG)


# --------------------------------------------------------------------------- timings and options


def test_the_default_timings_are_safe() -> None:
    assert CONFIG.problems() == []
    assert (CONFIG.lease_duration, CONFIG.renew_deadline, CONFIG.renew_period, CONFIG.retry_period) == (15, 10, 5, 2)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"renew_deadline": 15.0}, "must be shorter than the lease duration"),
        ({"renew_period": 10.0}, "shorter than the renew deadline"),
        ({"retry_period": 0.0}, "must be > 0"),
        ({"lease_duration": 7.5, "renew_deadline": 5.0, "renew_period": 2.0}, "whole number"),
        ({"namespace": ""}, "needs a namespace"),
    ],
)
def test_unsafe_timings_are_refused_with_the_flag_named(changes: dict[str, object], problem: str) -> None:
    config = ElectionConfig(**{"namespace": "ns", "identity": "me", **changes})  # type: ignore[arg-type]
    problems = config.problems()
    assert len(problems) == 1 and problem in problems[0], problems
    assert "--leader-election" in problems[0] or "namespace" in problems[0]


def test_run_options_become_the_election_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from chaosguard.cli.main import build_parser

    monkeypatch.setenv("CHAOSGUARD_NAMESPACE", "ops")
    args = build_parser().parse_args(["run", "--leader-elect", "--leader-election-lease-duration", "6"])
    config = election_config(args)
    assert args.leader_elect and args.log_format == "text"
    assert config.namespace == "ops" and config.lease_duration == 6 and config.name == "chaosguard-leader"
    assert config.identity  # hostname_suffix
    assert config.problems() == [
        "--leader-election-renew-deadline 10 must be shorter than the lease duration 6: "
        "a leader must stop before a standby may take over"
    ]
    defaults = build_parser().parse_args(["run"])
    assert not defaults.leader_elect  # off for local runs and tests


# --------------------------------------------------------------------------- the wire format


def test_the_lease_spec_round_trips_with_microsecond_times() -> None:
    record = LeaseRecord("me", 15, WALL, WALL.replace(microsecond=0), 3)
    spec = spec_from_record(record)
    # MicroTime wants exactly six fractional digits, even when they are all zero.
    assert spec["renewTime"] == "2026-11-22T10:00:00.000000Z"
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-22T10:00:00.000000Z",
        "renewTime": "2026-11-22T10:00:00.000000Z",
        "leaseTransitions": 3,
    }
    assert record_from_spec(spec) == record
    assert record_from_spec({}) == LeaseRecord()


# --------------------------------------------------------------------------- the elector's rounds


class MemoryLease:
    """One Lease with the API server's concurrency rule: a write must carry the version it read."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.timeout = 1.0
        self.fail = False

    def read(self) -> tuple[LeaseRecord | None, str | None]:
        if self.fail:
            raise ConnectionError("the API server is away")
        return self.record, (str(self.version) if self.record else None)

    def write(self, record: LeaseRecord, resource_version: str | None) -> str:
        if self.fail:
            raise ConnectionError("the API server is away")
        if resource_version != (str(self.version) if self.record else None):
            raise LeaseConflict("stale")
        self.record, self.version = record, self.version + 1
        return str(self.version)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(lease: MemoryLease, clock: Clock, identity: str) -> LeaderElector:
    config = ElectionConfig(namespace="ns", identity=identity)
    return LeaderElector(lease, config, monotonic=clock, wall=lambda: WALL)  # type: ignore[arg-type]


def test_two_candidates_one_leader_and_a_takeover_after_the_lease_duration() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")

    async def scenario() -> None:
        assert (await a.attempt()).verdict is Verdict.CREATE
        assert (await b.attempt()).verdict is Verdict.WAIT
        assert b.holder == "a" and b.healthy()  # a healthy standby is ready
        clock.now += 5
        assert (await a.attempt()).verdict is Verdict.RENEW  # a renews (its renewTime is the same: a new version)
        clock.now += 14
        assert (await b.attempt()).verdict is Verdict.WAIT  # b sees the renewal only now, 19 s after its first look
        clock.now += 14.9
        assert (await b.attempt()).verdict is Verdict.WAIT  # counted from when b saw it: not yet
        clock.now += 0.1
        taken = await b.attempt()
        assert taken.verdict is Verdict.TAKE and lease.record is not None
        assert lease.record.holder == "b" and lease.record.transitions == 1

    asyncio.run(scenario())


def test_a_write_with_a_stale_version_loses() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")
    lease.record, lease.version = released(held_by("old"), WALL), 7

    async def scenario() -> None:
        # Both read the free lease; a writes first; b's write carries the version both read.
        _, version = lease.read()
        assert (await a.attempt()).verdict is Verdict.TAKE
        with pytest.raises(LeaseConflict):
            lease.write(LeaseRecord("b", 15, WALL, WALL, 5), version)
        assert (await b.attempt()).verdict is Verdict.WAIT
        assert lease.record is not None and lease.record.holder == "a"

    asyncio.run(scenario())


def test_the_leader_gives_up_when_another_holds_the_lease() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    a.config = ElectionConfig(namespace="ns", identity="a", renew_period=0.01, renew_deadline=10.0)

    async def scenario() -> None:
        assert await a.acquire(asyncio.Event())
        lease.record = LeaseRecord("intruder", 15, WALL, WALL, 9)
        lease.version += 1
        with pytest.raises(LeaseLost, match="held by intruder"):
            await a.hold()
        assert not a.leading

    asyncio.run(scenario())


def test_the_leader_gives_up_at_the_renew_deadline_when_the_api_server_is_away() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    a.config = ElectionConfig(
        namespace="ns", identity="a", lease_duration=2, renew_deadline=0.3, renew_period=0.05, retry_period=0.05
    )

    async def scenario() -> None:
        a.monotonic = asyncio.get_running_loop().time
        assert await a.acquire(asyncio.Event())
        lease.fail = True
        renewed = a.last_renewal  # the deadline counts from the last successful renewal
        assert renewed is not None
        with pytest.raises(LeaseLost, match=r"within 0.3 s"):
            await a.hold()
        assert 0.3 <= a.monotonic() - renewed < 1.0
        assert a.alive()  # the loop went round until the end

    asyncio.run(scenario())


def test_release_empties_the_holder_only_if_we_hold_it() -> None:
    lease, clock = MemoryLease(), Clock()
    a, b = elector(lease, clock, "a"), elector(lease, clock, "b")

    async def scenario() -> None:
        await a.attempt()
        await b.release()  # not b's to release
        assert lease.record is not None and lease.record.holder == "a"
        await a.release()
        assert lease.record.holder == "" and lease.record.duration_seconds == 1
        assert (await b.attempt()).verdict is Verdict.TAKE  # at once

    asyncio.run(scenario())


# --------------------------------------------------------------------------- leading beside kopf


def test_the_campaign_leads_then_steps_down_only_after_the_action_in_flight_returned() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    leadership = Leadership()

    async def scenario() -> None:
        stopping = asyncio.Event()
        campaign_task = asyncio.create_task(campaign(a, leadership, stopping))
        while not leadership.leading:
            await asyncio.sleep(0)
        assert leadership.since == WALL
        action_may_end = asyncio.Event()

        async def eviction() -> None:
            async with leadership.acting():
                await action_may_end.wait()

        evicting = asyncio.create_task(eviction())
        await asyncio.sleep(0)
        stopping.set()
        for _ in range(20):
            await asyncio.sleep(0)
        # No longer leading (nothing new starts), but the Lease is held until the eviction returned.
        assert not leadership.leading and lease.record is not None and lease.record.holder == "a"
        with pytest.raises(NotLeading):
            async with leadership.acting():
                pass
        action_may_end.set()
        await evicting
        await campaign_task
        assert lease.record.holder == ""  # released: a standby leads at once

    asyncio.run(scenario())


def test_a_campaign_that_loses_the_lease_stops_leading_and_exits_at_once() -> None:
    lease, clock = MemoryLease(), Clock()
    a = elector(lease, clock, "a")
    a.config = ElectionConfig(namespace="ns", identity="a", renew_period=0.01, renew_deadline=10.0)
    leadership = Leadership()
    exits: list[int] = []

    class Exited(Exception):
        pass

    def exit_now(code: int) -> NoReturn:
        exits.append(code)
        assert not leadership.leading  # it stopped leading before it went
        raise Exited

    async def scenario() -> None:
        campaign_task = asyncio.create_task(campaign(a, leadership, asyncio.Event(), exit_now=exit_now))
        while not leadership.leading:
            await asyncio.sleep(0)
        lease.record = LeaseRecord("intruder", 15, WALL, WALL, 9)
        lease.version += 1
        with pytest.raises(Exited):
            await campaign_task

    asyncio.run(scenario())
    assert exits == [EXIT_LOST_LEASE]
