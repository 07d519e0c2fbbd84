"""Browser tests: Debian's Chromium driven by Playwright's sync API against a real server.

Chromium is the system's (``apt-get install chromium-headless-shell``), passed to
Playwright as ``executable_path``; Playwright's own browser download is never used.
Without it the tests skip and say why, unless ``TERMJOBS_REQUIRE_BROWSER=1`` (set by
``.ci/run``), which makes that a failure.

Each module shares one server; each test gets a fresh browser context (its own
sessionStorage, so it starts signed out). Every page fails its test on a script error
or a Content-Security-Policy violation. When a test fails, a screenshot of every page it
had open and the page's console go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.server import Dashboard, run_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

#: Where Debian's packages put Chromium; ``TERMJOBS_CHROMIUM`` overrides.
CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-headless-shell",
    "/usr/bin/chromium",
)
INSTALL_HINT = "no Chromium: apt-get install chromium-headless-shell"
#: Playwright waits (clicks, expectations) give up after this long.
TIMEOUT_MS = 10_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
#: Console messages that are expected answers, not faults: the API's 4xx (a wrong
#: token, a refused cron expression) are logged by the browser as failed loads.
EXPECTED_CONSOLE = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def chromium_path() -> str | None:
    """The Chromium binary to drive, or ``None`` when there is none."""
    configured = os.environ.get("TERMJOBS_CHROMIUM")
    candidates = (configured,) if configured else CHROMIUM_CANDIDATES
    return next((path for path in candidates if Path(path).is_file()), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("TERMJOBS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TERMJOBS_REQUIRE_BROWSER=1: browser tests must run here)")
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        _unavailable(INSTALL_HINT)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("no Playwright: pip install -e '.[dev]'")
    assert executable is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Dashboard]:
    """The module's server (bearer token); the browser comes first, so a machine without
    Chromium skips before starting a server."""
    with run_server(tmp_path_factory.mktemp("server")) as server:
        yield server


@dataclass
class Console:
    """What the pages of a test said on their console, and the errors they raised."""

    lines: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


@pytest.fixture
def context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    created = browser.new_context(viewport={"width": 1200, "height": 800}, locale="en-GB", timezone_id="UTC")
    created.set_default_timeout(TIMEOUT_MS)
    console = Console()

    def watch(page: Page) -> None:
        def on_console(message: object) -> None:
            kind, text = getattr(message, "type", ""), getattr(message, "text", "")
            console.lines.append(f"{kind}: {text}")
            if kind == "error" and not EXPECTED_CONSOLE.match(text):
                console.faults.append(text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: console.faults.append(f"uncaught: {error}"))

    created.on("page", watch)
    yield created
    reports = request.node.stash.get(_REPORTS, {})
    if "call" in reports and reports["call"].failed:
        _save_artifacts(request.node.name, created, console)
    created.close()
    assert not console.faults, f"the page reported errors: {console.faults}"


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def _save_artifacts(name: str, context: BrowserContext, console: Console) -> None:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index, open_page in enumerate(context.pages):
        try:
            open_page.screenshot(path=folder / f"page{index}.png", full_page=True, timeout=5_000)
            (folder / f"page{index}.url.txt").write_text(open_page.url + "\n")
        except Exception as exc:  # the page may be what broke
            (folder / f"page{index}.error.txt").write_text(f"{exc}\n")
    (folder / "console.txt").write_text("\n".join(console.lines) + "\n")


def sign_in(page: Page, dashboard: Dashboard, path: str = "") -> None:
    """Open the dashboard (at ``path``, e.g. ``#/jobs/ID``) and sign in with the token."""
    from playwright.sync_api import expect

    page.goto(dashboard.ui + path)
    assert dashboard.token is not None
    page.get_by_label("Token").fill(dashboard.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
