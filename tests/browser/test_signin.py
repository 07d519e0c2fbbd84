"""Signing in: the token is asked once, kept in the tab's sessionStorage only, a wrong
one is refused with a clear message, signing out forgets it; with --auth none there is
no prompt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import sign_in
from tests.browser.server import Dashboard, run_server


def test_a_wrong_token_is_refused_then_the_right_one_signs_in_and_sign_out_forgets_it(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(dashboard.url + "/")  # the root redirects to the dashboard
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    token = page.get_by_label("Token")
    token.fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("The server refused this token")
    expect(token).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("sessionStorage.length") == 0

    # Keyboard only: the field has the focus after the refusal; Enter submits.
    assert dashboard.token is not None
    token.press("Control+a")
    page.keyboard.type(dashboard.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert page.evaluate("Object.values(sessionStorage)") == [dashboard.token]
    assert dashboard.token not in page.url
    assert page.context.cookies() == []

    page.reload()  # the same tab keeps the session
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Signed out.")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_new_tab_asks_again_and_a_deep_link_opens_after_sign_in(page: Page, dashboard: Dashboard) -> None:
    with dashboard.api() as api:
        job = api.post(
            "/v2/jobs",
            json={
                "name": "deep-link",
                "runner_type": "program",
                "runner_config": {"command": "true"},
                "trigger_type": "manual",
            },
        ).json()
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    expect(page.get_by_role("heading", name="deep-link")).to_be_visible()

    other = page.context.browser
    assert other is not None
    fresh = other.new_context()  # sessionStorage belongs to one tab
    try:
        second = fresh.new_page()
        second.goto(dashboard.ui)
        expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        fresh.close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Dashboard]:
    with run_server(tmp_path_factory.mktemp("open"), "--auth", "none", token=None) as server:
        yield server


def test_without_authentication_there_is_no_prompt(page: Page, open_server: Dashboard) -> None:
    page.goto(open_server.ui)
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)
