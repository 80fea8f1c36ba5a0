"""Identifiers the hub assigns: ``str_…`` streams, ``evt_…`` events, ``cli_…`` clients."""

import base64
import os
import re
import secrets

WORKFLOW_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RESERVED_WORKFLOW_SESSION_IDS = frozenset({"metrics"})


STREAM_ID_PREFIX = "str_"
"""Marks the hub's stream ids; no workflow session id starts with it, so the two kinds of
reference to a stream never collide."""


def new_stream_id() -> str:
    return STREAM_ID_PREFIX + secrets.token_urlsafe(16)


class _RandomPool:
    """Random bytes from the OS, read a few kilobytes at a time: at thousands of
    single-event publishes a second, a read of the OS's random source per publish was
    4 % of the server's time. Emptied in a forked child, which must not repeat its
    parent's bytes."""

    READ = 3072  # 256 event ids

    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self._bytes, self._at = b"", 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._bytes):
            self._bytes, self._at = os.urandom(max(count, self.READ)), 0
        start = self._at
        self._at += count
        return self._bytes[start : self._at]


_pool = _RandomPool()


def new_event_ids(count: int) -> list[str]:
    """``count`` ids as ``secrets.token_urlsafe(12)`` would make them."""
    raw = base64.urlsafe_b64encode(_pool.take(12 * count)).decode()
    return ["evt_" + raw[i : i + 16] for i in range(0, 16 * count, 16)]


def new_client_id() -> str:
    return "cli_" + secrets.token_urlsafe(12)


def new_command_id() -> str:
    return "cmd_" + secrets.token_urlsafe(12)


def new_epoch() -> str:
    return secrets.token_urlsafe(8)


def screenshot_id_for(sha256_hex: str) -> str:
    """Screenshots are content-addressed: the same image in one stream is stored once."""
    return "scr_" + sha256_hex[:32]
