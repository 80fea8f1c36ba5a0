"""History backends: one protocol (``base.HistoryStore``), one module per backend.

``sql.SqlHistory`` needs the ``sqlite`` or ``postgres`` extra and is imported from its module.
"""

from .base import HistoryPage, HistoryStore, ResumeRead, StoredScreenshot, StreamState, StreamWrite
from .memory import MemoryHistory

__all__ = [
    "HistoryPage",
    "HistoryStore",
    "MemoryHistory",
    "ResumeRead",
    "StoredScreenshot",
    "StreamState",
    "StreamWrite",
]
