"""One error model on both sides of the wire: ``HubClient`` raises the classes the hub
raises in-process, rebuilt from the server's error code."""

from __future__ import annotations

import pytest

import executor_streamer
from executor_streamer import (
    EventTooLarge,
    HubClient,
    InvalidInput,
    RemoteError,
    SlowConsumer,
    StreamClosed,
    StreamerError,
    StreamNotFound,
)
from executor_streamer.errors import _with_codes, error_from_wire
from executor_streamer.server.errors import HTTP_STATUS

from .live_server import Served, ServerFactory

ERROR_CLASSES = [cls for cls in _with_codes(StreamerError) if cls is not RemoteError]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_code_has_a_status_and_comes_back_as_its_class(cls: type[StreamerError]) -> None:
    """Each error's code has an HTTP status in the server's table, and an answer with that
    code is raised client-side as that very class, with its message and details."""
    assert cls.code in HTTP_STATUS
    error = error_from_wire(cls.code, "m", {"k": 1}, HTTP_STATUS[cls.code])
    assert type(error) is cls
    assert (error.message, error.details, error.status) == ("m", {"k": 1}, HTTP_STATUS[cls.code])


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_the_package_exports_every_error(cls: type[StreamerError]) -> None:
    assert getattr(executor_streamer, cls.__name__) is cls
    assert cls.__name__ in executor_streamer.__all__


def test_an_unknown_code_is_a_remote_error_that_keeps_it() -> None:
    error = error_from_wire("SOMETHING_NEW", "from a newer hub", None, 418)
    assert isinstance(error, RemoteError) and error.to_dict()["code"] == "SOMETHING_NEW"


def test_details_the_classes_carry_are_rebuilt() -> None:
    slow = error_from_wire("SLOW_CONSUMER", "m", {"lastSeq": 41})
    assert isinstance(slow, SlowConsumer) and slow.last_seq == 41
    invalid = error_from_wire(
        "VALIDATION_ERROR", "m", {"errors": [{"path": "data.x", "message": "bad", "index": 2}]}
    )
    assert isinstance(invalid, InvalidInput)
    assert [(e.path, e.message, e.index) for e in invalid.errors] == [("data.x", "bad", 2)]


class TestOverHttp:
    async def test_the_same_classes_as_in_process(self, make_server: ServerFactory) -> None:
        served: Served = await make_server(
            server={"autoCreateStreams": False}, limits={"maxEventBytes": 2000}
        )
        async with HubClient(served.base_url) as client:
            with pytest.raises(StreamNotFound) as missing:
                await client.publish_status("wf-1", "a", "b")
            assert missing.value.status == 404
            await client.create_stream("wf-1")
            with pytest.raises(InvalidInput) as invalid:
                await client.publish_reasoning("wf-1", "t", 1.5, "p")
            assert [e.path for e in invalid.value.errors] == ["data.confidence"]
            with pytest.raises(EventTooLarge):
                await client.publish_status("wf-1", "a", "b", message="x" * 3000)
            await client.close_stream("wf-1")
            with pytest.raises(StreamClosed):
                await client.publish_status("wf-1", "a", "b")


async def test_a_publish_retried_with_its_idempotency_key_is_stored_once(served: Served) -> None:
    async with HubClient(served.base_url) as client:
        event = {"type": "STATUS", "data": {"statusType": "n", "status": "once"}}
        first = await client.publish_event("wf-idem", event, idempotency_key="k-1")
        again = await client.publish_event("wf-idem", event, idempotency_key="k-1")
        assert again == first
        assert (await served.http.get("/api/streams/wf-idem/history")).json()["total"] == 1
