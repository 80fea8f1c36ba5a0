"""Identifiers the hub assigns: ``str_…`` streams, ``evt_…`` events, ``cli_…`` clients."""

import base64
import os
import re
import secrets

WORKFLOW_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RESERVED_WORKFLOW_SESSION_IDS = frozenset({"metrics"})


def new_stream_id() -> str:
    return "str_" + secrets.token_urlsafe(16)


def new_event_ids(count: int) -> list[str]:
    """``count`` ids as ``secrets.token_urlsafe(12)`` would make them, from one read of
    the OS's random source instead of one per event."""
    raw = base64.urlsafe_b64encode(os.urandom(12 * count)).decode()
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
