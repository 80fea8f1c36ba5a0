"""Timers shared by connections (timers.py)."""

from __future__ import annotations

import asyncio

from executor_streamer.server.timers import Rounds, Signal, Ticker

from ..waiting import eventually


async def intervals_pass(interval: float, count: int = 2) -> None:
    """Until a witness ``Ticker(interval)``, started now, has ticked ``count`` times: by
    then every timer of that interval that was due would have fired too, since the event
    loop runs its timers in the order they fall due. A positive signal that the time has
    passed (on a loaded machine, more of it), in place of a sleep that guesses."""
    ticks: list[int] = []
    witness = Ticker(interval, lambda: ticks.append(1))
    try:
        assert await eventually(lambda: len(ticks) >= count), "the witness timer never ticked"
    finally:
        witness.stop()


class TestTimers:
    async def test_signal(self) -> None:
        """set before wait returns at once; wait then set wakes the waiter; clear resets."""
        signal = Signal()
        signal.set()
        await asyncio.wait_for(signal.wait(), 1)
        signal.clear()
        waiting = asyncio.create_task(signal.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        signal.set()
        await asyncio.wait_for(waiting, 1)
        assert signal.is_set()

    async def test_ticker_ticks_until_stopped(self) -> None:
        ticks: list[int] = []
        ticker = Ticker(0.01, lambda: ticks.append(1))
        assert await eventually(lambda: len(ticks) >= 2), "the ticker did not tick twice"
        ticker.stop()
        count = len(ticks)
        await intervals_pass(0.01)  # a tick still scheduled would have come by now
        assert 2 <= count == len(ticks)

    async def test_rounds_visit_members_while_there_are_any(self) -> None:
        """One timer visits every member; it runs only while there are members, and a
        member whose visit fails does not stop the others'."""
        visits: list[str] = []

        def visit(member: str) -> None:
            if member == "broken":
                raise RuntimeError("boom")
            visits.append(member)

        rounds: Rounds[str] = Rounds(0.01, visit)
        assert not rounds.running
        for member in ("a", "broken", "b"):
            rounds.add(member)
        assert rounds.running and len(rounds) == 3
        assert await eventually(lambda: visits.count("b") >= 2), "fewer than two rounds"
        assert visits.count("a") >= 2 and visits.count("a") == visits.count("b")
        for member in ("a", "broken", "b"):
            rounds.discard(member)
        assert not rounds.running
        count = len(visits)
        await intervals_pass(0.01)  # a round still scheduled would have come by now
        assert len(visits) == count
