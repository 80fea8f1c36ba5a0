"""The command tracker behind commandId matching."""

from __future__ import annotations

from executor_streamer.core.commands import CommandTracker


class TestCommandTracker:
    def test_copy_is_independent(self) -> None:
        """Changes to a copy do not reach the original until it replaces it."""
        tracker = CommandTracker()
        first = tracker.start("click", None)
        copy = tracker.copy()
        assert copy.finish("click", None) == first
        assert tracker.running() == {first: "click"} and copy.running() == {}

    def test_restarting_an_id_makes_it_newest(self) -> None:
        """Starting a running id again moves it to the newest position."""
        tracker = CommandTracker()
        tracker.start("click", "a")
        tracker.start("click", "b")
        tracker.start("click", "a")
        assert tracker.finish("click", None) == "a"
        assert tracker.finish("click", None) == "b"
