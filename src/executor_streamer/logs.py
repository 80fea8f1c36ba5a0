"""Logging with structlog, shaped by the original specification's ``logging`` config section.

Each option is one small processor, so the chain reads as the config does:
timestamp, module id, session id, prefix, then JSON (``structured``) or console lines.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO
from urllib.parse import unquote_plus

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .config import LoggingConfig
from .types.streams import MODULE_ID

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
}


# A Bearer credential, a WebSocket auth message's token.
_SECRETS = re.compile(r"(?P<key>(?:bearer\s+)|(?:\"token\"\s*:\s*\"))[^&\s\"']+", re.IGNORECASE)
# Any query parameter: its name is compared once percent-decoded, as the server reads it
# (``?%74icket=`` is a ticket too).
_QUERY_PARAMETER = re.compile(r"(?P<key>[?&](?P<name>[^=&\s\"'#]+)=)[^&\s\"'#]*")
_SECRET_PARAMETERS = frozenset({"ticket", "token", "access_token"})


def _redact_parameter(match: re.Match[str]) -> str:
    if unquote_plus(match.group("name")).strip().lower() in _SECRET_PARAMETERS:
        return match.group("key") + "[redacted]"
    return match.group(0)


def redact(text: str) -> str:
    """``text`` with tickets, tokens and Bearer credentials replaced by ``[redacted]``."""
    text = _QUERY_PARAMETER.sub(_redact_parameter, text)
    return _SECRETS.sub(lambda m: m.group("key") + "[redacted]", text)


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The structlog processor of :func:`redact`, over every string value."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


class RedactSecrets(logging.Filter):
    """:func:`redact` for standard-library records (uvicorn's access and error logs put
    the request path, query string included, in their arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


SERVER_LOGGERS = (
    "uvicorn.access",
    "uvicorn.error",
    "websockets.server",
    "executor_streamer.ws_protocol",  # websockets' connection logs request headers at DEBUG
)


def redact_library_logs() -> None:
    """Put :class:`RedactSecrets` on the standard-library loggers that see requests (a
    logger's filters apply to its own records only, so each is named)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def add_module_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("module_id", MODULE_ID)
    return event_dict


def drop_session_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("session_id", None)
    return event_dict


def prefixer(prefix: str, structured: bool) -> Processor:
    """Console lines start with the prefix; JSON lines carry it as a ``prefix`` field."""

    def add_prefix(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if structured:
            event_dict["prefix"] = prefix
        else:
            event_dict["event"] = f"{prefix} {event_dict.get('event', '')}"
        return event_dict

    return add_prefix


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(config: LoggingConfig, output: TextIO | None = None) -> None:
    """Configure structlog globally from ``config``; logs go to ``output`` (stderr)."""
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        redact_secrets,
    ]
    if config.include_timestamp:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if config.include_module_id:
        processors.append(add_module_id)
    if not config.include_session_id:
        processors.append(drop_session_id)
    if config.prefix:
        processors.append(prefixer(config.prefix, config.structured))
    if config.structured:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=structlog.PrintLoggerFactory(file=output or sys.stderr),
        cache_logger_on_first_use=False,
    )
