"""Publishing (docs/rest.md): every method, command matching, screenshots, limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import orjson
import pytest

from executor_streamer import (
    BatchTooLarge,
    CommandAction,
    ErrorContext,
    EventTooLarge,
    ExecutorStreamer,
    ExecutorStreamerConfig,
    IdempotencyKeyReused,
    InvalidInput,
    StreamEventType,
    StreamNotFound,
)
from executor_streamer.types import (
    CommandCompletedData,
    CommandFailedData,
    CommandStartedData,
    ReasoningData,
    ScreenshotInfo,
    StatusData,
    VariableUpdateData,
)

from ..conftest import JPEG, PNG, HubFactory, drain_events, seqs


def command_id(event: Any) -> str:
    return str(event.data.command_id)


class TestMethods:
    async def test_every_publisher_method(self, hub: ExecutorStreamer) -> None:
        """Each typed publish method stores its event type and returns the stored event."""
        p = hub.publisher
        events = [
            await p.publish_reasoning("wf-1", "plan", 0.5, "planning", {"step": 1}),
            await p.publish_command_started("wf-1", "go", CommandAction.NAVIGATE, {"url": "u"}),
            await p.publish_command_completed("wf-1", "go", {"title": "t"}, 10),
            await p.publish_command_failed("wf-1", "go", ErrorContext(code="E", message="m"), 5),
            await p.publish_screenshot("wf-1", PNG, width=8, height=6, caption="c"),
            await p.publish_variable_update("wf-1", "x", "2", previous_value="1"),
            await p.publish_status("wf-1", "workflow", "DONE", "ok"),
            await p.publish_error("wf-1", {"code": "E2", "message": "bad", "recoverable": True}),
            await p.publish_event(
                "wf-1", {"type": "STATUS", "data": {"statusType": "a", "status": "b"}}
            ),
        ]
        assert seqs(events) == list(range(1, 10))
        assert [type(e.data) for e in events] == [
            ReasoningData,
            CommandStartedData,
            CommandCompletedData,
            CommandFailedData,
            ScreenshotInfo,
            VariableUpdateData,
            StatusData,
            ErrorContext,
            StatusData,
        ]
        assert all(e.id.startswith("evt_") and e.session_id == "wf-1" for e in events)
        assert len({e.id for e in events}) == 9
        stored = (await hub.history.get_events("wf-1")).events
        assert stored == events

    async def test_timestamps_never_decrease(self, hub: ExecutorStreamer) -> None:
        """The hub stamps events, and a stream's stamps never go backwards."""
        events = [await hub.publisher.publish_status("wf-1", "a", str(i)) for i in range(50)]
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps)
        assert all(s.tzinfo is not None for s in stamps)

    async def test_auto_create(self, hub: ExecutorStreamer) -> None:
        """Publishing to an unknown workflow session creates its stream."""
        event = await hub.publisher.publish_status("wf-new", "a", "b")
        assert hub.get_stream("wf-new") is not None
        assert event.stream_id == hub.streams.resolve("wf-new").id

    async def test_auto_create_off(self, make_hub: HubFactory) -> None:
        """With autoCreateStreams off, publishing to an unknown stream is StreamNotFound."""
        hub = await make_hub(server={"autoCreateStreams": False})
        with pytest.raises(StreamNotFound):
            await hub.publisher.publish_status("wf-1", "a", "b")
        assert len(hub.streams) == 0

    async def test_invalid_workflow_id_on_auto_create(self, hub: ExecutorStreamer) -> None:
        """Auto-create checks the workflow session id like create does."""
        with pytest.raises(InvalidInput):
            await hub.publisher.publish_status("bad id", "a", "b")


