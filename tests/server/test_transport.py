"""The flush pass and the writers' timing helpers (transport.py)."""

from __future__ import annotations

import asyncio

from executor_streamer.server.transport import (
    COALESCE_SECONDS,
    Flusher,
    Pacer,
    Rounds,
    Signal,
    Ticker,
)


class Target:
    def __init__(self, fail: bool = False) -> None:
        self.flushes: list[float] = []
        self.fail = fail

    def flush(self) -> None:
        self.flushes.append(asyncio.get_running_loop().time())
        if self.fail:
            raise RuntimeError("broken connection")


class TestFlusher:
    async def test_requests_in_one_tick_share_one_pass(self) -> None:
        """Many requests before the pass runs: each target is flushed once."""
        flusher = Flusher()
        targets = [Target() for _ in range(3)]
        for _ in range(5):
            for target in targets:
                flusher.request(target)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [len(t.flushes) for t in targets] == [1, 1, 1]

    async def test_passes_are_spaced_while_requests_keep_coming(self) -> None:
        """The first request is served on the next loop iteration; the next pass waits
        until COALESCE_SECONDS after the previous one."""
        flusher = Flusher()
        target = Target()
        loop = asyncio.get_running_loop()
        asked = loop.time()
        flusher.request(target)
        await asyncio.sleep(0)
        flusher.request(target)
        await asyncio.sleep(COALESCE_SECONDS * 3)
        first, second = target.flushes
        assert first - asked < COALESCE_SECONDS
        assert second - first >= COALESCE_SECONDS * 0.9

    async def test_a_failing_flush_does_not_stall_the_others(self) -> None:
        """One connection's flush raising is logged; the others in the pass still go."""
        flusher = Flusher()
        broken, fine = Target(fail=True), [Target() for _ in range(20)]
        flusher.request(broken)
        for target in fine:  # a pass visits targets in no set order: some come after
            flusher.request(target)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(broken.flushes) == 1 and all(len(t.flushes) == 1 for t in fine)
        assert flusher.frames is None  # the per-pass frame cache never outlives a pass


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

    async def test_pacer_spaces_sends(self) -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer()
        await pacer.pace()
        started = loop.time()
        await pacer.pace()
        assert loop.time() - started >= COALESCE_SECONDS * 0.9

    async def test_ticker_ticks_until_stopped(self) -> None:
        ticks: list[int] = []
        ticker = Ticker(0.01, lambda: ticks.append(1))
        await asyncio.sleep(0.055)
        ticker.stop()
        count = len(ticks)
        await asyncio.sleep(0.03)
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
        await asyncio.sleep(0.035)
        assert visits.count("a") >= 2 and visits.count("a") == visits.count("b")
        for member in ("a", "broken", "b"):
            rounds.discard(member)
        assert not rounds.running
        count = len(visits)
        await asyncio.sleep(0.03)
        assert len(visits) == count
