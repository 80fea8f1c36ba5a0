"""The network layer: REST, WebSocket, Server-Sent Events and long polling over the core."""

from .app import create_app

__all__ = ["create_app"]