class TestCommandMatching:
    async def test_started_without_id_gets_one(self, hub: ExecutorStreamer) -> None:
        """COMMAND_STARTED without a commandId gets a fresh one; a given one is kept."""
        a = await hub.publisher.publish_command_started("wf-1", "click", "CLICK")
        b = await hub.publisher.publish_command_started("wf-1", "click", "CLICK", command_id="c-7")
        assert command_id(a).startswith("cmd_")
        assert command_id(b) == "c-7"

    async def test_completion_matches_most_recent_running_of_that_name(
        self, hub: ExecutorStreamer
    ) -> None:
        """Completions without an id finish the newest running command of the same name."""
        p = hub.publisher
        outer = await p.publish_command_started("wf-1", "step", "CUSTOM")
        other = await p.publish_command_started("wf-1", "wait", "WAIT")
        inner = await p.publish_command_started("wf-1", "step", "CUSTOM")
        done_inner = await p.publish_command_completed("wf-1", "step", None, 1)
        failed_outer = await p.publish_command_failed(
            "wf-1", "step", {"code": "E", "message": "m"}, 2
        )
        done_other = await p.publish_command_completed("wf-1", "wait", None, 3)
        assert command_id(done_inner) == command_id(inner)
        assert command_id(failed_outer) == command_id(outer)
        assert command_id(done_other) == command_id(other)
        assert hub.streams.resolve("wf-1").commands.running() == {}

    async def test_completion_with_nothing_running_gets_a_new_id(
        self, hub: ExecutorStreamer
    ) -> None:
        """A completion that matches no running command gets a fresh id."""
        done = await hub.publisher.publish_command_completed("wf-1", "ghost", None, 1)
        assert command_id(done).startswith("cmd_")

    async def test_explicit_id_finishes_that_command(self, hub: ExecutorStreamer) -> None:
        """A completion naming its commandId finishes exactly that command."""
        p = hub.publisher
        first = await p.publish_command_started("wf-1", "click", "CLICK")
        await p.publish_command_started("wf-1", "click", "CLICK")
        done = await p.publish_command_completed("wf-1", "click", None, 1, command_id(first))
        assert command_id(done) == command_id(first)
        running = hub.streams.resolve("wf-1").commands.running()
        assert list(running.values()) == ["click"] and command_id(first) not in running

    async def test_rejected_batch_matches_nothing(self, hub: ExecutorStreamer) -> None:
        """A rejected batch leaves running commands as they were."""
        started = await hub.publisher.publish_command_started("wf-1", "click", "CLICK")
        batch = [
            {"type": "COMMAND_COMPLETED", "data": {"commandName": "click", "duration": 1}},
            {
                "type": "STATUS",
                "data": {"statusType": "a", "status": "b", "message": "x" * (2 << 20)},
            },
        ]
        with pytest.raises(EventTooLarge):
            await hub.publisher.publish_batch("wf-1", batch)
        done = await hub.publisher.publish_command_completed("wf-1", "click", None, 1)
        assert command_id(done) == command_id(started)

    async def test_batch_resolves_in_order(self, hub: ExecutorStreamer) -> None:
        """Inside one batch a completion matches a command started earlier in it."""
        events = await hub.publisher.publish_batch(
            "wf-1",
            [
                {"type": "COMMAND_STARTED", "data": {"commandName": "t", "action": "TYPE"}},
                {"type": "COMMAND_COMPLETED", "data": {"commandName": "t", "duration": 4}},
            ],
        )
        assert command_id(events[0]) == command_id(events[1])


