"""The dashboard: the static files of ``termjobs/ui/static`` under ``/ui/``, and ``/``
redirecting there.

The files are read from the package once, when the app is built, into a table keyed by
their path below ``static/``. A request is answered from that table only, so no part of
a request path ever reaches the file system: ``/ui/../pyproject.toml`` or an encoded
``%2e%2e`` is simply a name the table does not hold (404).

The page needs no token to load (it holds no data); it asks for the token and sends it
on every ``/v2`` request it makes. Every response carries a strict Content-Security-Policy:
scripts, styles and connections from this server only, no inline script or style, no
framing. Files are revalidated on every load (``no-cache`` with an ``ETag``), so an
upgraded server never leaves a browser on stale scripts, and an unchanged file costs a
304.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

from quart import Quart, Response, request

from termjobs.http.responses import error_response

#: The package whose ``static/`` folder holds the dashboard.
PACKAGE: Final = "termjobs.ui"
INDEX: Final = "index.html"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # 'self' covers ws:// and wss:// to this server (the live streams).
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the dashboard, ready to send."""

    body: bytes
    content_type: str
    etag: str


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every servable file below ``root`` (the package's ``static/``), by its path
    relative to it (``js/main.js``). Hidden files and unknown kinds are left out."""
    base = root if root is not None else files(PACKAGE) / "static"
    assets: dict[str, Asset] = {}
    for name, item in _walk(base, ""):
        content_type = CONTENT_TYPES.get(_suffix(name))
        if content_type is None:
            continue
        body = item.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body=body, content_type=content_type, etag=etag)
    return assets


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for item in folder.iterdir():
        if item.name.startswith((".", "_")):
            continue
        name = prefix + item.name
        if item.is_dir():
            yield from _walk(item, name + "/")
        elif item.is_file():
            yield name, item


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > name.rfind("/") else ""


def register(app: Quart, assets: dict[str, Asset] | None = None) -> None:
    """Add ``/``, ``/ui`` and ``/ui/<path>``."""
    table = assets if assets is not None else load_assets()

    @app.route("/", methods=["GET"])
    async def root() -> Response:
        return _redirect("/ui/")

    @app.route("/ui", methods=["GET"], strict_slashes=True)
    async def ui_bare() -> Response:
        return _redirect("/ui/")

    @app.route("/ui/", methods=["GET"], strict_slashes=True)
    async def ui_index() -> Response:
        return _send(table, INDEX)

    @app.route("/ui/<path:name>", methods=["GET"])
    async def ui_file(name: str) -> Response:
        return _send(table, name)


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location, "Cache-Control": "no-cache"})


def _send(table: dict[str, Asset], name: str) -> Response:
    asset = table.get(name)
    if asset is None:
        return error_response(f"no such file in the dashboard: {name}", 404, "invalid_request_error")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in _etags(request.headers.get("If-None-Match", "")):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, headers=headers, content_type=asset.content_type)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}
