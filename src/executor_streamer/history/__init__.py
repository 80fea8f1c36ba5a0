"""History backends: one protocol (``base.HistoryStore``), one module per backend."""

from .base import HistoryPage, HistoryStore, ResumeRead, StoredScreenshot
from .memory import MemoryHistory

__all__ = ["HistoryPage", "HistoryStore", "MemoryHistory", "ResumeRead", "StoredScreenshot"]