class TestScreenshots:
    async def test_bytes_are_stored_once_and_referenced(self, hub: ExecutorStreamer) -> None:
        """The event carries ScreenshotInfo with url and sha256; the bytes sit in the store."""
        event = await hub.publisher.publish_screenshot("wf-1", PNG, caption="login")
        info = event.data
        assert isinstance(info, ScreenshotInfo)
        digest = hashlib.sha256(PNG).hexdigest()
        assert (info.sha256, info.size_bytes, info.mime_type) == (digest, len(PNG), "image/png")
        assert info.url == f"/api/streams/{event.stream_id}/screenshots/{info.screenshot_id}"
        stored = await hub.history.get_screenshot("wf-1", info.screenshot_id)
        assert stored.data == PNG and stored.mime_type == "image/png"
        record = hub.streams.resolve("wf-1")
        page = await hub.history.get_events(record.id)
        assert b"image" not in page.records[0].payload.replace(b"image/png", b"")

    async def test_same_image_is_one_blob(self, hub: ExecutorStreamer) -> None:
        """Publishing the same image twice stores it once under one id."""
        a = await hub.publisher.publish_screenshot("wf-1", PNG)
        b = await hub.publisher.publish_screenshot("wf-1", PNG)
        assert isinstance(a.data, ScreenshotInfo) and isinstance(b.data, ScreenshotInfo)
        assert a.data.screenshot_id == b.data.screenshot_id
        assert await hub.history.usage_bytes("wf-1") < 2 * len(PNG) + 2000

    @pytest.mark.parametrize("prefix", ["", "data:image/jpeg;base64,"])
    async def test_base64_upload(self, hub: ExecutorStreamer, prefix: str) -> None:
        """Over the wire a screenshot is base64 (a data URL too); the event drops the image."""
        encoded = prefix + base64.b64encode(JPEG).decode()
        event = await hub.publisher.publish_event(
            "wf-1",
            {
                "type": "SCREENSHOT",
                "data": {"image": encoded, "mimeType": "image/jpeg", "commandId": "c1"},
            },
        )
        assert isinstance(event.data, ScreenshotInfo)
        assert event.data.command_id == "c1"
        assert "image" not in event.data.to_wire()
        stored = await hub.history.get_screenshot("wf-1", event.data.screenshot_id)
        assert stored.data == JPEG

    @pytest.mark.parametrize(
        ("image", "mime", "message"),
        [
            ("not base64!", "image/png", "not valid base64"),
            (base64.b64encode(JPEG).decode(), "image/png", "not a image/png image"),
            (base64.b64encode(b"RIFF0000WAVE").decode(), "image/webp", "not a image/webp"),
        ],
    )
    async def test_bad_uploads(
        self, hub: ExecutorStreamer, image: str, mime: str, message: str
    ) -> None:
        """Undecodable images and bytes that are not the declared type are refused."""
        with pytest.raises(InvalidInput, match=message) as caught:
            await hub.publisher.publish_event(
                "wf-1", {"type": "SCREENSHOT", "data": {"image": image, "mimeType": mime}}
            )
        assert caught.value.errors[0].path == "data.image"
        assert hub.get_stream("wf-1") is None

    async def test_screenshot_size_limit(self, make_hub: HubFactory) -> None:
        """Images over limits.maxScreenshotBytes are refused; empty ones too."""
        hub = await make_hub(limits={"maxScreenshotBytes": 64})
        with pytest.raises(InvalidInput, match="at most 64"):
            await hub.publisher.publish_screenshot("wf-1", PNG + b"\x00" * 64)
        with pytest.raises(InvalidInput, match="is empty"):
            await hub.publisher.publish_screenshot("wf-1", b"")
        with pytest.raises(InvalidInput, match="must be bytes"):
            await hub.publisher.publish_screenshot("wf-1", "png")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput) as caught:
            await hub.publisher.publish_screenshot("wf-1", PNG, "image/gif")
        assert caught.value.errors[0].path == "data.mimeType"


