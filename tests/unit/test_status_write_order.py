"""The order of status writes (runtime.lanes.StatusWriteOrder): urgent before routine, few routine at once."""

from __future__ import annotations

import asyncio

import pytest

from chaosguard.runtime import lanes
from chaosguard.runtime.lanes import StatusWriteOrder
from chaosguard.runtime.status import with_fields_of


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_routine_write_waits_while_an_urgent_one_is_pending_and_goes_once_it_is_done() -> None:
    async def scenario() -> list[str]:
        order = StatusWriteOrder(routine_in_flight=4)
        written: list[str] = []
        urgent_may_finish = asyncio.Event()

        async def urgent() -> None:
            async with order.urgent():
                await urgent_may_finish.wait()
                written.append("urgent")

        async def routine() -> None:
            async with order.routine():
                written.append("routine")

        urgent_task = asyncio.create_task(urgent())
        await _settle()
        routine_task = asyncio.create_task(routine())
        await _settle()
        assert written == [], "a routine write went out while an urgent one was pending"
        urgent_may_finish.set()
        await asyncio.gather(urgent_task, routine_task)
        return written

    assert asyncio.run(scenario()) == ["urgent", "routine"]


def test_urgent_writes_never_wait_for_routine_ones_in_flight() -> None:
    async def scenario() -> None:
        order = StatusWriteOrder(routine_in_flight=1)
        release = asyncio.Event()

        async def routine() -> None:
            async with order.routine():
                await release.wait()

        held = asyncio.create_task(routine())
        await _settle()
        async with order.urgent():
            assert order.routine_in_flight == 1
        release.set()
        await held

    asyncio.run(scenario())


def test_at_most_the_limit_of_routine_writes_are_in_flight_at_once() -> None:
    async def scenario() -> int:
        order = StatusWriteOrder(routine_in_flight=3)
        release = asyncio.Event()
        most = 0

        async def routine() -> None:
            nonlocal most
            async with order.routine():
                most = max(most, order.routine_in_flight)
                await release.wait()

        tasks = [asyncio.create_task(routine()) for _ in range(10)]
        await _settle()
        assert order.routine_in_flight == 3
        release.set()
        await asyncio.gather(*tasks)
        assert order.routine_in_flight == 0
        return most

    assert asyncio.run(scenario()) == 3


def test_urgent_requests_go_a_few_at_a_time_and_routine_ones_are_not_held_by_that_limit() -> None:
    async def scenario() -> tuple[int, int]:
        order = StatusWriteOrder(urgent_in_flight=2)
        release = asyncio.Event()
        sending = most = 0

        async def send() -> None:
            nonlocal sending, most
            async with order.sending():
                sending += 1
                most = max(most, sending)
                await release.wait()
                sending -= 1

        async def urgent() -> None:
            with lanes.urgent():
                await send()

        tasks = [asyncio.create_task(urgent()) for _ in range(6)]
        await _settle()
        urgent_most = most
        routine = [asyncio.create_task(send()) for _ in range(3)]
        await _settle()
        routine_more = most - urgent_most
        release.set()
        await asyncio.gather(*tasks, *routine)
        return urgent_most, routine_more

    assert asyncio.run(scenario()) == (2, 3)


def test_the_lane_of_the_context_picks_the_order_and_routine_undoes_urgent() -> None:
    async def scenario() -> list[int]:
        order = StatusWriteOrder()
        seen: list[int] = []
        with lanes.urgent():
            async with order.for_this_context():
                seen.append(order.urgent_pending)
            with lanes.routine():
                async with order.for_this_context():
                    seen.append(order.urgent_pending)
        return seen

    assert asyncio.run(scenario()) == [1, 0]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StatusWriteOrder(routine_in_flight=0)
    with pytest.raises(ValueError, match="at least 1"):
        StatusWriteOrder(urgent_in_flight=0)


def test_the_verdict_write_takes_only_its_fields_and_drops_those_that_are_gone() -> None:
    written = {"phase": "Running", "currentRun": {"id": "r2"}, "lastRun": {"id": "r1"}, "history": [{"id": "r1"}]}
    wire = {
        "phase": "Aborted",
        "currentRun": None,
        "lastRun": {"id": "r2", "phase": "Aborted"},
        "history": [{"id": "r1"}, {"id": "r2"}],
    }
    partial = with_fields_of(written, wire, frozenset({"phase", "currentRun", "lastRun"}))
    assert partial == {"phase": "Aborted", "lastRun": {"id": "r2", "phase": "Aborted"}, "history": [{"id": "r1"}]}
    assert written["currentRun"] == {"id": "r2"}, "what was written is left as it was"


def test_routine_writes_take_their_turns_in_arrival_order_and_a_cancelled_one_hands_its_turn_on() -> None:
    async def scenario() -> list[int]:
        order = StatusWriteOrder(routine_in_flight=1)
        release = asyncio.Event()
        went: list[int] = []

        async def routine(number: int) -> None:
            async with order.routine():
                went.append(number)
                await release.wait()

        first = asyncio.create_task(routine(0))
        await _settle()
        waiting = [asyncio.create_task(routine(n)) for n in (1, 2, 3)]
        await _settle()
        waiting[0].cancel()  # gave up before its turn: the next one goes in its place
        release.set()
        await asyncio.gather(first, *waiting, return_exceptions=True)
        assert order.routine_in_flight == 0 and not order._waiting
        return went

    assert asyncio.run(scenario()) == [0, 2, 3]


def test_events_wait_out_a_burst_of_aborts_and_are_posted_once_its_writes_are_out() -> None:
    async def scenario() -> None:
        order = StatusWriteOrder(urgent_in_flight=2)
        posted: list[str] = []
        release = asyncio.Event()

        async def abort() -> None:
            async with order.urgent():
                await release.wait()

        burst = [asyncio.create_task(abort()) for _ in range(3)]
        await _settle()
        order.post_event(lambda: posted.append("during the burst"))
        assert posted == [], "an Event went out while more aborts were pending than are sent at once"
        release.set()
        await asyncio.gather(*burst)
        assert posted == ["during the burst"]

    asyncio.run(scenario())


def test_an_event_beside_a_few_aborts_is_posted_at_once() -> None:
    async def scenario() -> None:
        order = StatusWriteOrder(urgent_in_flight=2)
        posted: list[str] = []
        async with order.urgent(), order.urgent():
            order.post_event(lambda: posted.append("now"))
            assert posted == ["now"]

    asyncio.run(scenario())
