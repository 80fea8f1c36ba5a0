"""What every WebSocket connection of one server shares (``ws_protocol``): the deflate
offer, and one pinger for all of them instead of a timer each."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, ClassVar

from uvicorn import Config
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from .timers import Rounds

if TYPE_CHECKING:
    from .ws_protocol import HubWebSocketProtocol


class ServerShared:
    """What every connection of one server shares: the deflate offer and the pinger."""

    _by_config: ClassVar[weakref.WeakKeyDictionary[Config, ServerShared]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, config: Config) -> None:
        self.extensions: list[ServerExtensionFactory] = (
            [
                ServerPerMessageDeflateFactory(
                    server_max_window_bits=12,
                    client_max_window_bits=12,
                    compress_settings={"memLevel": 5},
                )
            ]
            if config.ws_per_message_deflate
            else []
        )
        interval, timeout = config.ws_ping_interval, config.ws_ping_timeout
        self.pinged: Rounds[HubWebSocketProtocol] | None = None
        """Open connections, each pinged once ``interval`` has passed since its last ping
        (or since it opened) and that ping was answered, and closed with 1011 when a ping
        goes unanswered for ``timeout``. Rounds come every ``min(interval, timeout)``, so
        a deadline is noticed at most one round late."""
        if interval is not None and interval > 0:
            self.pinged = Rounds(
                min(interval, timeout or interval),
                lambda connection: connection.keepalive(interval, timeout),
            )

    def watch(self, connection: HubWebSocketProtocol) -> None:
        if self.pinged is not None:
            self.pinged.add(connection)

    def unwatch(self, connection: HubWebSocketProtocol) -> None:
        if self.pinged is not None:
            self.pinged.discard(connection)

    @classmethod
    def of(cls, config: Config) -> ServerShared:
        shared = cls._by_config.get(config)
        if shared is None:
            shared = cls._by_config[config] = cls(config)
        return shared
