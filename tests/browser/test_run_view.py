"""The run view: output streams live (stdout and stderr told apart), follows the end
unless the reader scrolled up, Cancel stops a long run, retries link both ways."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.helpers import create_job, trigger, wait_for
from tests.browser.server import Dashboard

DISTANCE_TO_END = "el => el.scrollHeight - el.scrollTop - el.clientHeight"


def test_triggered_output_appears_live_with_stderr_marked(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    job = create_job(dashboard, "live-output", f"echo first; {wait_for(go)}; echo second; echo oops >&2")
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    page.get_by_role("button", name="Trigger").click()

    expect(page.get_by_role("heading", name=re.compile(r"^Run run_"))).to_be_visible()
    output = page.get_by_role("log", name="Output")
    expect(output).to_contain_text("first")  # while the run is still running:
    status = page.locator("#run-status")
    expect(status).to_have_text(re.compile("running"))
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    expect(output).not_to_contain_text("second")

    go.touch()
    expect(output).to_contain_text("second")
    expect(output.locator(".line", has_text="oops")).to_contain_text("err")
    expect(output.locator(".line", has_text="first")).to_contain_text("out")
    expect(status).to_have_text(re.compile("succeeded"))
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    details = page.get_by_role("region", name="Details")
    expect(details).to_contain_text(re.compile(r"Exit code\s*0"))
    expect(details).to_contain_text("natural_completion")
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.locator("li")).to_have_text(
        [re.compile(step) for step in ("queued", "claimed", "running", "succeeded")]
    )


def test_output_follows_the_end_unless_the_reader_scrolled_up(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    more, end = tmp_path / "more", tmp_path / "end"
    script = (
        f'for i in $(seq 1 300); do echo "a $i"; done; {wait_for(more)}; '
        f'for i in $(seq 1 300); do echo "b $i"; done; {wait_for(end)}'
    )
    run = trigger(dashboard, create_job(dashboard, "chatty", script))
    sign_in(page, dashboard, f"#/runs/{run['id']}")
    output = page.get_by_role("log", name="Output")
    expect(output).to_contain_text("a 300")
    assert output.evaluate(DISTANCE_TO_END) < 5  # followed the output to its end

    output.hover()
    page.mouse.wheel(0, -100_000)  # the reader scrolls up to read
    page.wait_for_function("() => document.querySelector('[role=log]').scrollTop === 0")
    more.touch()
    expect(output).to_contain_text("b 300")
    assert output.evaluate("el => el.scrollTop") == 0  # left where the reader is
    jump = page.get_by_role("button", name="Jump to the latest output")
    jump.click()
    page.wait_for_function(f"() => ({DISTANCE_TO_END})(document.querySelector('[role=log]')) < 5")
    expect(jump).to_be_hidden()
    end.touch()
    expect(page.locator("#run-status")).to_have_text(re.compile("succeeded"))


def test_cancel_stops_a_long_run(page: Page, dashboard: Dashboard) -> None:
    job = create_job(dashboard, "long-sleep", "echo started; sleep 60")
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    page.get_by_role("button", name="Trigger").click()
    expect(page.get_by_role("log", name="Output")).to_contain_text("started")

    page.get_by_role("button", name="Cancel").click()
    status = page.locator("#run-status")
    expect(status).to_have_text(re.compile("cancelled"))
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_role("region", name="Details")).to_contain_text(re.compile(r"Exit reason\s*cancelled"))
    with dashboard.api() as api:
        assert api.get(f"/v2/jobs/{job['id']}").json()["last_run"]["status"] == "cancelled"


def test_a_failed_run_links_to_its_retry_and_back(page: Page, dashboard: Dashboard) -> None:
    job = create_job(
        dashboard, "flaky", "echo trying; exit 3", retry_policy={"max_attempts": 2, "initial_delay": "100ms"}
    )
    first = trigger(dashboard, job)
    sign_in(page, dashboard, f"#/runs/{first['id']}")
    details = page.get_by_role("region", name="Details")
    expect(page.locator("#run-status")).to_have_text(re.compile("failed"))
    expect(details).to_contain_text(re.compile(r"Exit code\s*3"))
    retried_by = details.get_by_role("link", name=re.compile(r"^run_"))
    expect(retried_by).to_be_visible()
    retry_id = retried_by.inner_text()

    retried_by.click()
    expect(page.get_by_role("heading", name=f"Run {retry_id}")).to_be_visible()
    expect(details).to_contain_text(re.compile(r"Attempt\s*2"))
    expect(details.get_by_role("link", name=first["id"])).to_be_visible()
