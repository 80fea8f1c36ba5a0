"""The flush pass (flush.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from executor_streamer.history.records import EventRecord
from executor_streamer.server.flush import COALESCE_SECONDS, Flusher, FrameCache, Pacer
from executor_streamer.server.frames import ws_events

from ..history.test_contract import record
from ..waiting import eventually


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
        assert await eventually(lambda: len(target.flushes) >= 2), "no second pass"
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
        assert not flusher.in_pass  # the per-pass frame cache never outlives a pass


class TestPacer:
    async def test_pacer_spaces_sends(self) -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer()
        await pacer.pace()
        started = loop.time()
        await pacer.pace()
        assert loop.time() - started >= COALESCE_SECONDS * 0.9


def _frame(records: Sequence[EventRecord]) -> list[bytes]:
    return [ws_events(records)]


def _seqs(records: Sequence[EventRecord]) -> list[bytes]:
    return [b",".join(b"%d" % r.seq for r in records)]


class TestFrameCache:
    @given(
        requests=st.lists(
            st.tuples(
                st.sampled_from(["events", "seqs"]),
                st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True).map(sorted),
            ),
            max_size=30,
        )
    )
    def test_reuses_frames_only_for_the_same_records(
        self, requests: list[tuple[str, list[int]]]
    ) -> None:
        """Whatever runs of records the clients of a pass drain (different filters drain
        different subsets of one batch), each gets exactly the frames built for its own
        run, as if nothing were cached."""
        pool = [record(seq) for seq in range(1, 7)]
        builders = {"events": _frame, "seqs": _seqs}
        cache = FrameCache()
        for kind, picked in requests:
            run = [pool[i] for i in picked]
            assert cache.frames(kind, run, builders[kind]) == builders[kind](run)

    def test_builds_once_per_run(self) -> None:
        """Clients draining the same records share one build."""
        pool = [record(seq) for seq in range(1, 4)]
        built: list[int] = []

        def build(records: Sequence[EventRecord]) -> list[bytes]:
            built.append(len(records))
            return _frame(records)

        cache = FrameCache()
        for _ in range(5):
            cache.frames("events", list(pool), build)
        assert built == [3]
