"""One terminal line per event, for ``demo``, ``serve`` and (later) ``tail``."""

from __future__ import annotations

from rich.text import Text

from ..types.base import format_timestamp
from ..types.enums import StreamEventType
from ..types.events import (
    CommandCompletedData,
    CommandFailedData,
    CommandStartedData,
    ErrorContext,
    ReasoningData,
    ScreenshotInfo,
    StatusData,
    StreamEvent,
    VariableUpdateData,
)

STYLES = {
    StreamEventType.REASONING: "magenta",
    StreamEventType.COMMAND_STARTED: "cyan",
    StreamEventType.COMMAND_COMPLETED: "green",
    StreamEventType.COMMAND_FAILED: "bold red",
    StreamEventType.SCREENSHOT: "blue",
    StreamEventType.VARIABLE_UPDATE: "yellow",
    StreamEventType.STATUS: "white",
    StreamEventType.ERROR: "bold red",
}


def summarize(event: StreamEvent) -> str:
    """A short human description of the event's data."""
    data = event.data
    match data:
        case ReasoningData():
            return f"{data.thought}  ({data.reasoning_type}, confidence {data.confidence:.2f})"
        case CommandStartedData():
            return f"{data.action} {data.command_name} {data.parameters}  [{data.command_id}]"
        case CommandCompletedData():
            return f"{data.command_name} → {data.result!r} in {data.duration:.0f} ms"
        case CommandFailedData():
            return f"{data.command_name} ✗ {data.error.code}: {data.error.message}"
        case ScreenshotInfo():
            size = f"{data.width}x{data.height} " if data.width and data.height else ""
            return f"{data.caption or 'screenshot'} ({size}{data.size_bytes} B) {data.url}"
        case VariableUpdateData():
            before = f" (was {data.previous_value!r})" if data.previous_value is not None else ""
            return f"{data.name} = {data.value!r}{before}"
        case StatusData():
            return f"{data.status_type}: {data.status}" + (
                f" — {data.message}" if data.message else ""
            )
        case ErrorContext():
            return f"{data.code}: {data.message}" + (" (recoverable)" if data.recoverable else "")
    return ""


def event_line(event: StreamEvent) -> Text:
    line = Text()
    line.append(f"{event.seq:>6} ", style="dim")
    line.append(format_timestamp(event.timestamp)[11:23] + " ", style="dim")
    line.append(f"{event.type:<17} ", style=STYLES[event.type])
    line.append(summarize(event))
    return line
