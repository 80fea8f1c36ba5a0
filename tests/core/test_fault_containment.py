"""One client's fault never stalls the hub: transport code that raises when the core calls
it (``Subscription.on_ready``, ``ClientSession.on_disconnect``) ends that client only;
publishing, acknowledgements and every other subscriber go on."""

from __future__ import annotations

import asyncio

from executor_streamer import ClientType, CloseReason, ExecutorStreamer, Subscription
from executor_streamer.core.clients import ClientSession

from ..conftest import YieldingHistory, drain_events, seqs


class BrokenTransport:
    """A transport whose callbacks raise: on the first event, and when told to close."""

    def __init__(self, client: ClientSession) -> None:
        self.ready_calls = 0
        self.ended: list[CloseReason] = []
        client.on_disconnect = self.on_disconnect

    def on_ready(self, sub: Subscription) -> None:
        self.ready_calls += 1
        raise RuntimeError("a bug in transport code")

    def on_disconnect(self, reason: CloseReason) -> None:
        self.ended.append(reason)
        raise RuntimeError("and another")


async def _publish_concurrently(hub: ExecutorStreamer, publishers: int, each: int) -> None:
    async def publisher(n: int) -> None:
        for i in range(each):
            await hub.publisher.publish_status("wf-1", "step", f"{n}.{i}")

    await asyncio.wait_for(asyncio.gather(*(publisher(n) for n in range(publishers))), 10)


class TestContainment:
    async def test_a_raising_subscriber_callback_ends_only_its_client(self) -> None:
        """With a subscriber whose on_ready raises inside fan-out, every publish from
        concurrent publishers is acknowledged, every other subscriber gets every event,
        and the failing client is disconnected with FAILED (even though its own
        disconnect callback raises too)."""
        hub = ExecutorStreamer(storage=YieldingHistory(yields=2))  # publishes interleave
        await hub.start()
        try:
            await hub.create_stream("wf-1")
            client = hub.connect(ClientType.WEBSOCKET)
            broken = BrokenTransport(client)
            victim = await hub.open_subscription("wf-1", client=client)
            victim.on_ready = broken.on_ready
            healthy = await hub.open_subscription("wf-1", since=0)
            await _publish_concurrently(hub, publishers=4, each=25)
            assert seqs(drain_events(healthy)) == list(range(1, 101))
            assert victim.close_reason is CloseReason.FAILED
            assert broken.ready_calls == 1 and broken.ended == [CloseReason.FAILED]
            assert hub.clients.find(client.id) is None
            assert not hub.streams.resolve("wf-1").clients
            # The stream keeps working for a subscriber that comes later.
            await hub.publisher.publish_status("wf-1", "step", "after")
            later = await hub.open_subscription("wf-1", since=100)
            assert seqs(drain_events(later)) == [101]
        finally:
            await hub.stop()

    async def test_a_raising_disconnect_callback_does_not_stop_the_others(
        self, hub: ExecutorStreamer
    ) -> None:
        """Disconnecting every client goes on past one whose callback raises."""
        clients = [hub.connect(ClientType.WEBSOCKET) for _ in range(3)]
        BrokenTransport(clients[0])
        ended: list[str] = []
        for client in clients[1:]:
            client.on_disconnect = lambda _reason, c=client: ended.append(c.id)
        for client in clients:
            hub.disconnect(client.id, CloseReason.SHUTDOWN)
        assert ended == [c.id for c in clients[1:]] and not len(hub.clients)
