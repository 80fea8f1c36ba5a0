"""A TCP proxy in front of Redis that can make the pub/sub connections behind it go silent:
open, but passing nothing either way, as after a network partition that no RST or FIN
ever reports. Other connections pass through as usual."""

from __future__ import annotations

import asyncio
import contextlib

from ..live_server import free_port


class SilentProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pubsub_pipes: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> SilentProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def silence_pubsub(self) -> None:
        """Every connection that has subscribed so far stops passing bytes."""
        for silenced in self._pubsub_pipes:
            silenced.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers += [writer, upstream_writer]
        silenced = asyncio.Event()
        for source, sink, client_side in (
            (reader, upstream_writer, True),
            (upstream_reader, writer, False),
        ):
            task = asyncio.create_task(self._pipe(source, sink, silenced, client_side))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        silenced: asyncio.Event,
        client_side: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(65536):
                if client_side and b"SUBSCRIBE" in chunk.upper():
                    self._pubsub_pipes.append(silenced)
                if silenced.is_set():
                    continue  # swallowed: the peer hears nothing, and nothing is closed
                sink.write(chunk)
                await sink.drain()