class TestLimitsAndAtomicity:
    async def test_event_too_large_stores_nothing(self, make_hub: HubFactory) -> None:
        """An event over maxEventBytes is EventTooLarge; no seq is used."""
        hub = await make_hub(limits={"maxEventBytes": 1000})
        await hub.publisher.publish_status("wf-1", "a", "b")
        with pytest.raises(EventTooLarge) as caught:
            await hub.publisher.publish_status("wf-1", "a", "b", message="x" * 1000)
        assert caught.value.code == "EVENT_TOO_LARGE"
        assert (await hub.publisher.publish_status("wf-1", "a", "c")).seq == 2

    async def test_rejected_first_publish_creates_no_stream(self, make_hub: HubFactory) -> None:
        """A publish that auto-creates a stream and is then rejected leaves no stream."""
        hub = await make_hub(limits={"maxEventBytes": 1000})
        calls: list[str] = []

        async def record(*args: object) -> None:
            calls.append(str(args[1]))

        from executor_streamer import LifecycleCallbacks

        hub.set_lifecycle_callbacks(
            LifecycleCallbacks(on_session_created=record, on_session_destroyed=record)
        )
        with pytest.raises(EventTooLarge):
            await hub.publisher.publish_status("wf-1", "a", "b", message="x" * 1000)
        assert hub.get_stream("wf-1") is None and len(hub.streams) == 0
        await hub.drain_callbacks()
        assert calls == ["wf-1", "wf-1"]  # created, then destroyed: listeners stay balanced

    async def test_rollback_does_not_lose_a_concurrent_publish(self) -> None:
        """A valid publish racing a rejected first publish to a new session still lands."""
        from ..conftest import YieldingHistory

        config = ExecutorStreamerConfig().with_overrides({"limits": {"maxEventBytes": 1000}})
        hub = ExecutorStreamer(config, storage=YieldingHistory(3))
        await hub.start()
        try:
            bad = hub.publisher.publish_status("wf-1", "a", "b", message="x" * 1000)
            good = hub.publisher.publish_status("wf-1", "a", "ok")
            results = await asyncio.gather(bad, good, return_exceptions=True)
            assert isinstance(results[0], EventTooLarge)
            assert results[1].seq == 1  # type: ignore[union-attr]
            assert (await hub.history.get_events("wf-1")).total == 1
        finally:
            await hub.stop()

    async def test_metadata_limit(self, hub: ExecutorStreamer) -> None:
        """Metadata over 16 KiB serialized, or not JSON, is refused."""
        with pytest.raises(InvalidInput, match="at most 16384") as caught:
            await hub.publisher.publish_status("wf-1", "a", "b", metadata={"x": "y" * 17000})
        assert caught.value.errors[0].path == "metadata"
        with pytest.raises(InvalidInput, match="must be JSON"):
            await hub.publisher.publish_status("wf-1", "a", "b", metadata={"x": object()})
        assert hub.get_stream("wf-1") is None

    async def test_data_that_is_not_json(self, hub: ExecutorStreamer) -> None:
        """Data that cannot become JSON is refused before anything is stored."""
        await hub.publisher.publish_status("wf-1", "a", "b")
        with pytest.raises(InvalidInput, match="JSON-serializable"):
            await hub.publisher.publish_command_started("wf-1", "x", "CLICK", {"o": object()})
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_invalid_batch_reports_every_error_and_stores_nothing(
        self, hub: ExecutorStreamer
    ) -> None:
        """One bad event rejects the whole batch; the error lists each problem by index."""
        await hub.create_stream("wf-1")
        async with hub.subscribe("wf-1") as sub:
            with pytest.raises(InvalidInput) as caught:
                await hub.publisher.publish_batch(
                    "wf-1",
                    [
                        {"type": "STATUS", "data": {"statusType": "a", "status": "b"}},
                        {"type": "REASONING", "data": {"thought": "t", "confidence": 2}},
                        {"type": "BOGUS", "data": {}},
                    ],
                )
            assert [(e.index, e.path) for e in caught.value.errors] == [
                (1, "data.confidence"),
                (1, "data.reasoningType"),
                (2, "type"),
            ]
            assert drain_events(sub) == []
        assert (await hub.history.get_events("wf-1")).total == 0
        assert hub.streams.resolve("wf-1").last_seq == 0

    async def test_batch_is_ordered_and_contiguous(self, hub: ExecutorStreamer) -> None:
        """A batch is stored in order with contiguous seqs."""
        batch = [
            {"type": "STATUS", "data": {"statusType": "n", "status": str(i)}} for i in range(20)
        ]
        events = await hub.publisher.publish_batch("wf-1", batch)
        assert seqs(events) == list(range(1, 21))
        assert [e.data.status for e in events] == [str(i) for i in range(20)]  # type: ignore[union-attr]

    async def test_batch_size_limits(self, make_hub: HubFactory) -> None:
        """Empty batches and batches over maxBatchSize are refused."""
        hub = await make_hub(limits={"maxBatchSize": 3})
        one = {"type": "STATUS", "data": {"statusType": "a", "status": "b"}}
        with pytest.raises(BatchTooLarge):
            await hub.publisher.publish_batch("wf-1", [one] * 4)
        with pytest.raises(InvalidInput, match="at least one"):
            await hub.publisher.publish_batch("wf-1", [])
        assert len(await hub.publisher.publish_batch("wf-1", [one] * 3)) == 3

    async def test_non_object_event(self, hub: ExecutorStreamer) -> None:
        """A batch item that is not an object is an error at its index."""
        with pytest.raises(InvalidInput) as caught:
            await hub.publisher.publish_batch("wf-1", ["nope"])  # type: ignore[list-item]
        assert caught.value.errors[0].index == 0

    async def test_concurrent_publishers_get_unique_contiguous_seqs(
        self, hub: ExecutorStreamer
    ) -> None:
        """Many publishers at once never share or skip a seq."""
        events = await asyncio.gather(
            *(hub.publisher.publish_status("wf-1", "n", str(i)) for i in range(200))
        )
        assert sorted(seqs(list(events))) == list(range(1, 201))

    async def test_payload_is_the_serialized_event(self, hub: ExecutorStreamer) -> None:
        """Each record's payload is the event's camelCase JSON, made once at publish."""
        event = await hub.publisher.publish_reasoning("wf-1", "t", 0.25, "p")
        [record] = (await hub.history.get_events("wf-1")).records
        wire = orjson.loads(record.payload)
        assert wire == event.to_wire()
        assert wire["type"] == StreamEventType.REASONING and "context" not in wire["data"]


