"""A search over history held in the hub runs in slices (docs/guarantees.md): other
tasks run while it reads, and the slicing changes no answer."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from executor_streamer.history import base
from executor_streamer.history.base import page_in_slices, page_of
from executor_streamer.history.records import history_predicate
from executor_streamer.types.enums import StreamEventType
from executor_streamer.types.filters import HistoryFilter

from ..conftest import HubFactory
from .test_contract import record

KINDS = ["STATUS", "REASONING", "ERROR"]


@given(
    kinds=st.lists(st.sampled_from(KINDS), max_size=60),
    types=st.none() | st.lists(st.sampled_from(KINDS), min_size=1, max_size=2),
    search=st.none() | st.sampled_from(["1", "THOUGHT", "error 2", "zzz"]),
    offset=st.integers(0, 70),
    limit=st.integers(1, 70),
    slice_records=st.integers(1, 7),
)
async def test_slices_answer_as_one_pass(
    kinds: list[str],
    types: list[str] | None,
    search: str | None,
    offset: int,
    limit: int,
    slice_records: int,
) -> None:
    records = [record(seq, kind) for seq, kind in enumerate(kinds, 1)]
    spec = HistoryFilter(
        event_types=None if types is None else [StreamEventType(t) for t in types],
        search_text=search,
        offset=offset,
        limit=limit,
    )
    predicate = history_predicate(spec)
    saved = base.SLICE_RECORDS
    base.SLICE_RECORDS = slice_records  # many slices even over a few records
    try:
        sliced = await page_in_slices(records, spec, predicate)
    finally:
        base.SLICE_RECORDS = saved
    whole = page_of(records, spec, predicate)
    assert sliced.total == whole.total
    assert [r.seq for r in sliced.records] == [r.seq for r in whole.records]


async def test_other_tasks_run_during_a_large_search(make_hub: HubFactory) -> None:
    """The probe: a search over 100 MiB of history blocked the event loop for 130 ms.
    Counted in turns the loop gave another task, not in time (docs/guarantees.md)."""
    hub = await make_hub(defaultStreamConfig={"maxHistorySize": 20_000})
    text = "a" * 1000
    for _ in range(12):
        await hub.publisher.publish_batch(
            "wf-1",
            [{"type": "STATUS", "data": {"statusType": "t", "status": "s", "message": text}}]
            * 1000,
        )
    turns = 0

    async def other_client() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    ticking = asyncio.create_task(other_client())
    await asyncio.sleep(0)
    before = turns
    page = await hub.history.get_events("wf-1", HistoryFilter(search_text="needle"))
    during = turns - before
    ticking.cancel()
    assert page.total == 0
    assert during >= 12_000 // base.SLICE_RECORDS - 1, during
