"""History with a filter expression (docs/expressions.md) on every backend: the backend
answers the rest of the query and the hub evaluates the expression page by page; checked
against a plain filter over everything the backend holds, with pages made small so every
query crosses page boundaries."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest

from executor_streamer import InvalidFilter
from executor_streamer.core import stream_history
from executor_streamer.core.stream_history import StreamHistory
from executor_streamer.types import HistoryFilter, StreamEventType

from ..history.test_contract import StoreFactory, append, make_store, record

__all__ = ["make_store"]  # the fixture, for pytest

EXPRESSIONS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "seq % 3 == 0": lambda e: e["seq"] % 3 == 0,
    'type == "REASONING" && data.thought.endsWith("7")': lambda e: (
        e["type"] == "REASONING" and e["data"]["thought"].endswith("7")
    ),
    # errs on every REASONING event (no data.status): those never match
    'data.status.contains("1") || seq == 2': lambda e: (
        "1" in e["data"].get("status", "") or e["seq"] == 2
    ),
}


async def test_history_with_an_expression_is_the_plain_filter_of_all(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_history, "MAX_HISTORY_LIMIT", 7)  # pages of 7: many of them
    store = await make_store(100)
    kinds = ["STATUS", "REASONING", "STATUS", "ERROR"]
    await append(store, [record(i, kinds[i % 4]) for i in range(1, 41)])
    history = StreamHistory(cast(Any, None), store)
    held = [
        orjson.loads(r.payload)
        for r in (await store.query("s1", HistoryFilter(limit=1000))).records
    ]
    for text, offset, limit, after, types in itertools.product(
        EXPRESSIONS, (0, 3, 20), (1, 5, 100), (None, 10), (None, ["STATUS", "REASONING"])
    ):
        spec = HistoryFilter(
            expression=text,
            offset=offset,
            limit=limit,
            after_seq=after,
            event_types=None if types is None else [StreamEventType(t) for t in types],
        )
        matching = [
            e["seq"]
            for e in held
            if (after is None or e["seq"] > after)
            and (types is None or e["type"] in types)
            and EXPRESSIONS[text](e)
        ]
        page = await history.query("s1", spec)
        assert [r.seq for r in page.records] == matching[offset : offset + limit], spec
        assert page.total == len(matching), spec
        assert all(r.view is None for r in page.records)  # what CEL saw is let go


async def test_a_bad_expression_is_refused_before_reading(make_store: StoreFactory) -> None:
    store = await make_store(100)
    history = StreamHistory(cast(Any, None), store, max_expression_length=16)
    for bad in ("seq ==", 'type == "STATUS" || seq > 1'):
        with pytest.raises(InvalidFilter):
            await history.query("s1", HistoryFilter(expression=bad))


async def test_a_backend_handed_an_expression_refuses_it(make_store: StoreFactory) -> None:
    """The hub evaluates expressions; a backend that ignored one would answer unfiltered."""
    store = await make_store(100)
    await append(store, [record(1)])
    with pytest.raises(ValueError, match="expression"):
        await store.query("s1", HistoryFilter(expression="seq > 5"))
