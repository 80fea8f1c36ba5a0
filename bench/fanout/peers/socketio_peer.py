"""Peer: python-socketio broadcasting to a room, served by uvicorn like the hub.

    python socketio_peer.py <port>

Clients emit ``join`` (acknowledged) to enter the room; ``POST /publish`` emits the JSON
body to the room as an ``event``.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOM = "bench"
sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])


@sio.on("join")
async def join(sid: str, _stream: Any) -> bool:
    await sio.enter_room(sid, ROOM)
    return True


async def publish(request: Request) -> Response:
    await sio.emit("event", orjson.loads(await request.body()), room=ROOM)
    return Response(status_code=201)


async def healthz(_: Request) -> Response:
    return Response()


app = socketio.ASGIApp(
    sio,
    Starlette(routes=[Route("/publish", publish, methods=["POST"]), Route("/healthz", healthz)]),
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", http="httptools")
