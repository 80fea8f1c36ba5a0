"""Matching command completions to the commands they finish (docs/protocol.md)."""

from __future__ import annotations

from ..types.ids import new_command_id


class CommandTracker:
    """The still-running commands of one stream, oldest first.

    A completion or failure that names its ``commandId`` finishes that command. One
    that does not is matched to the most recent running command of the same name; with
    none running it gets a fresh id. The publisher works on a ``copy()`` and keeps it
    only once the events are stored, so a rejected batch changes nothing.
    """

    __slots__ = ("_running",)

    def __init__(self, running: dict[str, str] | None = None) -> None:
        self._running: dict[str, str] = running or {}  # command id -> command name

    def copy(self) -> CommandTracker:
        return CommandTracker(dict(self._running))

    def start(self, command_name: str, command_id: str | None) -> str:
        command_id = command_id or new_command_id()
        self._running.pop(command_id, None)  # a restarted id moves to the newest position
        self._running[command_id] = command_name
        return command_id

    def finish(self, command_name: str, command_id: str | None) -> str:
        if command_id is not None:
            self._running.pop(command_id, None)
            return command_id
        for running_id in reversed(self._running):
            if self._running[running_id] == command_name:
                del self._running[running_id]
                return running_id
        return new_command_id()

    def running(self) -> dict[str, str]:
        """Command id → name of every command started and not yet finished."""
        return dict(self._running)