STATUS = {"type": "STATUS", "data": {"statusType": "step", "status": "running"}}


class TestIdempotencyKeys:
    """A key names one publish into one stream, however the stream is named, and only as
    long as that stream exists (the Redis engine keeps keys per stream id already)."""

    async def test_a_retry_naming_the_stream_by_its_id_stores_nothing(
        self, hub: ExecutorStreamer
    ) -> None:
        first = await hub.publisher.publish_event("wf-1", STATUS, idempotency_key="k")
        again = await hub.publisher.publish_event(first.stream_id, STATUS, idempotency_key="k")
        assert again.id == first.id and again.seq == first.seq == 1
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_after_a_purge_the_key_publishes_into_the_new_stream(
        self, hub: ExecutorStreamer
    ) -> None:
        first = await hub.publisher.publish_event("wf-1", STATUS, idempotency_key="k")
        await hub.destroy_stream("wf-1", purge=True)
        again = await hub.publisher.publish_event("wf-1", STATUS, idempotency_key="k")
        assert again.stream_id != first.stream_id and again.seq == 1
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_the_same_key_with_other_events_is_refused_and_stores_nothing(
        self, hub: ExecutorStreamer
    ) -> None:
        await hub.publisher.publish_wire("wf-1", STATUS, "k")
        other = {"type": "STATUS", "data": {"statusType": "step", "status": "other"}}
        with pytest.raises(IdempotencyKeyReused):
            await hub.publisher.publish_wire("wf-1", other, "k")
        with pytest.raises(IdempotencyKeyReused):  # a batch is other events too
            await hub.publisher.publish_wire("wf-1", {"events": [STATUS, STATUS]}, "k")
        assert (await hub.history.get_events("wf-1")).total == 1

    async def test_a_key_is_its_owner_s(self, hub: ExecutorStreamer) -> None:
        """Two producers that happen to pick the same key publish twice; each one's retry
        stores nothing."""
        a = await hub.publisher.publish_wire("wf-1", STATUS, "k", owner="producer-a")
        b = await hub.publisher.publish_wire("wf-1", STATUS, "k", owner="producer-b")
        assert [r.seq for r in a + b] == [1, 2]
        again = await hub.publisher.publish_wire("wf-1", STATUS, "k", owner="producer-b")
        assert [r.seq for r in again] == [2]
        assert (await hub.history.get_events("wf-1")).total == 2
