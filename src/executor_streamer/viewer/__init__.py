"""The live viewer (docs/viewer.md): the hub's own page for watching runs, at ``/`` (the
run list), ``/view/{id}`` (one run) and ``/dashboard`` (run analytics, docs/query.md).

Static files only, written as plain ES modules: nothing is built at install or run time.
The page stands on the JavaScript SDK (``clients/js``), served at ``/viewer/client.js``
from the same file the npm package publishes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from starlette.responses import FileResponse, Response

STATIC = Path(__file__).parent / "static"
# In a wheel the SDK is copied beside the page (pyproject: force-include); in a checkout
# it is read where it lives.
_SDK_COPY = STATIC / "client.js"
_SDK_SOURCE = Path(__file__).parents[3] / "clients" / "js" / "src" / "index.js"
_FILES = {
    "app.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "cache-control": "no-cache",
    # Only the hub's own files run, talk and draw here (screenshots fetched with a token
    # become blob: URLs), and no other site may frame the page.
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def sdk_path() -> Path:
    return _SDK_COPY if _SDK_COPY.exists() else _SDK_SOURCE


def _page() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/")
async def run_list() -> Response:
    return _page()


@router.get("/view/{ref}")
async def run_view(ref: str) -> Response:
    return _page()


@router.get("/dashboard")
async def run_dashboard() -> Response:
    return _page()


@router.get("/favicon.ico")
async def favicon() -> Response:
    """For clients that ask by convention rather than by the page's ``<link rel=icon>``."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers=_HEADERS)


@router.get("/viewer/{name}")
async def asset(name: str) -> Response:
    if name == "client.js":
        return FileResponse(sdk_path(), media_type="text/javascript", headers=_HEADERS)
    media_type = _FILES.get(name)
    if media_type is None:
        raise HTTPException(404)
    return FileResponse(STATIC / name, media_type=media_type, headers=_HEADERS)
