"""Records: the shortcuts the hot path takes give exactly what the slow way gives."""

from __future__ import annotations

import multiprocessing
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from executor_streamer.history.records import EventRecord, data_text
from executor_streamer.types import StreamEvent
from executor_streamer.types.ids import new_event_ids
from executor_streamer.types.json_values import INTEGER_MAX, INTEGER_MIN

from ..history.test_contract import T0

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INTEGER_MIN, INTEGER_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
"""What the hub accepts as free-form JSON (types.json_values): finite numbers, integers
that orjson reads back exactly."""


def event(data: dict[str, Any], kind: str, metadata: dict[str, Any] | None) -> StreamEvent:
    return StreamEvent.model_validate(
        {
            "id": "evt_x",
            "streamId": "str_y",
            "sessionId": "wf-1",
            "seq": 7,
            "type": kind,
            "timestamp": T0,
            "data": data,
            "metadata": metadata,
        }
    )


class TestDataText:
    @given(
        variables=st.dictionaries(st.text(), json_values, max_size=4),
        metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    )
    def test_cut_from_the_payload_equals_serializing_again(
        self, variables: dict[str, Any], metadata: dict[str, Any] | None
    ) -> None:
        """Whatever the data holds (text like ',"data":' included) and with or without
        metadata, the search text a record gives is the data's JSON."""
        variables[',"data":'] = ',"metadata":{"data":1}}'  # escaped in JSON: harmless
        variables["nested"] = {"a": 1, "data": {"b": 2}}  # a real ,"data": inside data
        built = event({"code": "E", "message": "m", "details": variables}, "ERROR", metadata)
        assert EventRecord.of(built).data_text() == data_text(built)

    def test_every_event_type(self) -> None:
        """Unicode, quotes and nested values: the cut is the data exactly."""
        samples: dict[str, dict[str, Any]] = {
            "REASONING": {"thought": "ünïcode \u2028", "confidence": 0.5, "reasoningType": "p"},
            "COMMAND_STARTED": {"commandName": "click", "action": "CLICK", "parameters": {}},
            "STATUS": {"statusType": "a", "status": "b", "message": '"quoted"'},
            "ERROR": {"code": "E", "message": "m", "details": {"k": [1, 2.5]}},
        }
        for kind, data in samples.items():
            built = event(data, kind, None)
            assert EventRecord.of(built).data_text() == data_text(built), kind


class TestTrustedEvents:
    def test_trusted_equals_model_construct(self) -> None:
        """StreamEvent.trusted builds what model_construct builds, and serializes alike."""
        sample = event({"statusType": "a", "status": "b"}, "STATUS", {"m": 1})
        values = sample.model_dump(by_alias=False)
        values["data"] = sample.data
        trusted = StreamEvent.trusted(**values)
        constructed = StreamEvent.model_construct(**values)
        assert trusted == constructed == sample
        assert trusted.model_fields_set == constructed.model_fields_set
        assert EventRecord.of(trusted).payload == EventRecord.of(sample).payload


class TestEventIds:
    def test_unique_and_shaped_like_token_urlsafe(self) -> None:
        ids = new_event_ids(1000) + new_event_ids(1)
        assert len(set(ids)) == 1001
        assert all(re.fullmatch(r"evt_[A-Za-z0-9_-]{16}", i) for i in ids)

    def test_a_forked_child_does_not_repeat_its_parent(self) -> None:
        """Random bytes are read ahead; a forked child must not hand out the same."""
        new_event_ids(1)  # the pool now holds bytes the parent will use next
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            child = pool.apply(new_event_ids, (10,))
        assert not set(child) & set(new_event_ids(10))


class TestStoredRecords:
    """What storage hands back: seq, type and payload, with the event parsed on demand."""

    @given(
        kind=st.sampled_from(["REASONING", "COMMAND_STARTED", "STATUS", "ERROR"]),
        variables=st.dictionaries(st.text(), json_values, max_size=4),
        metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    )
    def test_parsed_event_equals_the_published_one(
        self, kind: str, variables: dict[str, Any], metadata: dict[str, Any] | None
    ) -> None:
        samples: dict[str, dict[str, Any]] = {
            "REASONING": {"thought": "t", "confidence": 0.5, "reasoningType": "p"},
            "COMMAND_STARTED": {"commandName": "c", "action": "CLICK", "parameters": variables},
            "STATUS": {"statusType": "a", "status": "b"},
            "ERROR": {"code": "E", "message": "m", "details": variables},
        }
        live = EventRecord.of(event(samples[kind], kind, metadata))
        back = EventRecord.stored(live.seq, live.type, live.payload)
        assert back.event == live.event
        assert back.data_text() == live.data_text()
        assert EventRecord.of(back.event).payload == live.payload

    def test_delivering_a_stored_record_parses_nothing(self) -> None:
        """Fan-out and transports read seq, type and payload only: a payload that would
        not parse is still delivered, and fails only when its event is asked for."""
        live = EventRecord.of(event({"statusType": "a", "status": "b"}, "STATUS", None))
        back = EventRecord.stored(live.seq, live.type, b"not json")
        assert (back.seq, back.type, back.payload) == (7, live.type, b"not json")
        with pytest.raises(ValidationError):
            _ = back.event
