"""The dashboard's files: served from the package with the right types, a strict
Content-Security-Policy and revalidation; nothing outside them is reachable."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from termjobs.http.ui import load_assets
from tests.http.conftest import Api


async def fetch(
    api: Api, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    response = await api.client.get(path, headers=headers or {})
    body = await response.get_data(as_text=False)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}, body


async def test_the_root_and_bare_ui_redirect_to_the_dashboard(api: Api) -> None:
    for path in ("/", "/ui"):
        status, headers, _ = await fetch(api, path)
        assert (status, headers["location"]) == (302, "/ui/")


async def test_the_page_needs_no_token_and_forbids_inline_and_foreign_code(api: Api) -> None:
    status, headers, body = await fetch(api, "/ui/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache" and headers["etag"]
    html = body.decode()
    assert '<script type="module" src="js/main.js"></script>' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline script"
    assert "http://" not in html and "https://" not in html, "everything comes from this server"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/js/main.js", "text/javascript; charset=utf-8"),
        ("/ui/js/views/run.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/vendor/js-yaml/js-yaml.mjs", "text/javascript; charset=utf-8"),
        ("/ui/vendor/js-yaml/LICENSE.txt", "text/plain; charset=utf-8"),
    ],
)
async def test_files_are_served_with_their_types(api: Api, path: str, content_type: str) -> None:
    status, headers, body = await fetch(api, path)
    assert (status, headers["content-type"]) == (200, content_type)
    assert body and headers["content-security-policy"].startswith("default-src 'none'")


async def test_an_unchanged_file_is_revalidated_with_a_304(api: Api) -> None:
    _, first, body = await fetch(api, "/ui/js/main.js")
    status, headers, again = await fetch(api, "/ui/js/main.js", {"If-None-Match": first["etag"]})
    assert (status, again, headers["etag"]) == (304, b"", first["etag"])
    status, _, changed = await fetch(api, "/ui/js/main.js", {"If-None-Match": '"stale"'})
    assert (status, changed) == (200, body)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/termjobs/__init__.py",
        "/ui/..%2f..%2fetc/passwd",
        "/ui/js/../../http/ui.py",
        "/ui/__init__.py",
        "/ui/static/index.html",
        "/ui/nope.js",
        "/ui/js/",
    ],
)
async def test_nothing_outside_the_dashboard_files_is_reachable(api: Api, path: str) -> None:
    status, headers, body = await fetch(api, path)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert b"root:" not in body and b"import" not in body


def test_every_shipped_file_has_a_known_type_and_the_vendored_library_its_licence() -> None:
    assets = load_assets()
    assert {"index.html", "app.css", "js/main.js", "vendor/js-yaml/LICENSE.txt"} <= set(assets)
    assert b"MIT License" in assets["vendor/js-yaml/LICENSE.txt"].body
    assert not [name for name in assets if name.endswith(".py")]


def test_every_dashboard_file_is_packaged() -> None:
    """The package-data patterns of pyproject.toml (expanded from the package directory,
    as setuptools does) cover every file the dashboard serves, so an installed (not
    editable) server has them all."""
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = root / "termjobs" / "ui"
    packaged = {
        path for pattern in patterns["termjobs.ui"] for path in package.glob(pattern) if path.is_file()
    }
    shipped = {path for path in (package / "static").rglob("*") if path.is_file()}
    assert shipped and shipped <= packaged, sorted(str(p.relative_to(package)) for p in shipped - packaged)
