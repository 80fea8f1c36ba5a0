"""Identifiers the hub assigns: ``str_…`` streams, ``evt_…`` events, ``cli_…`` clients."""

import re
import secrets

WORKFLOW_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RESERVED_WORKFLOW_SESSION_IDS = frozenset({"metrics"})


def new_stream_id() -> str:
    return "str_" + secrets.token_urlsafe(16)


def new_event_id() -> str:
    return "evt_" + secrets.token_urlsafe(12)


def new_client_id() -> str:
    return "cli_" + secrets.token_urlsafe(12)


def new_command_id() -> str:
    return "cmd_" + secrets.token_urlsafe(12)


def new_epoch() -> str:
    return secrets.token_urlsafe(8)


def screenshot_id_for(sha256_hex: str) -> str:
    """Screenshots are content-addressed: the same image in one stream is stored once."""
    return "scr_" + sha256_hex[:32]
