"""Logging with structlog, shaped by the seed's ``logging`` config section.

Each option is one small processor, so the chain reads as the config does:
timestamp, module id, session id, prefix, then JSON (``structured``) or console lines.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

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
