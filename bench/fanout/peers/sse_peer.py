"""Peer: FastAPI + sse-starlette with an asyncio.Queue per client.

    python sse_peer.py <port>

``GET /events`` streams every published event; ``POST /publish`` puts the JSON body,
serialized once, on every client's queue.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from sse_starlette.sse import EventSourceResponse

app = FastAPI()
queues: set[asyncio.Queue[str]] = set()


@app.get("/events")
async def events() -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def stream() -> AsyncIterator[dict[str, str]]:
        queues.add(queue)
        try:
            while True:
                yield {"event": "message", "data": await queue.get()}
        finally:
            queues.discard(queue)

    return EventSourceResponse(stream())


@app.post("/publish", status_code=201)
async def publish(request: Request) -> Response:
    data = orjson.dumps(orjson.loads(await request.body())).decode()
    for queue in queues:
        queue.put_nowait(data)
    return Response(status_code=201)


@app.get("/healthz")
async def healthz() -> Response:
    return Response()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", http="httptools")
