"""Screenshot bytes as content-addressed files: ``<root>/<ab>/<sha256>``.

The ``file`` backend keeps images here rather than inside SQLite, so the database stays
small and an image published into several streams is stored once. A file is written
(to a temporary name, then renamed) before the transaction that refers to it commits,
and removed only after no row refers to it any more; the caller serializes the two with
:attr:`BlobDirectory.lock`. A crash between the steps leaves at worst an unreferenced
file, which :meth:`BlobDirectory.sweep` removes at the next start.

Like SQLite in WAL mode with ``synchronous=NORMAL``, files are not fsynced: they survive
a crash of the process, not of the operating system.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = asyncio.Lock()
        """Held across "write files, commit rows" and "find unreferenced, delete files"."""

    def path(self, sha256: str) -> Path:
        if not _DIGEST.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def write_file(self, sha256: str, data: bytes) -> None:
        """Store ``data`` under its digest, unless a file is already there. Blocking:
        called in the SQLite writer thread, inside the transaction's step."""
        target = self.path(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def read(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(_read, self.path(sha256))

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    async def remove(self, digests: Iterable[str]) -> None:
        paths = [self.path(d) for d in digests]
        await asyncio.to_thread(_unlink_all, paths)

    async def sweep(self, referenced: set[str]) -> int:
        """Delete every file whose digest ``referenced`` lacks, and leftover temporary
        files; returns how many files went."""
        return await asyncio.to_thread(self._sweep, referenced)

    def _sweep(self, referenced: set[str]) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for file in self.root.glob("*/*"):
            if file.name.startswith(".tmp-") or file.name not in referenced:
                file.unlink(missing_ok=True)
                removed += 1
        return removed


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
