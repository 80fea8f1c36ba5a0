"""The shared engine's way of serializing an event (once, with seq and timestamp cut out,
then spliced back in by the publish script) against plain serialization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from executor_streamer.core.shared_publish import split_payload
from executor_streamer.history.records import EventRecord
from executor_streamer.types import StreamEvent, StreamEventType
from executor_streamer.types.base import format_timestamp
from executor_streamer.types.events import StatusData

T0 = datetime(2000, 1, 1, tzinfo=UTC)
# Text that looks like the fields being cut, inside the data, where it must not be taken.
tricky = st.sampled_from(['"seq":0,', ',"seq":0,', '"timestamp":"', '"commandId":"x"', "\n"])
text = st.lists(st.one_of(st.text(max_size=20), tricky), max_size=4).map("".join)


@given(
    status=text,
    message=st.one_of(st.none(), text),
    metadata=st.one_of(st.none(), st.dictionaries(text, text, max_size=3)),
    seq=st.integers(1, 2**53),
    millis=st.integers(0, 10**12),
)
def test_spliced_payload_is_the_plain_one(
    status: str, message: str | None, metadata: dict[str, str] | None, seq: int, millis: int
) -> None:
    stamp = T0 + timedelta(milliseconds=millis)

    def event(seq: int) -> StreamEvent:
        return StreamEvent.trusted(
            id="evt_abc",
            stream_id="str_x-_1",
            session_id="wf:1.a-b_c",
            seq=seq,
            type=StreamEventType.STATUS,
            timestamp=T0 if seq == 0 else stamp,
            data=StatusData.model_construct(status_type="t", status=status, message=message),
            metadata=metadata,
        )

    head, mid, tail = split_payload(EventRecord.of(event(0)).payload)
    spliced = head + str(seq).encode() + mid + format_timestamp(stamp).encode() + tail
    assert spliced == EventRecord.of(event(seq)).payload
