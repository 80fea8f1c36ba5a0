"""A simulated agent run that publishes every event type, for newcomers and tests.

The agent logs in to a shop and exports an invoice: it reasons, navigates, types,
clicks (one click fails and is retried), takes real PNG screenshots, saves variables
and reports status, so a viewer shows everything the hub carries.
"""

from __future__ import annotations

import asyncio
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .core.publish_api import PublishApi
from .types.enums import CommandAction
from .types.events import CommandStartedData


def render_png(width: int, height: int, progress: float, hue: int) -> bytes:
    """A real PNG: a page mock-up with a header bar and a progress bar."""
    rows = []
    bar = int(width * max(0.0, min(progress, 1.0)))
    base = (hue * 37 % 200 + 40, hue * 91 % 200 + 40, hue * 53 % 200 + 40)
    for y in range(height):
        if y < height // 6:
            row = bytes(base) * width
        elif height - 12 <= y < height - 6:
            row = b"\x30\xa0\x50" * bar + b"\xdd\xdd\xdd" * (width - bar)
        else:
            row = (b"\xff\xff\xff" if (y // 8) % 2 else b"\xf4\xf4\xf4") * width
        rows.append(b"\x00" + row)  # filter type 0 for each scanline

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


@dataclass
class SimulatedAgent:
    """Publishes one run into ``session_id``; ``pace`` is the mean pause in seconds.

    ``publisher`` is the in-process ``hub.publisher`` or a ``HubClient`` over HTTP.
    """

    publisher: PublishApi
    session_id: str
    pace: float = 0.3
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._progress = 0.0

    async def run(self) -> None:
        p, sid = self.publisher, self.session_id
        await p.publish_status(sid, "workflow", "STARTED", "Export the latest invoice")
        await self._think("Plan: open the shop, sign in, open invoices, export the newest.", 0.9)
        await self._command(
            CommandAction.NAVIGATE,
            "open_shop",
            {"url": "https://shop.example/login"},
            result={"title": "Sign in", "status": 200},
        )
        await self._screenshot("Login page", "https://shop.example/login")
        await self._think("The login form has #email and #password fields.", 0.82)
        await self._command(
            CommandAction.TYPE, "enter_email", {"selector": "#email", "text": "ada@example.com"}
        )
        await p.publish_variable_update(sid, "email", "ada@example.com")
        await self._command(
            CommandAction.TYPE, "enter_password", {"selector": "#password", "text": "••••••"}
        )
        await self._command(
            CommandAction.CLICK,
            "submit_login",
            {"selector": "button[type=submit]"},
            error={
                "code": "ELEMENT_NOT_INTERACTABLE",
                "message": "button is covered by a cookie banner",
                "recoverable": True,
                "commandName": "submit_login",
            },
        )
        await self._think(
            "A cookie banner covers the button; dismiss it and retry.", 0.74, "reflection"
        )
        await self._command(CommandAction.CLICK, "dismiss_cookies", {"selector": "#accept-cookies"})
        await self._command(
            CommandAction.CLICK,
            "submit_login",
            {"selector": "button[type=submit]"},
            result={"navigated": True},
        )
        await self._screenshot("Signed in: dashboard", "https://shop.example/account")
        await p.publish_status(sid, "auth", "SIGNED_IN")
        await self._command(
            CommandAction.NAVIGATE,
            "open_invoices",
            {"url": "https://shop.example/invoices"},
            result={"rows": 12},
        )
        await self._command(
            CommandAction.EXTRACT,
            "read_total",
            {"selector": "tr:first-child .total"},
            result={"text": "€ 184.20"},
        )
        await p.publish_variable_update(sid, "invoice_total", "184.20", previous_value="0")
        await self._command(
            CommandAction.DOWNLOAD,
            "export_pdf",
            {"selector": "a.export"},
            error={"code": "DOWNLOAD_TIMEOUT", "message": "no file after 30 s"},
        )
        await p.publish_error(
            sid,
            {
                "code": "EXPORT_FAILED",
                "message": "The invoice PDF could not be downloaded",
                "recoverable": False,
                "details": {"attempts": 1},
            },
        )
        await self._screenshot("Invoices page after failed export", "https://shop.example/invoices")
        await p.publish_status(sid, "workflow", "FAILED", "Export failed; total was read")

    async def _think(self, thought: str, confidence: float, kind: str = "planning") -> None:
        await self.publisher.publish_reasoning(self.session_id, thought, confidence, kind)
        await self._pause()

    async def _command(
        self,
        action: CommandAction,
        name: str,
        parameters: dict[str, Any],
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        started = await self.publisher.publish_command_started(
            self.session_id, name, action, parameters
        )
        duration = round(self._rng.uniform(40, 900), 1)
        await self._pause()
        assert isinstance(started.data, CommandStartedData)
        command_id = started.data.command_id
        if error is None:
            await self.publisher.publish_command_completed(
                self.session_id, name, result, duration, command_id=command_id
            )
        else:
            await self.publisher.publish_command_failed(
                self.session_id, name, error, duration, command_id=command_id
            )
        self._progress += 0.08

    async def _screenshot(self, caption: str, page_url: str) -> None:
        image = render_png(320, 200, self._progress, self._rng.randrange(256))
        await self.publisher.publish_screenshot(
            self.session_id,
            image,
            "image/png",
            width=320,
            height=200,
            caption=caption,
            page_url=page_url,
        )
        await self._pause()

    async def _pause(self) -> None:
        if self.pace > 0:
            await asyncio.sleep(self._rng.uniform(0.5, 1.5) * self.pace)
